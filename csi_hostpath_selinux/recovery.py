"""Start-up reconciliation: make the catalog, the state directory and the mount table agree.

A driver killed at any point leaves one of a few states behind; each is repaired here:
- storage without a catalog entry whose create or delete was unfinished (its intent file, see
  intents.py, is there): removed. Unlisted storage without one is never removed: catalog_guard.check
  refuses to start before this runs;
- a PENDING staging (killed while mounting): its mount and loop device are undone, the record
  dropped, so kubelet's retry stages from scratch;
- a READY staging or a publication whose mount is gone (node rebooted): the record is dropped;
- a loop device backed by one of our images that no mount and no block staging uses: detached;
- a staged filesystem left frozen by a snapshot copy that was killed: thawed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from . import freeze, intents, loopdev, paths
from .backends import Backend
from .backends.base import remove_path
from .errors import DriverError
from .models import AccessType, Staging, StagingState
from .mountinfo import read_mountinfo
from .mounting import NodeVolumes
from .mounttable import MountView
from .state import Catalog, tolerate_full_disk
from .volume_sources import probe_snapshot_kind

log = logging.getLogger(__name__)


@dataclass
class Report:
    orphan_storage: list[str] = field(default_factory=list)
    pending_stagings: list[str] = field(default_factory=list)
    stale_records: list[str] = field(default_factory=list)
    detached_loops: list[str] = field(default_factory=list)
    thawed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"removed {len(self.orphan_storage)} orphan volume(s), rolled back "
            f"{len(self.pending_stagings)} unfinished staging(s), dropped "
            f"{len(self.stale_records)} stale record(s), detached {len(self.detached_loops)} "
            f"unused loop device(s), thawed {len(self.thawed)} filesystem(s) a killed snapshot "
            "left frozen"
        )


def reconcile(catalog: Catalog, backends: dict[str, Backend], node: NodeVolumes) -> Report:
    report = Report()
    state_dir = next(iter(backends.values())).env.state_dir
    pending = intents.intents(state_dir)
    _record_snapshot_kinds(catalog, backends)
    _remove_orphan_storage(catalog, backends, report, pending)
    _remove_orphan_snapshots(catalog, backends, report, pending)
    for ident in pending:
        intents.drop_intent(state_dir, ident)
    for st in catalog.stagings():
        vol = catalog.volume(st.volume_id)
        if vol is None:
            with tolerate_full_disk(f"the stale staging of {st.volume_id}"):
                catalog.remove_staging(st.volume_id, st.staging_path)
            report.stale_records.append(f"{st.volume_id}@{st.staging_path}")
            continue
        if st.state is StagingState.PENDING:
            try:
                node.backend_unstage(vol, backends[vol.kind], st.staging_path, st.device)
            except Exception:
                log.exception(
                    "rolling back the unfinished staging of %s at %s failed",
                    vol.id,
                    st.staging_path,
                )
                continue
            with tolerate_full_disk(f"the unfinished staging of {st.volume_id}"):
                catalog.remove_staging(st.volume_id, st.staging_path)
            report.pending_stagings.append(f"{st.volume_id}@{st.staging_path}")
        elif not node.staging_alive(vol, st):
            report.stale_records.append(f"{st.volume_id}@{st.staging_path}")
        elif backends[vol.kind].can_freeze(vol):
            # A driver killed while copying a snapshot leaves the filesystem frozen: every
            # write of the pod would hang, and the frozen superblock would pin the loop device.
            _thaw(node, st, report)
    for pub in catalog.publications():
        if not node.carries(pub):
            vol = catalog.volume(pub.volume_id)
            if pub.device and vol is not None:
                backends[vol.kind].release_publish_device(vol, pub.device)
            with tolerate_full_disk(f"the stale publication of {pub.volume_id}"):
                catalog.remove_publication(pub.volume_id, pub.target_path)
            report.stale_records.append(f"{pub.volume_id}@{pub.target_path}")
    _clean_work_dir(backends, node)
    _detach_unused_loops(catalog, backends, report)
    log.info("start-up reconciliation: %s", report.summary())
    return report


def _thaw(node: NodeVolumes, st: Staging, report: Report) -> None:
    """Thaw the staged filesystem through a descriptor proven to be its mount root."""
    try:
        fd = paths.open_mount_root(st.staging_path, node.trusted(st.staging_path), st.device)
        if fd is None:
            return
        try:
            if freeze.thaw(f"/proc/self/fd/{fd}"):
                report.thawed.append(st.staging_path)
        finally:
            os.close(fd)
    except (OSError, DriverError):
        log.exception("thawing %s failed", st.staging_path)


def _clean_work_dir(backends: dict[str, Backend], node: NodeVolumes) -> None:
    """Unmount and remove the private mount points a killed driver left in the work directory
    (a share mounted for CreateVolume/DeleteVolume, a helper mount before it was attached)."""
    work = next(iter(backends.values())).env.work_dir
    if not work.is_dir():
        return
    for entry in os.scandir(work):
        if not entry.is_dir(follow_symlinks=False):
            continue
        path = str(work / entry.name)
        for _ in range(16):
            if MountView.read(node.ctx.table, lambda _path: str(work)).at(path) is None:
                break
            node.mounter.unmount(path)
        try:
            os.rmdir(path)
        except OSError:
            log.warning("left %s in the work directory: it is not an empty directory", path)


def _record_snapshot_kinds(catalog: Catalog, backends: dict[str, Backend]) -> None:
    """Record the kind of snapshots whose rows predate the catalog's kind column and whose
    source volume is gone: the one time a snapshot's kind is read from the files on disk."""
    for snap in catalog.all_snapshots():
        if not snap.kind and (kind := probe_snapshot_kind(snap.id, backends)):
            with tolerate_full_disk(f"the kind of snapshot {snap.id}"):
                catalog.set_snapshot_kind(snap.id, kind)


def _remove_orphan_storage(
    catalog: Catalog, backends: dict[str, Backend], report: Report, pending: set[str]
) -> None:
    """Storage of each kind (its own scan) that no catalog row lists and an intent proves
    unfinished."""
    known = {v.id for v in catalog.all_volumes()}
    for backend in backends.values():
        for volume_id in sorted(backend.stored_volume_ids() - known):
            if volume_id not in pending:
                continue
            path = backend.volume_path(volume_id)
            backend.remove_storage(volume_id)
            report.orphan_storage.append(path.name if path else volume_id)


def _remove_orphan_snapshots(
    catalog: Catalog, backends: dict[str, Backend], report: Report, pending: set[str]
) -> None:
    """Snapshot files whose catalog entry was never written (killed between copy and record)."""
    known = {s.id for s in catalog.all_snapshots()}
    for backend in backends.values():
        for snapshot_id in sorted(backend.stored_snapshot_ids() - known):
            if snapshot_id not in pending:
                continue
            path = backend.snapshot_path(snapshot_id)
            remove_path(path)
            report.orphan_storage.append(path.name)


def _detach_unused_loops(catalog: Catalog, backends: dict[str, Backend], report: Report) -> None:
    volumes_dir = next(iter(backends.values())).env.volumes_dir
    in_use = {st.device for st in catalog.stagings() if st.access_type is AccessType.BLOCK}
    in_use |= {pub.device for pub in catalog.publications() if pub.device}
    mounted = {(m.major, m.minor) for m in read_mountinfo()}
    for dev in loopdev.list_attached():
        if not loopdev.is_backed_in(dev, str(volumes_dir)):
            continue
        try:
            rdev = os.stat(dev.path).st_rdev
        except FileNotFoundError:
            continue
        if dev.path in in_use or (os.major(rdev), os.minor(rdev)) in mounted:
            continue
        loopdev.detach(dev.path)
        report.detached_loops.append(dev.path)
