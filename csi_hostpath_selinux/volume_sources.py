"""Where a new volume's data comes from: a snapshot or another volume (CSI content sources).

The checks the spec and Kubernetes ask for (the source exists, is of the same kind, is not
bigger than the new volume, is of the same volume mode unless allowed), then the backend of the
kind says which file create() copies: Backend.snapshot_path or Backend.clone_source. The catalog
records each snapshot's kind, so nothing here looks at file names. No gRPC here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .backends import Backend
from .errors import InvalidArgument, NotFound, OutOfRange
from .models import (
    AccessType,
    ContentSource,
    Snapshot,
    SourceType,
    is_snapshot_id,
    is_volume_id,
)
from .state import Catalog

#: StorageClass parameter that allows restoring or cloning across volume modes (block <->
#: filesystem), like Kubernetes' snapshot.storage.kubernetes.io/allow-volume-mode-change.
ALLOW_MODE_CHANGE = "allowVolumeModeChange"


class SourceResolver:
    """Checks a content source against the volume to create and finds its file."""

    def __init__(self, catalog: Catalog, backends: Mapping[str, Backend]) -> None:
        self.catalog = catalog
        self.backends = backends

    def resolve(
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
        if source.type is SourceType.SNAPSHOT:
            snap = self.catalog.snapshot(source.id) if is_snapshot_id(source.id) else None
            if snap is None:
                raise NotFound(f"snapshot {source.id!r} does not exist")
            origin_kind = snapshot_kind(self.catalog, snap)
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
            return self.backends[kind].snapshot_path(snap.id)
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
        clone = self.backends[kind].clone_source(vol)
        if clone is None:
            raise InvalidArgument(f"volumes of kind {kind!r} cannot be cloned")
        return clone

    def check_mode(
        self, source: ContentSource, access_type: AccessType, allow_mode_change: bool
    ) -> None:
        """Refuse a restore or clone into another volume mode: a block volume's bytes, written
        raw by a pod, would be parsed by the kernel as a filesystem (a crafted image is an
        attack on the node's kernel), and a filesystem's bytes would be handed raw to a pod.
        Kubernetes guards the same way (snapshot.storage.kubernetes.io/allow-volume-mode-change)."""
        if allow_mode_change:
            return
        if source.type is SourceType.SNAPSHOT:
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
                f"{source.type.value} {source.id} is of a {have} volume; it cannot become a "
                f"{access_type.value} volume (the kernel would parse bytes a pod wrote raw, or "
                f"a pod would get a filesystem's raw bytes). Set the StorageClass parameter "
                f'{ALLOW_MODE_CHANGE}: "true" to allow it on purpose'
            )


def snapshot_kind(catalog: Catalog, snap: Snapshot) -> str:
    """The kind of the volume snap was taken of: the catalog's record (for rows written before
    the catalog had one, the source volume's kind, while it exists)."""
    if snap.kind:
        return snap.kind
    origin = catalog.volume(snap.source_volume_id)
    return origin.kind if origin else ""


def probe_snapshot_kind(snapshot_id: str, backends: Mapping[str, Backend]) -> str:
    """The kind of a snapshot row written before the catalog recorded kinds, found by probing
    each kind's snapshot path: used once, by start-up recovery, to record it. Everything else
    reads the catalog (snapshot_kind)."""
    for kind, backend in backends.items():
        if backend.can_snapshot() and backend.snapshot_path(snapshot_id).exists():
            return kind
    return ""
