"""Start-up reconciliation: make the catalog, the state directory and the mount table agree.

A driver killed at any point leaves one of a few states behind; each is repaired here:
- storage without a catalog entry whose create or delete was unfinished (its intent file, see
  statedir.py, is there): removed. Unlisted storage without one is never removed: statedir.check
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
import shutil
from dataclasses import dataclass, field

from . import freeze, loopdev, paths, statedir
from .backends import Backend
from .errors import DriverError
from .models import AccessType, Staging, StagingState, is_snapshot_id, is_volume_id
from .mounting import NodeVolumes
from .mounts import read_mountinfo
from .mounttable import MountView
from .state import Catalog, tolerate_full_disk

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
    pending = statedir.intents(state_dir)
    _remove_orphan_storage(catalog, backends, report, pending)
    _remove_orphan_snapshots(catalog, backends, report, pending)
    for ident in pending:
        statedir.drop_intent(state_dir, ident)
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
        elif vol.access_type is AccessType.MOUNT and vol.kind == "image":
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


def _remove_orphan_storage(
    catalog: Catalog, backends: dict[str, Backend], report: Report, pending: set[str]
) -> None:
    known = {v.id for v in catalog.all_volumes()}
    for backend in backends.values():
        directory = backend.env.volumes_dir
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            volume_id = entry.name.removesuffix(".img")
            if not is_volume_id(volume_id) or volume_id in known or volume_id not in pending:
                continue
            path = directory / entry.name
            for dev in loopdev.find_by_backing_file(str(path)):
                loopdev.detach(dev.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            report.orphan_storage.append(entry.name)
        break  # every backend shares the one volumes directory


def _remove_orphan_snapshots(
    catalog: Catalog, backends: dict[str, Backend], report: Report, pending: set[str]
) -> None:
    """Snapshot files whose catalog entry was never written (killed between copy and record)."""
    known = {s.id for s in catalog.all_snapshots()}
    directory = next(iter(backends.values())).env.snapshots_dir
    if not directory.is_dir():
        return
    for entry in os.scandir(directory):
        snapshot_id = entry.name.rsplit(".", 1)[0]
        if not is_snapshot_id(snapshot_id) or snapshot_id in known or snapshot_id not in pending:
            continue
        if entry.is_file(follow_symlinks=False):
            (directory / entry.name).unlink()
            report.orphan_storage.append(entry.name)


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
