"""Volume group snapshots: point-in-time copies of several volumes, taken together.

The spec asks a group snapshot to be write-order consistent: every member is copied at the same
point in the stream of writes to the group, or the request fails. This is how the driver keeps
that promise, volume kind by volume kind:

- image volumes with a filesystem (ext4, xfs): every such member that is staged on this node has
  its filesystem frozen (FIFREEZE) before the first copy starts, and all are thawed after the
  last copy ends, also when a copy fails. Writers block meanwhile; nothing in flight is lost.
- members nothing can write to (not staged, so no pod uses them) are quiescent: a plain copy is
  already point-in-time.
- a directory volume (its snapshot is a tar archive) or a raw block volume that is staged cannot
  be frozen: a directory shares the node's filesystem, and a block device has no filesystem the
  driver knows of. Such a member is only crash-consistent at best (tar reads files one by one),
  which is not what the spec promises, so the request fails with FAILED_PRECONDITION naming the
  volume: unstage it (stop its pods) or snapshot it on its own with CreateSnapshot.

Each member is also an ordinary snapshot in the catalog, so CreateVolume restores from it and
ListSnapshots shows it. Member names are "<group id>/<volume id>".
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import freeze, intents
from .backends import Backend
from .errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound
from .locks import OperationLocks
from .models import (
    AccessType,
    GroupMember,
    GroupSnapshot,
    Snapshot,
    Volume,
    is_volume_id,
    new_snapshot_id,
)
from .snapshots import SnapshotManager
from .state import Catalog
from .volume_sources import snapshot_kind
from .volumes import RESERVED_PREFIX, check_name

log = logging.getLogger(__name__)

GROUP_SNAPSHOT_ID_RE = re.compile(r"^group-[0-9a-f]{32}$")


def new_group_snapshot_id() -> str:
    return f"group-{uuid.uuid4().hex}"


def is_group_snapshot_id(text: str) -> bool:
    return GROUP_SNAPSHOT_ID_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class GroupView:
    """A group and the member snapshots the catalog still holds."""

    group: GroupSnapshot
    snapshots: tuple[Snapshot, ...]

    @property
    def ready(self) -> bool:
        """All members exist and are ready (the spec: false as soon as one is not)."""
        return len(self.snapshots) == len(self.group.members) and all(
            s.ready for s in self.snapshots
        )


@dataclass(frozen=True)
class _Member:
    volume: Volume
    backend: Backend
    snapshot_id: str
    dest: Path
    freeze_at: str | None  # the mount point to freeze, None when the volume is quiescent


class GroupSnapshots:
    """Creates, looks up and deletes volume group snapshots."""

    def __init__(
        self,
        catalog: Catalog,
        backends: Mapping[str, Backend],
        locks: OperationLocks,
        snapshots: SnapshotManager,
    ) -> None:
        self.catalog = catalog
        self.backends = backends
        self.locks = locks
        self.snapshots = snapshots

    # create

    def create(
        self, name: str, source_volume_ids: Sequence[str], parameters: Mapping[str, str]
    ) -> GroupView:
        check_name(name)
        if not source_volume_ids:
            raise InvalidArgument("source_volume_ids is required")
        if any(not v for v in source_volume_ids):
            raise InvalidArgument("source_volume_ids must not contain an empty volume id")
        if len(set(source_volume_ids)) != len(source_volume_ids):
            raise InvalidArgument(f"source_volume_ids names a volume twice: {source_volume_ids}")
        unknown = sorted(k for k in parameters if not k.startswith(RESERVED_PREFIX))
        if unknown:
            raise InvalidArgument(
                f"unknown group snapshot parameter {unknown[0]!r}: this driver has none"
            )
        with self.locks.hold(f"group-snapshot:{name}"):
            existing = self.catalog.group_snapshot_by_name(name)
            if existing is not None:
                if sorted(existing.volume_ids) != sorted(source_volume_ids):
                    raise AlreadyExists(
                        f"a group snapshot named {name!r} already exists of volumes "
                        f"{sorted(existing.volume_ids)}; this request names "
                        f"{sorted(source_volume_ids)}"
                    )
                return self.view(existing)
            volumes = [self.source_volume(v) for v in source_volume_ids]
            with self.locks.hold(*(v.id for v in volumes)):
                members = [self.plan_member(v) for v in volumes]
                group = self.cut(name, members)
        log.info("created group snapshot %s of volumes %s (%r)", group.id, group.volume_ids, name)
        return self.view(group)

    def source_volume(self, volume_id: str) -> Volume:
        vol = self.catalog.volume(volume_id) if is_volume_id(volume_id) else None
        if vol is None:
            raise NotFound(f"source volume {volume_id!r} does not exist")
        return vol

    def plan_member(self, vol: Volume) -> _Member:
        """What to copy for vol and what to freeze; refuse what cannot be point-in-time."""
        backend = self.backends[vol.kind]
        if not backend.can_snapshot():
            raise FailedPrecondition(
                f"volume {vol.id} is of kind {vol.kind!r}, which cannot be snapshotted"
            )
        freeze_at: str | None = None
        if self.in_use(vol):
            if backend.can_freeze(vol):
                freeze_at = self.snapshots.mount_point(vol.id)
            else:
                what = (
                    "a raw block volume has no filesystem to freeze"
                    if vol.access_type is AccessType.BLOCK
                    else f"a volume of kind {vol.kind!r} cannot be frozen"
                )
                raise FailedPrecondition(
                    f"volume {vol.id} is in use on node {self.snapshots.config.node_id} and "
                    f"{what}, so it cannot be snapshotted at one point in time with the other "
                    "volumes of the group: stop the pods using it, or snapshot it on its own"
                )
        snap_id = new_snapshot_id()
        return _Member(vol, backend, snap_id, backend.snapshot_path(snap_id), freeze_at)

    def in_use(self, vol: Volume) -> bool:
        return bool(self.catalog.stagings(vol.id) or self.catalog.publications(vol.id))

    def cut(self, name: str, members: Sequence[_Member]) -> GroupSnapshot:
        """Freeze every mounted member, copy every member, thaw; then record them all at once."""
        group_id = new_group_snapshot_id()
        state_dir = members[0].backend.env.state_dir if members else None
        marks = (
            intents.intent(self.catalog, state_dir, *(m.snapshot_id for m in members))
            if state_dir is not None
            else contextlib.nullcontext()
        )
        with marks:
            return self._cut(group_id, name, members)

    def _cut(self, group_id: str, name: str, members: Sequence[_Member]) -> GroupSnapshot:
        try:
            with contextlib.ExitStack() as frozen:
                for m in members:
                    if m.freeze_at is not None:
                        root = frozen.enter_context(self.snapshots.mount_root(m.volume))
                        if root is None:
                            continue  # unmounted since: quiescent
                        try:
                            frozen.enter_context(freeze.frozen(root))
                        except OSError as exc:
                            raise Internal(
                                f"freezing the filesystem of volume {m.volume.id} at "
                                f"{m.freeze_at} failed: {exc.strerror}"
                            ) from exc
                taken_at = time.time()
                for m in members:
                    # Frozen above when mounted: the backend must not freeze a second time.
                    m.backend.snapshot(m.volume, m.dest, None)
            group = GroupSnapshot(
                id=group_id,
                name=name,
                created_at=taken_at,
                members=tuple(
                    GroupMember(volume_id=m.volume.id, snapshot_id=m.snapshot_id) for m in members
                ),
            )
            snaps = [
                Snapshot(
                    id=m.snapshot_id,
                    name=f"{group_id}/{m.volume.id}",
                    source_volume_id=m.volume.id,
                    size_bytes=m.volume.capacity_bytes,
                    created_at=taken_at,
                    ready=True,
                    source_access_type=m.volume.access_type.value,
                    kind=m.volume.kind,
                )
                for m in members
            ]
            self.catalog.add_group_snapshot(group, snaps)
        except BaseException:
            for m in members:
                m.dest.unlink(missing_ok=True)
            raise
        return group

    # get and delete

    def get(self, group_id: str, snapshot_ids: Sequence[str]) -> GroupView:
        if not group_id:
            raise InvalidArgument("group_snapshot_id is required")
        group = self.catalog.group_snapshot(group_id) if is_group_snapshot_id(group_id) else None
        if group is None:
            raise NotFound(f"group snapshot {group_id!r} does not exist")
        check_snapshot_ids(group, snapshot_ids)
        return self.view(group)

    def delete(self, group_id: str, snapshot_ids: Sequence[str]) -> None:
        if not group_id:
            raise InvalidArgument("group_snapshot_id is required")
        if not is_group_snapshot_id(group_id):
            return  # never created by this driver: already gone, as the spec wants
        group = self.catalog.group_snapshot(group_id)
        if group is None:
            return
        with self.locks.hold(group_id, *group.snapshot_ids):
            group = self.catalog.group_snapshot(group_id)
            if group is None:
                return
            check_snapshot_ids(group, snapshot_ids)
            files = {}
            for snap in filter(None, map(self.catalog.snapshot, group.snapshot_ids)):
                kind = snapshot_kind(self.catalog, snap)
                if kind in self.backends:
                    files[snap.id] = self.backends[kind].snapshot_path(snap.id)
            # Intent, catalog, files: a crash before the files go leaves files nothing refers
            # to, which start-up reconciliation removes (the intent proves them garbage).
            state_dir = next(iter(self.backends.values())).env.state_dir
            with intents.intent(self.catalog, state_dir, *group.snapshot_ids):
                self.catalog.remove_group_snapshot(group.id)
                for path in files.values():
                    path.unlink(missing_ok=True)
        log.info("deleted group snapshot %s and its snapshots %s", group.id, group.snapshot_ids)

    def view(self, group: GroupSnapshot) -> GroupView:
        snaps = [self.catalog.snapshot(s) for s in group.snapshot_ids]
        return GroupView(group, tuple(s for s in snaps if s is not None))


def check_snapshot_ids(group: GroupSnapshot, snapshot_ids: Sequence[str]) -> None:
    """The spec: report a mismatch between the request's snapshot_ids and the group's."""
    if sorted(set(snapshot_ids)) != sorted(group.snapshot_ids):
        raise InvalidArgument(
            f"snapshot_ids {sorted(set(snapshot_ids))} do not match the snapshots of group "
            f"snapshot {group.id}: {sorted(group.snapshot_ids)}"
        )
