"""The node rebooted while pods used volumes: the driver was killed with everything staged and
published, the kernel forgot every mount and loop device, the disks (state directory, kubelet's
directory) were kept. Then kubelet either comes back for the volumes (NodeStage and NodePublish
again, with the same arguments) or never does (the pods were deleted while the node was down).

A reboot is played here the way the kernel sees it: SIGKILL of the driver, then every mount of the
volume undone and its loop devices detached, then a new driver process on the same state
directory. (The host kernel has SELinux off, so no context= here: the labelled variant runs in the
SELinux VM node, tests/cluster/selinux/test_selinux_node_reboot.py.)
"""

from __future__ import annotations

import ctypes
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux.mountinfo import find_mount, read_mountinfo
from tests.support.driver import Clients, DriverProcess, clients, loop_devices_under
from tests.support.kubelet import publish, stage, teardown
from tests.support.requests import MIB, block_cap, create, mount_cap

pytestmark = pytest.mark.integration

libc = ctypes.CDLL(None, use_errno=True)
SIZES = {"ext4": 64 * MIB, "xfs": 320 * MIB}


def kubelet_paths(driver: DriverProcess, name: str) -> tuple[str, str]:
    """kubelet's staging path and a pod's target path for the volume `name`."""
    kubelet = driver.root.parent / "kubelet"
    staging = kubelet / "plugins" / "kubernetes.io" / "csi" / "hostpath" / name / "globalmount"
    pod = kubelet / "pods" / f"uid-{name}" / "volumes" / "kubernetes.io~csi" / name
    staging.parent.mkdir(parents=True, exist_ok=True)
    pod.mkdir(parents=True, exist_ok=True)
    return str(staging), str(pod / "mount")


def node_records(driver: DriverProcess) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The catalog's stagings and publications, read the way an operator would (read-only)."""
    db = sqlite3.connect(f"file:{driver.state_dir / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        stagings = db.execute("SELECT volume_id, staging_path FROM stagings").fetchall()
        pubs = db.execute("SELECT volume_id, target_path FROM publications").fetchall()
    finally:
        db.close()
    return [tuple(r) for r in stagings], [tuple(r) for r in pubs]


def reboot(driver: DriverProcess, *mount_points: str) -> None:
    """What a reboot does to the driver's node: the process dies without a word, the kernel
    forgets the mounts and the loop devices; the directories on disk stay."""
    driver.stop(signal.SIGKILL)
    for point in mount_points:
        while find_mount(point) is not None:
            assert libc.umount2(point.encode(), 0) == 0, os.strerror(ctypes.get_errno())
    for dev in loop_devices_under(os.path.realpath(driver.root)):
        subprocess.run(["losetup", "-d", dev], check=True, capture_output=True)
    assert loop_devices_under(os.path.realpath(driver.root)) == []
    driver.start()


def assert_nothing_left(driver: DriverProcess, vol_id: str, *mount_points: str) -> None:
    assert node_records(driver) == ([], [])
    assert [p for p in mount_points if find_mount(p) is not None] == []
    assert loop_devices_under(os.path.realpath(driver.root)) == []
    assert not (driver.state_dir / "volumes" / f"{vol_id}.img").exists()


@pytest.mark.parametrize("fs_type", list(SIZES))
def test_kubelet_stages_and_publishes_again_after_a_reboot(
    csi: Clients, driver: DriverProcess, fs_type: str
) -> None:
    cap = mount_cap(fs_type, ("noatime",))
    vol = csi.controller.CreateVolume(create(f"pvc-reboot-{fs_type}", cap, SIZES[fs_type])).volume
    staging, target = kubelet_paths(driver, f"reboot-{fs_type}")
    stage(csi, vol.volume_id, staging, cap)
    publish(csi, vol.volume_id, staging, target, cap)
    Path(target, "data").write_text("written before the reboot")
    os.sync()

    reboot(driver, target, staging)
    csi = clients(driver.channel())
    assert find_mount(staging) is None and find_mount(target) is None
    assert node_records(driver) == ([], []), "the new driver keeps records of mounts that are gone"

    # kubelet after the boot: the same NodeStage and NodePublish as before it.
    stage(csi, vol.volume_id, staging, cap)
    staged = find_mount(staging)
    assert staged is not None, "NodeStage answered OK without mounting"
    assert staged.fs_type == fs_type and "noatime" in staged.mount_options
    publish(csi, vol.volume_id, staging, target, cap)
    published = find_mount(target)
    assert published is not None, "NodePublish answered OK without mounting"
    assert (published.major, published.minor) == (staged.major, staged.minor)
    assert Path(target, "data").read_text() == "written before the reboot"
    assert node_records(driver) == (
        [(vol.volume_id, staging)],
        [(vol.volume_id, target)],
    )
    stats = csi.node.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id=vol.volume_id, volume_path=target)
    )
    assert stats.usage[0].total > 0 and stats.usage[0].used > 0
    # One mount each: the staging and the target, nothing stacked.
    same_device = [
        e.mount_point
        for e in read_mountinfo()
        if (e.major, e.minor) == (staged.major, staged.minor)
    ]
    assert sorted(same_device) == sorted([staging, target])

    teardown(csi, vol.volume_id, staging, target)
    assert_nothing_left(driver, vol.volume_id, staging, target)


def test_volumes_kubelet_never_comes_back_for_leave_no_records(
    csi: Clients, driver: DriverProcess
) -> None:
    """The pods were deleted while the node was down: kubelet cleans up its orphaned pod
    directories (NodeUnpublish and NodeUnstage of paths nothing is mounted at) or never calls at
    all; either way no staging or publication record outlives the boot, and the volume can be
    deleted."""
    cap = mount_cap("ext4")
    vols = [
        csi.controller.CreateVolume(create(f"pvc-gone-{i}", cap)).volume.volume_id for i in (1, 2)
    ]
    places = [kubelet_paths(driver, f"gone-{i}") for i in (1, 2)]
    for vol_id, (staging, target) in zip(vols, places, strict=True):
        stage(csi, vol_id, staging, cap)
        publish(csi, vol_id, staging, target, cap)

    reboot(driver, *(p for pair in places for p in reversed(pair)))
    csi = clients(driver.channel())
    assert node_records(driver) == ([], [])
    # Volume 1: kubelet tears down what it remembers; nothing is mounted there any more.
    (staging, target), vol_id = places[0], vols[0]
    teardown(csi, vol_id, staging, target)
    # Volume 2: kubelet never calls; the claim is deleted.
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vols[1]))
    for vol_id, (staging, target) in zip(vols, places, strict=True):
        assert_nothing_left(driver, vol_id, staging, target)
    assert list(csi.controller.ListVolumes(pb.ListVolumesRequest()).entries) == []


def test_block_volume_is_attached_again_after_a_reboot(csi: Clients, driver: DriverProcess) -> None:
    """A block staging records its loop device; after a reboot that device node may well exist
    (the kernel creates loop0-7 at boot, another volume may have taken the number) without
    serving this volume's image. The staging is gone and NodeStage attaches the image again."""
    cap = block_cap()
    vol = csi.controller.CreateVolume(create("pvc-reboot-block", cap, 32 * MIB)).volume
    staging, target = kubelet_paths(driver, "reboot-block")
    stage(csi, vol.volume_id, staging, cap)
    publish(csi, vol.volume_id, staging, target, cap)
    with open(target, "r+b") as dev:
        dev.seek(MIB)
        dev.write(b"block data before the reboot")
        os.fsync(dev.fileno())
    reboot(driver, target)
    csi = clients(driver.channel())
    assert node_records(driver) == ([], []), "a block staging outlived its loop device"

    stage(csi, vol.volume_id, staging, cap)
    publish(csi, vol.volume_id, staging, target, cap)
    with open(target, "rb") as dev:
        dev.seek(MIB)
        assert dev.read(28) == b"block data before the reboot"
    assert len(loop_devices_under(os.path.realpath(driver.root))) == 1
    teardown(csi, vol.volume_id, staging, target)
    assert node_records(driver) == ([], [])
    assert loop_devices_under(os.path.realpath(driver.root)) == []
    assert find_mount(target) is None
