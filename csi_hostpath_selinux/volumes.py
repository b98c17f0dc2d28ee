"""Controller-side domain logic: create, delete, look up and list volumes.

No gRPC here: the controller service converts requests into these calls and DriverErrors into
status codes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from . import intents, sizing
from .admission import Admission
from .backends import DEFAULT_KIND, Backend
from .config import DriverConfig
from .errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from .locks import OperationLocks
from .models import AccessType, Capability, ContentSource, Volume, is_volume_id, new_volume_id
from .state import Catalog
from .volume_requests import (
    KIND_PARAMETER,
    CapacityRange,
    check_compatible,
    check_name,
    find_volume,
    parse_token,
    requested_fs_type,
    segment_is_this_node,
    single_access_type,
)
from .volume_sources import (
    ALLOW_MODE_CHANGE,
    SourceResolver,
)

#: Names other modules import from here (they live in the modules of their job).
__all__ = [
    "KIND_PARAMETER",
    "CapacityRange",
    "VolumeManager",
    "check_name",
    "find_volume",
    "parse_token",
    "segment_is_this_node",
]

log = logging.getLogger(__name__)

FSTYPE_PARAMETER = "csi.storage.k8s.io/fstype"
#: Parameters external-provisioner reserves; they are not the backend's business.
RESERVED_PREFIX = "csi.storage.k8s.io/"
EPHEMERAL_CONTEXT_KEY = "csi.storage.k8s.io/ephemeral"


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
        self.admission = Admission(config, catalog)
        self.sources = SourceResolver(catalog, backends)

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
                check_compatible(existing, kind, stored, access_type, fs_type, capacity, source)
                return existing
            with self.admission.hold(size, backend.stored_in_state_dir):
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
        source_path = self.sources.resolve(
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
            content_source=source,
            ephemeral=ephemeral,
            created_at=time.time(),
        )
        # Intent, storage, catalog: a crash in between leaves storage that start-up
        # reconciliation removes (its intent proves it garbage), never a catalog entry without
        # storage.
        with intents.intent(self.catalog, self.config.state_dir, vol.id):
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
            with intents.intent(self.catalog, self.config.state_dir, volume_id):
                self.catalog.remove_volume(volume_id)
                self.backend(vol.kind).delete(vol, secrets)
            log.info("deleted volume %s (%r)", vol.id, vol.name)
