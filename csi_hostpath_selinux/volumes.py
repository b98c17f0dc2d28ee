"""Controller-side domain logic: create, delete, look up and list volumes.

No gRPC here: the controller service converts requests into these calls and DriverErrors into
status codes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import sizing, statedir
from .backends import DEFAULT_KIND, Backend
from .config import DriverConfig
from .errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)
from .locks import OperationLocks
from .models import AccessType, Capability, Volume, is_snapshot_id, is_volume_id, new_volume_id
from .state import Catalog

log = logging.getLogger(__name__)

MIB = 1024 * 1024
KIND_PARAMETER = "kind"
FSTYPE_PARAMETER = "csi.storage.k8s.io/fstype"
#: Parameters external-provisioner reserves; they are not the backend's business.
RESERVED_PREFIX = "csi.storage.k8s.io/"
EPHEMERAL_CONTEXT_KEY = "csi.storage.k8s.io/ephemeral"
#: The longest name Kubernetes sends (a PV, VolumeSnapshotContent or group name: a DNS
#: subdomain); longer names are refused before they are stored or logged.
MAX_NAME = 253
#: StorageClass parameter that allows restoring or cloning across volume modes (block <->
#: filesystem), like Kubernetes' snapshot.storage.kubernetes.io/allow-volume-mode-change.
ALLOW_MODE_CHANGE = "allowVolumeModeChange"


@dataclass(frozen=True)
class CapacityRange:
    required_bytes: int = 0
    limit_bytes: int = 0


@dataclass(frozen=True)
class ContentSource:
    kind: str  # "snapshot" or "volume"
    id: str

    def encode(self) -> str:
        return f"{self.kind}:{self.id}"


def decode_source(text: str) -> ContentSource | None:
    if not text:
        return None
    kind, _, ident = text.partition(":")
    return ContentSource(kind, ident)


class VolumeManager:
    """Creates and deletes volumes; the catalog is the source of truth for what exists."""

    def __init__(
        self,
        config: DriverConfig,
        catalog: Catalog,
        backends: Mapping[str, Backend],
        locks: OperationLocks,
        mounted_records: Callable[[Volume], None] | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.backends = backends
        self.locks = locks
        #: Drops the volume's staging and publication records whose mounts are gone (the node
        #: layer's check), so a record kept on a full disk does not block DeleteVolume forever.
        self.mounted_records = mounted_records
        self._admission_lock = threading.Lock()
        self._admitting = 0
        self._admitting_bytes = 0

    # lookups

    def backend(self, kind: str) -> Backend:
        backend = self.backends.get(kind)
        if backend is None:
            raise InvalidArgument(
                f"unknown volume kind {kind!r}; this driver serves: {', '.join(sorted(self.backends))}"
            )
        return backend

    def get(self, volume_id: str) -> Volume:
        return find_volume(self.catalog, volume_id, self.config.node_id)

    def list(self, starting_token: str, max_entries: int) -> tuple[list[Volume], str]:
        if max_entries < 0:
            raise InvalidArgument(f"max_entries must not be negative, got {max_entries}")
        after = parse_token(starting_token)
        vols, next_seq = self.catalog.volumes_page(after, max_entries)
        return vols, "" if next_seq is None else str(next_seq)

    # create

    def create(
        self,
        name: str,
        capacity: CapacityRange,
        capabilities: Sequence[Capability],
        parameters: Mapping[str, str],
        secrets: Mapping[str, str],
        source: ContentSource | None,
        requisite_topology: Sequence[Mapping[str, str]] = (),
        ephemeral: bool = False,
    ) -> Volume:
        check_name(name)
        if not capabilities:
            raise InvalidArgument("volume_capabilities is required")
        access_type = single_access_type(capabilities)
        for cap in capabilities:
            if not cap.access_mode.single_node:
                raise InvalidArgument(
                    f"access mode {cap.access_mode.name} is not supported: volumes of this driver "
                    "live on one node (use ReadWriteOnce or ReadWriteOncePod)"
                )
        self.check_topology(requisite_topology)
        kind = parameters.get(KIND_PARAMETER, DEFAULT_KIND) or DEFAULT_KIND
        backend = self.backend(kind)
        own = {
            k: v
            for k, v in parameters.items()
            if k != KIND_PARAMETER and not k.startswith(RESERVED_PREFIX)
        }
        stored = backend.check_parameters(own)
        fs_type = backend.check_fs_type(
            requested_fs_type(capabilities, parameters.get(FSTYPE_PARAMETER, "")), access_type
        )
        size = self.choose_size(capacity, backend.minimum_bytes(fs_type))
        with self.locks.hold(f"name:{name}"):
            existing = self.catalog.volume_by_name(name)
            if existing is not None:
                self.check_compatible(
                    existing, kind, stored, access_type, fs_type, capacity, source
                )
                return existing
            with self.admission(size, backend):
                return self.create_new(
                    name,
                    kind,
                    backend,
                    stored,
                    access_type,
                    fs_type,
                    size,
                    source,
                    secrets,
                    ephemeral,
                )

    @contextmanager
    def admission(self, size: int, backend: Backend) -> Iterator[None]:
        """Hold one of --max-volumes-per-node's places and size bytes of --capacity from the
        checks to the catalog insert, so concurrent creates cannot overshoot either limit."""
        with self._admission_lock:
            if self.catalog.volume_count() + self._admitting >= self.config.max_volumes_per_node:
                raise ResourceExhausted(
                    f"node {self.config.node_id} already has {self.config.max_volumes_per_node} "
                    "volumes, the most this driver is configured for (--max-volumes-per-node)"
                )
            cap = self.config.max_capacity_bytes
            if cap:
                used = self.catalog.provisioned_bytes() + self._admitting_bytes
                if used + size > cap:
                    raise ResourceExhausted(
                        f"node {self.config.node_id} has {max(0, cap - used)} of its {cap} bytes "
                        f"of capacity (--capacity) left; this volume needs {size} bytes"
                    )
            if backend.stored_in_state_dir:
                self.check_free_space(size)
            self._admitting += 1
            self._admitting_bytes += size
        try:
            yield
        finally:
            with self._admission_lock:
                self._admitting -= 1
                self._admitting_bytes -= size

    def check_free_space(self, size: int) -> None:
        """Refuse a volume bigger than the state directory's free space (less the catalog's
        headroom): it could never be filled. With --preallocate the allocation itself then
        guarantees the rest; without it, sparse volumes together may still exceed the disk."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.statvfs(self.config.state_dir)
        free = st.f_bavail * st.f_frsize - statedir.LOW_SPACE_BYTES
        if size > free:
            raise ResourceExhausted(
                f"node {self.config.node_id} has {max(0, free)} bytes free in its state "
                f"directory {self.config.state_dir}; this volume needs {size} bytes"
            )

    def create_new(
        self,
        name: str,
        kind: str,
        backend: Backend,
        stored: Mapping[str, str],
        access_type: AccessType,
        fs_type: str,
        size: int,
        source: ContentSource | None,
        secrets: Mapping[str, str],
        ephemeral: bool,
    ) -> Volume:
        """Make the storage, then record it (the caller holds the name lock and a place)."""
        source_path = self.resolve_source(
            source, kind, size, access_type, stored.get(ALLOW_MODE_CHANGE) == "true"
        )
        vol = Volume(
            id=new_volume_id(),
            name=name,
            kind=kind,
            capacity_bytes=size,
            access_type=access_type,
            fs_type=fs_type,
            parameters={KIND_PARAMETER: kind, **stored},
            content_source=source.encode() if source else "",
            ephemeral=ephemeral,
            created_at=time.time(),
        )
        # Intent, storage, catalog: a crash in between leaves storage that start-up
        # reconciliation removes (its intent proves it garbage), never a catalog entry without
        # storage.
        with statedir.intent(self.catalog, self.config.state_dir, vol.id):
            backend.create(vol, secrets, source_path)
            try:
                self.catalog.add_volume(vol)
            except BaseException:
                backend.delete(vol, secrets)
                raise
        log.info(
            "created volume %s (%s, %s, %d bytes) for %r",
            vol.id,
            kind,
            fs_type or access_type.value,
            size,
            name,
        )
        return vol

    def check_topology(self, requisite: Sequence[Mapping[str, str]]) -> None:
        if not requisite:
            return
        key, node = self.config.topology_key, self.config.node_id
        for segment in requisite:
            if segment_is_this_node(segment, self.config):
                return
        raise ResourceExhausted(
            f"the volume must be accessible from topology {list(requisite)}, but this driver only "
            f"provisions on node {node} ({key}={node})"
        )

    def choose_size(self, capacity: CapacityRange, minimum: int) -> int:
        return sizing.choose_size(
            capacity.required_bytes,
            capacity.limit_bytes,
            self.config.default_volume_bytes,
            minimum,
            self.config.max_volume_bytes,
        )

    def check_compatible(
        self,
        vol: Volume,
        kind: str,
        stored: Mapping[str, str],
        access_type: AccessType,
        fs_type: str,
        capacity: CapacityRange,
        source: ContentSource | None,
    ) -> None:
        def differs(what: str, have: object, want: object) -> AlreadyExists:
            return AlreadyExists(
                f"a volume named {vol.name!r} already exists with {what} {have!r}; "
                f"this request asks for {want!r}"
            )

        if vol.kind != kind:
            raise differs("kind", vol.kind, kind)
        have_params = {k: v for k, v in vol.parameters.items() if k != KIND_PARAMETER}
        if have_params != dict(stored):
            raise differs("parameters", have_params, dict(stored))
        if vol.access_type is not access_type:
            raise differs("access type", vol.access_type.value, access_type.value)
        if vol.fs_type != fs_type:
            raise differs("fsType", vol.fs_type, fs_type)
        if vol.capacity_bytes < capacity.required_bytes or (
            capacity.limit_bytes and vol.capacity_bytes > capacity.limit_bytes
        ):
            raise differs(
                "capacity",
                vol.capacity_bytes,
                f"{capacity.required_bytes}..{capacity.limit_bytes or 'unlimited'}",
            )
        want_source = source.encode() if source else ""
        if vol.content_source != want_source:
            raise differs("content source", vol.content_source, want_source)

    def resolve_source(
        self,
        source: ContentSource | None,
        kind: str,
        size: int,
        access_type: AccessType = AccessType.MOUNT,
        allow_mode_change: bool = False,
    ) -> Path | None:
        """The file to copy a new volume from, after the spec's checks."""
        if source is None:
            return None
        self.check_mode(source, access_type, allow_mode_change)
        if source.kind == "snapshot":
            snap = self.catalog.snapshot(source.id) if is_snapshot_id(source.id) else None
            if snap is None:
                raise NotFound(f"snapshot {source.id!r} does not exist")
            origin = self.catalog.volume(snap.source_volume_id)
            origin_kind = origin.kind if origin else snap_kind(snap.id, self.backends)
            if origin_kind != kind:
                raise InvalidArgument(
                    f"snapshot {snap.id} is of a {origin_kind!r} volume; it cannot restore into "
                    f"a volume of kind {kind!r}"
                )
            if size < snap.size_bytes:
                raise OutOfRange(
                    f"the volume ({size} bytes) is smaller than snapshot {snap.id} "
                    f"({snap.size_bytes} bytes)"
                )
            return snapshot_file(self.backends[kind], snap.id)
        vol = self.catalog.volume(source.id) if is_volume_id(source.id) else None
        if vol is None:
            raise NotFound(f"source volume {source.id!r} does not exist")
        if vol.kind != kind:
            raise InvalidArgument(
                f"volume {vol.id} is of kind {vol.kind!r}; it cannot be cloned into kind {kind!r}"
            )
        if size < vol.capacity_bytes:
            raise OutOfRange(
                f"the clone ({size} bytes) is smaller than its source volume {vol.id} "
                f"({vol.capacity_bytes} bytes)"
            )
        return clone_file(self.backends[kind], vol)

    def check_mode(
        self, source: ContentSource, access_type: AccessType, allow_mode_change: bool
    ) -> None:
        """Refuse a restore or clone into another volume mode: a block volume's bytes, written
        raw by a pod, would be parsed by the kernel as a filesystem (a crafted image is an
        attack on the node's kernel), and a filesystem's bytes would be handed raw to a pod.
        Kubernetes guards the same way (snapshot.storage.kubernetes.io/allow-volume-mode-change)."""
        if allow_mode_change:
            return
        if source.kind == "snapshot":
            snap = self.catalog.snapshot(source.id) if is_snapshot_id(source.id) else None
            origin = self.catalog.volume(snap.source_volume_id) if snap else None
            have = (snap.source_access_type if snap else "") or (
                origin.access_type.value if origin else ""
            )
        else:
            vol = self.catalog.volume(source.id) if is_volume_id(source.id) else None
            have = vol.access_type.value if vol else ""
        if have and have != access_type.value:
            raise InvalidArgument(
                f"{source.kind} {source.id} is of a {have} volume; it cannot become a "
                f"{access_type.value} volume (the kernel would parse bytes a pod wrote raw, or "
                f"a pod would get a filesystem's raw bytes). Set the StorageClass parameter "
                f'{ALLOW_MODE_CHANGE}: "true" to allow it on purpose'
            )

    # expand

    def expand(self, volume_id: str, capacity: CapacityRange) -> tuple[int, bool]:
        """Grow a volume; return its new size and whether the node must grow the filesystem."""
        vol = self.get(volume_id)
        if not capacity.required_bytes and not capacity.limit_bytes:
            raise InvalidArgument("capacity_range is required")
        backend = self.backend(vol.kind)
        with self.locks.hold(vol.id):
            new = self.choose_size(capacity, backend.minimum_bytes(vol.fs_type))
            if new <= vol.capacity_bytes:
                # Already this size (a retried call, or the controller part done by the node):
                # the node may still have to grow the filesystem, so say so every time.
                return vol.capacity_bytes, backend.node_expansion
            node_needed = backend.expand(vol, new)
            self.catalog.update_capacity(vol.id, new)
            log.info("expanded volume %s from %d to %d bytes", vol.id, vol.capacity_bytes, new)
            return new, node_needed

    # modify

    def check_mutable(self, mutable: Mapping[str, str], vol: Volume | None = None) -> None:
        """Refuse mutable parameters (a VolumeAttributesClass): none can change in place."""
        if not mutable:
            return
        key = sorted(mutable)[0]
        which = f"volume {vol.id} of kind {vol.kind!r}" if vol else "this driver's volumes"
        raise InvalidArgument(
            f"mutable parameter {key!r} is not supported: {which} have no parameters that can "
            "change after creation (create a new volume, or clone this one)"
        )

    def modify(self, volume_id: str, mutable: Mapping[str, str]) -> None:
        """ControllerModifyVolume: accept an empty change, refuse every parameter by name."""
        vol = self.get(volume_id)
        self.check_mutable(mutable, vol)

    # delete

    def delete(self, volume_id: str, secrets: Mapping[str, str]) -> None:
        if not volume_id:
            raise InvalidArgument("volume_id is required")
        if not is_volume_id(volume_id):
            return  # never created by this driver: already gone, as the spec wants
        with self.locks.hold(volume_id):
            vol = self.catalog.volume(volume_id)
            if vol is None:
                return
            if self.mounted_records is not None:
                self.mounted_records(vol)
            pubs = self.catalog.publications(volume_id)
            if pubs:
                raise FailedPrecondition(
                    f"volume {volume_id} is still published at {pubs[0].target_path}; "
                    "unpublish it before deleting it"
                )
            stagings = self.catalog.stagings(volume_id)
            if stagings:
                raise FailedPrecondition(
                    f"volume {volume_id} is still staged at {stagings[0].staging_path}; "
                    "unstage it before deleting it"
                )
            with statedir.intent(self.catalog, self.config.state_dir, volume_id):
                self.catalog.remove_volume(volume_id)
                self.backend(vol.kind).delete(vol, secrets)
            log.info("deleted volume %s (%r)", vol.id, vol.name)


def check_name(name: str) -> None:
    """Refuse an empty name, or one longer than any Kubernetes sends (without echoing it)."""
    if not name:
        raise InvalidArgument("name is required")
    if len(name) > MAX_NAME:
        raise InvalidArgument(
            f"name is {len(name)} characters long; names are at most {MAX_NAME} characters "
            "(Kubernetes object names)"
        )


def find_volume(catalog: Catalog, volume_id: str, node_id: str) -> Volume:
    """The catalog's volume; INVALID_ARGUMENT without an id, NOT_FOUND for an unknown one.

    Only ids of the driver's own format are looked up, so a hostile id never reaches a path.
    """
    if not volume_id:
        raise InvalidArgument("volume_id is required")
    vol = catalog.volume(volume_id) if is_volume_id(volume_id) else None
    if vol is None:
        raise NotFound(f"volume {volume_id!r} does not exist on node {node_id}")
    return vol


def snapshot_file(backend: Backend, snapshot_id: str) -> Path:
    suffix = ".tar" if backend.kind == "directory" else ".img"
    return backend.env.snapshots_dir / f"{snapshot_id}{suffix}"


def snap_kind(snapshot_id: str, backends: Mapping[str, Backend]) -> str:
    """The kind of a snapshot whose source volume is gone, from the file it left."""
    for kind, backend in backends.items():
        if snapshot_file(backend, snapshot_id).exists():
            return kind
    return ""


def clone_file(backend: Backend, vol: Volume) -> Path:
    if backend.kind == "directory":
        return backend.env.volumes_dir / vol.id
    return backend.env.volumes_dir / f"{vol.id}.img"


def round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def parse_token(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 18:
        raise Aborted(f"starting_token {token!r} is not a token this driver handed out")
    return int(token)


def single_access_type(capabilities: Sequence[Capability]) -> AccessType:
    kinds = {cap.access_type for cap in capabilities}
    if len(kinds) > 1:
        raise InvalidArgument("a volume cannot be requested with both block and mount access")
    return kinds.pop()


def requested_fs_type(capabilities: Sequence[Capability], parameter: str) -> str:
    names = {cap.fs_type for cap in capabilities if cap.fs_type}
    if len(names) > 1:
        raise InvalidArgument(f"the capabilities ask for several fsTypes: {sorted(names)}")
    return names.pop() if names else parameter


def segment_is_this_node(segment: Mapping[str, str], config: DriverConfig) -> bool:
    """Whether a topology segment names this node: by the current key or a legacy one (volumes
    provisioned before the key moved out of `*.k8s.io` carry it), and no known key names another."""
    named = [segment[k] for k in config.known_topology_keys if k in segment]
    return bool(named) and all(value == config.node_id for value in named)
