"""Snapshot domain logic: point-in-time copies of volumes, kept under the state directory."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from . import intents, paths
from .backends import Backend
from .config import DriverConfig
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from .locks import OperationLocks
from .models import (
    Snapshot,
    StagingState,
    Volume,
    is_snapshot_id,
    is_volume_id,
    new_snapshot_id,
)
from .mounttable import MountTable, MountView, ProcMountTable
from .state import Catalog
from .volume_sources import snapshot_kind
from .volumes import check_name, parse_token

log = logging.getLogger(__name__)


class SnapshotManager:
    def __init__(
        self,
        config: DriverConfig,
        catalog: Catalog,
        backends: Mapping[str, Backend],
        locks: OperationLocks,
        table: MountTable | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.backends = backends
        self.locks = locks
        self.table = table or ProcMountTable()

    def _trusted(self, path: str) -> str | None:
        return paths.trusted_prefix(
            path, self.config.kubelet_dir, str(self.config.state_dir / "ephemeral")
        )

    def mount_point(self, volume_id: str) -> str | None:
        """Where the volume is staged on this node (to freeze it), or None: a staging whose
        mount is the volume's (mounttable's one check), its path resolved as paths.py walks it."""
        view = MountView.read(self.table, self._trusted)
        for st in self.catalog.stagings(volume_id):
            if view.staging_mount(st) is not None:
                return st.staging_path
        return None

    @contextmanager
    def mount_root(self, vol: Volume) -> Iterator[str | None]:
        """/proc/self/fd/N of the volume's staged mount root, proven to be it (the one thing a
        freeze may be given), held open for the block; None when the volume is mounted nowhere.
        FailedPrecondition when it is mounted but its staging path does not lead to its root."""
        for st in self.catalog.stagings(vol.id):
            if st.state is not StagingState.READY or not st.device:
                continue
            try:
                fd = paths.open_mount_root(
                    st.staging_path, self._trusted(st.staging_path), st.device
                )
            except FileNotFoundError:  # the loop device is gone: nothing is mounted
                continue
            if fd is None:
                continue
            try:
                yield f"/proc/self/fd/{fd}"
            finally:
                os.close(fd)
            return
        yield None

    def create(self, name: str, source_volume_id: str) -> Snapshot:
        check_name(name)
        if not source_volume_id:
            raise InvalidArgument("source_volume_id is required")
        with self.locks.hold(f"snapshot:{name}"):
            existing = self.catalog.snapshot_by_name(name)
            if existing is not None:
                if existing.source_volume_id != source_volume_id:
                    raise AlreadyExists(
                        f"a snapshot named {name!r} already exists of volume "
                        f"{existing.source_volume_id}; this request names volume {source_volume_id}"
                    )
                return existing
            vol = self.catalog.volume(source_volume_id) if is_volume_id(source_volume_id) else None
            if vol is None:
                raise NotFound(f"source volume {source_volume_id!r} does not exist")
            backend = self.backends[vol.kind]
            snap_id = new_snapshot_id()
            dest = backend.snapshot_path(snap_id)
            with intents.intent(self.catalog, self.config.state_dir, snap_id):
                with self.locks.hold(vol.id), self.mount_root(vol) as root:
                    backend.snapshot(vol, dest, root)
                snap = Snapshot(
                    id=snap_id,
                    name=name,
                    source_volume_id=vol.id,
                    size_bytes=vol.capacity_bytes,
                    created_at=time.time(),
                    ready=True,
                    source_access_type=vol.access_type.value,
                )
                try:
                    self.catalog.add_snapshot(snap)
                except BaseException:
                    dest.unlink(missing_ok=True)
                    raise
            log.info("created snapshot %s of volume %s (%r)", snap.id, vol.id, name)
            return snap

    def delete(self, snapshot_id: str) -> None:
        if not snapshot_id:
            raise InvalidArgument("snapshot_id is required")
        if not is_snapshot_id(snapshot_id):
            return
        with self.locks.hold(snapshot_id):
            snap = self.catalog.snapshot(snapshot_id)
            if snap is None:
                return
            group = self.catalog.group_of_snapshot(snap.id)
            if group is not None:
                raise FailedPrecondition(
                    f"snapshot {snap.id} is part of volume group snapshot {group}; delete the "
                    "group snapshot instead"
                )
            backend = self.backends.get(snapshot_kind(self.catalog, snap))
            with intents.intent(self.catalog, self.config.state_dir, snap.id):
                self.catalog.remove_snapshot(snap.id)
                if backend is not None:
                    backend.snapshot_path(snap.id).unlink(missing_ok=True)
            log.info("deleted snapshot %s", snap.id)

    def get(self, snapshot_id: str) -> Snapshot:
        if not snapshot_id:
            raise InvalidArgument("snapshot_id is required")
        snap = self.catalog.snapshot(snapshot_id) if is_snapshot_id(snapshot_id) else None
        if snap is None:
            raise NotFound(f"snapshot {snapshot_id!r} does not exist")
        return snap

    def list(
        self, snapshot_id: str, source_volume_id: str, starting_token: str, max_entries: int
    ) -> tuple[list[Snapshot], str]:
        if max_entries < 0:
            raise InvalidArgument(f"max_entries must not be negative, got {max_entries}")
        after = parse_token(starting_token)
        if snapshot_id:
            snap = self.catalog.snapshot(snapshot_id) if is_snapshot_id(snapshot_id) else None
            if snap is None or (source_volume_id and snap.source_volume_id != source_volume_id):
                return [], ""
            return [snap], ""
        snaps, next_seq = self.catalog.snapshots_page(after, max_entries, source_volume_id)
        return snaps, "" if next_seq is None else str(next_seq)

    def file(self, snap: Snapshot) -> Path:
        return self.backends[snapshot_kind(self.catalog, snap)].snapshot_path(snap.id)
