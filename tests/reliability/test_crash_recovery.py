"""What a SIGKILL at an unlucky moment leaves behind, reproduced exactly, and what a restart must do.

The crash harness (crash.py) finds these by chance; each test here sets up the state a kill in
that window leaves (a filesystem still frozen, a snapshot file without its catalog row, a lost
response) and checks the driver recovers from it.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import threading
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from tests.reliability.conftest import Node
from tests.reliability.crash import mount_count
from tests.support.driver import loop_devices_under
from tests.support.kubelet import publish, stage
from tests.support.requests import MIB, block_cap, create, mount_cap

pytestmark = pytest.mark.integration

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
MS_BIND = 4096
libc = ctypes.CDLL(None, use_errno=True)


def stage_publish(node: Node, vol_id: str, name: str, cap: pb.VolumeCapability) -> tuple[str, str]:
    staging, target = node.staging(name), node.target(name)
    stage(node.csi, vol_id, staging, cap)
    publish(node.csi, vol_id, staging, target, cap)
    return staging, target


def teardown(node: Node, vol_id: str, staging: str, target: str) -> None:
    node.csi.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=target)
    )
    node.csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol_id, staging_target_path=staging)
    )
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol_id))


def restart_after_kill(node: Node) -> None:
    node.driver.stop(signal.SIGKILL)
    node.driver.start()


def thaw(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError:
        pass  # not frozen
    finally:
        os.close(fd)


def write_within(path: Path, seconds: float) -> bool:
    """Write and fsync path in a thread; False when that blocks for longer than seconds."""
    done = threading.Event()

    def run() -> None:
        with open(path, "wb") as f:
            f.write(b"after the restart")
            os.fsync(f.fileno())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_restart_thaws_a_filesystem_a_killed_snapshot_left_frozen(node: Node) -> None:
    """A kill between FIFREEZE and FITHAW (CreateSnapshot of a staged volume) leaves the
    filesystem frozen: the pod's writes hang and every later snapshot fails with EBUSY."""
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-frozen", cap)).volume
    staging, target = stage_publish(node, vol.volume_id, "frozen", cap)
    try:
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)  # what the killed driver did, and never undid
        finally:
            os.close(fd)
        restart_after_kill(node)
        assert write_within(Path(target, "data"), 10), (
            "the pod's write still blocks after the driver restarted: the filesystem is frozen"
        )
        snap = node.csi.controller.CreateSnapshot(
            pb.CreateSnapshotRequest(name="snap-frozen", source_volume_id=vol.volume_id)
        ).snapshot
        node.csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    finally:
        thaw(staging)  # never leave a frozen filesystem behind, whatever the driver did
    teardown(node, vol.volume_id, staging, target)


def test_restart_removes_snapshot_files_a_crash_left_without_a_catalog_row(node: Node) -> None:
    """CreateSnapshot copies the image first and records it second: a kill in between leaves a
    file no catalog row names; the driver must remove it, as it does for volume storage."""
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-snapfile", cap)).volume
    kept = node.csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name="snap-kept", source_volume_id=vol.volume_id)
    ).snapshot
    snapshots = node.driver.state_dir / "snapshots"
    orphans = [snapshots / f"snap-{'a' * 32}.img", snapshots / f"snap-{'b' * 32}.tar"]
    node.driver.stop(signal.SIGKILL)
    intents = node.driver.state_dir / "intents"
    intents.mkdir(exist_ok=True)
    for orphan in orphans:
        orphan.write_bytes(b"\0" * 4096)
        # What the killed CreateSnapshot left before copying: its intent file.
        (intents / orphan.name.rsplit(".", 1)[0]).touch()
    node.driver.start()
    left = sorted(p.name for p in orphans if p.exists())
    assert left == [], f"snapshot files without a catalog row survived the restart: {left}"
    assert (snapshots / f"{kept.snapshot_id}.img").exists(), "a recorded snapshot was removed"
    node.csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=kept.snapshot_id))
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_xfs_snapshot_restores_while_its_source_is_staged(node: Node) -> None:
    """A restored (or cloned) xfs image carries its source's UUID; xfs refuses to mount a second
    filesystem with a UUID already mounted ("Filesystem has duplicate UUID - can't mount")."""
    cap = mount_cap("xfs")
    size = 304 * MIB
    vol = node.csi.controller.CreateVolume(create("pvc-xfs-src", cap, size)).volume
    staging, target = stage_publish(node, vol.volume_id, "xfs-src", cap)
    Path(target, "data").write_bytes(b"xfs payload")
    snap = node.csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name="snap-xfs", source_volume_id=vol.volume_id)
    ).snapshot
    request = create("pvc-xfs-restored", cap, size)
    request.volume_content_source.snapshot.snapshot_id = snap.snapshot_id
    restored = node.csi.controller.CreateVolume(request).volume
    try:
        r_staging, r_target = stage_publish(node, restored.volume_id, "xfs-restored", cap)
    except grpc.RpcError as exc:
        pytest.fail(f"staging the restored xfs volume failed: {exc.code().name}: {exc.details()}")
    assert Path(r_target, "data").read_bytes() == b"xfs payload"
    teardown(node, restored.volume_id, r_staging, r_target)
    node.csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    teardown(node, vol.volume_id, staging, target)


def test_retried_controller_expand_still_asks_for_node_expansion(node: Node) -> None:
    """The resizer retries ControllerExpandVolume when the response was lost (a kill after the
    catalog was updated); if the retry says node_expansion_required=false, NodeExpandVolume is
    never called and the filesystem never grows."""
    cap = mount_cap("xfs")
    vol = node.csi.controller.CreateVolume(create("pvc-expand", cap, 304 * MIB)).volume
    request = pb.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id,
        capacity_range=pb.CapacityRange(required_bytes=336 * MIB),
        volume_capability=cap,
    )
    first = node.csi.controller.ControllerExpandVolume(request)
    assert first.node_expansion_required
    restart_after_kill(node)  # the first response never reached the resizer
    again = node.csi.controller.ControllerExpandVolume(request)
    assert again.capacity_bytes == first.capacity_bytes
    assert again.node_expansion_required, (
        "the retried expansion says no node expansion is needed, but the filesystem was never grown"
    )
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def bind(source: str, target: str) -> None:
    if libc.mount(source.encode(), target.encode(), None, MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), f"bind mount of {source} on {target} failed")


def test_publish_retried_after_a_kill_between_mount_and_record_mounts_once(node: Node) -> None:
    """NodePublishVolume bind-mounts first and records the publication second: a kill in between
    leaves the mount without a record. kubelet retries the publish; the retry must find the
    mount it made, not stack a second one on top (two mounts at one target)."""
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-republish", cap)).volume
    staging, target = node.staging("republish"), node.target("republish")
    stage(node.csi, vol.volume_id, staging, cap)
    os.mkdir(target)
    bind(staging, target)  # what the killed publish did before it could record it
    restart_after_kill(node)
    publish(node.csi, vol.volume_id, staging, target, cap)
    assert mount_count(target) == 1, f"{mount_count(target)} mounts at {target} after the retry"
    teardown(node, vol.volume_id, staging, target)


def test_block_publish_retried_after_a_kill_between_mount_and_record_succeeds(
    node: Node,
) -> None:
    """The same window for a block volume: the target file now shows the bind-mounted device,
    so the retry answers INVALID_ARGUMENT ("exists and is not a regular file") forever and the
    mount is orphaned."""
    cap = block_cap()
    vol = node.csi.controller.CreateVolume(create("pvc-republish-block", cap)).volume
    staging = node.staging("republish-block")
    os.makedirs(staging)
    target = node.target("republish-block")
    stage(node.csi, vol.volume_id, staging, cap)
    devices = loop_devices_under(str(node.driver.state_dir.resolve()))
    assert len(devices) == 1
    Path(target).touch()
    bind(devices[0], target)  # what the killed publish did before it could record it
    restart_after_kill(node)
    try:
        publish(node.csi, vol.volume_id, staging, target, cap)
    except grpc.RpcError as exc:
        pytest.fail(f"the retried block publish failed: {exc.code().name}: {exc.details()}")
    assert mount_count(target) == 1, f"{mount_count(target)} mounts at {target} after the retry"
    teardown(node, vol.volume_id, staging, target)


def test_publish_does_not_forget_a_mount_it_cannot_see_for_a_moment(node: Node) -> None:
    """A publish retried while the target's parent is briefly missing (renamed, as in the symlink
    race) drops the publication record although the mount is still in place; the next retry then
    stacks a second mount on the first. The record must go only when the mount is really gone."""
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-forget", cap)).volume
    staging, target = node.staging("forget"), node.target("forget")
    request = pb.NodePublishVolumeRequest(
        volume_id=vol.volume_id,
        staging_target_path=staging,
        target_path=target,
        volume_capability=cap,
    )
    stage(node.csi, vol.volume_id, staging, cap)
    node.csi.node.NodePublishVolume(request)
    parent = Path(target).parent
    moved = parent.with_name(parent.name + ".moved")
    os.rename(parent, moved)
    try:
        with pytest.raises(grpc.RpcError):
            node.csi.node.NodePublishVolume(request)  # the target is not there right now
    finally:
        os.rename(moved, parent)
    node.csi.node.NodePublishVolume(request)
    assert mount_count(target) == 1, f"{mount_count(target)} mounts stacked at {target}"
    teardown(node, vol.volume_id, staging, target)
