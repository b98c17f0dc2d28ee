""" "Is this volume mounted at this path" has one meaning (mounttable.MountView.volume_at), with
real mounts: stats and expansion of a path where another volume is mounted answer NOT_FOUND
(never INTERNAL, never the other volume's numbers), and with a symlinked kubelet directory a
snapshot of a live ext4 volume still freezes it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux.backends import _files as backend_files
from csi_hostpath_selinux.backends import image as image_backend
from csi_hostpath_selinux.mountinfo import find_mount
from tests.support.codes import refusal_code
from tests.support.domain import InProcessDriver, in_process
from tests.support.driver import Clients, DriverProcess
from tests.support.freezing import is_frozen
from tests.support.kubelet import kubelet_paths, publish, stage, teardown, unpublish
from tests.support.requests import MIB, block_cap, create, mount_cap

pytestmark = pytest.mark.integration


def stats(csi: Clients, vol: str, path: str) -> pb.NodeGetVolumeStatsResponse:
    return csi.node.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id=vol, volume_path=path)
    )


def expand(csi: Clients, vol: str, path: str) -> pb.NodeExpandVolumeResponse:
    return csi.node.NodeExpandVolume(
        pb.NodeExpandVolumeRequest(
            volume_id=vol,
            volume_path=path,
            capacity_range=pb.CapacityRange(required_bytes=64 * MIB),
        )
    )


def test_block_volume_at_another_volumes_mount_is_not_found(
    csi: Clients, driver: DriverProcess
) -> None:
    """The fuzz test's finding: a block volume's staging path carrying another volume's bind.
    Stats read the block size of a directory there (ENOTTY: INTERNAL) before the fix."""
    block = csi.controller.CreateVolume(create("pvc-blk", block_cap(), 32 * MIB)).volume.volume_id
    other = csi.controller.CreateVolume(create("pvc-fs", mount_cap("ext4"), 32 * MIB))
    fs = other.volume.volume_id
    block_staging, _ = kubelet_paths(driver, "blk")
    fs_staging, _ = kubelet_paths(driver, "fs")
    os.makedirs(block_staging)  # kubelet makes a block volume's staging directory
    stage(csi, block, block_staging, block_cap())
    stage(csi, fs, fs_staging, mount_cap("ext4"))
    # The filesystem volume published onto the block volume's staging directory.
    publish(csi, fs, fs_staging, block_staging, mount_cap("ext4"))
    assert find_mount(block_staging) is not None
    assert refusal_code(lambda: stats(csi, block, block_staging)) == grpc.StatusCode.NOT_FOUND
    assert refusal_code(lambda: expand(csi, block, block_staging)) == grpc.StatusCode.NOT_FOUND
    unpublish(csi, fs, block_staging)
    teardown(csi, fs, fs_staging)
    teardown(csi, block, block_staging)


def test_filesystem_volume_never_reports_another_volumes_usage(
    csi: Clients, driver: DriverProcess
) -> None:
    """Volume A's publication record outlives its mount (unmounted behind the driver's back) and
    volume B is published at the same target: stats of A there are NOT_FOUND, not B's usage."""
    cap = mount_cap("ext4")
    a = csi.controller.CreateVolume(create("pvc-a", cap, 32 * MIB)).volume.volume_id
    b = csi.controller.CreateVolume(create("pvc-b", cap, 64 * MIB)).volume.volume_id
    a_staging, target = kubelet_paths(driver, "a")
    b_staging, _ = kubelet_paths(driver, "b")
    stage(csi, a, a_staging, cap)
    stage(csi, b, b_staging, cap)
    publish(csi, a, a_staging, target, cap)
    assert stats(csi, a, target).usage[0].total > 0
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.umount2(target.encode(), 0) == 0, os.strerror(ctypes.get_errno())
    publish(csi, b, b_staging, target, cap)
    assert refusal_code(lambda: stats(csi, a, target)) == grpc.StatusCode.NOT_FOUND
    assert refusal_code(lambda: expand(csi, a, target)) == grpc.StatusCode.NOT_FOUND
    assert stats(csi, b, target).usage[0].total > 32 * MIB, "B's own stats still answer"
    unpublish(csi, b, target)
    unpublish(csi, a, target)
    teardown(csi, b, b_staging)
    teardown(csi, a, a_staging)


# snapshots with a symlinked kubelet directory, in process


class LinkedKubelet(InProcessDriver):
    """The domain objects over a kubelet directory that is a symlink (which paths.trusted()
    allows: the operator's own link), with ext4 volumes really mounted below it."""

    def __init__(self, root: Path) -> None:
        real = root / "var-lib-kubelet"
        (real / "plugins").mkdir(parents=True)
        self.kubelet = root / "kubelet"
        self.kubelet.symlink_to(real)
        super().__init__(root, kubelet_dir=str(self.kubelet))

    def staging_path(self, name: str) -> Path:
        return self.kubelet / "plugins" / f"{name}-globalmount"


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[LinkedKubelet]:
    with in_process(LinkedKubelet, tmp_path) as env:
        yield env


def record_freezes(monkeypatch: pytest.MonkeyPatch, stagings: list[str]) -> list[list[bool]]:
    """Make every image copy note whether each staged filesystem is frozen while it runs."""
    real_copy = backend_files.copy_sparse  # what image.py imported; patched there below
    seen: list[list[bool]] = []

    def copy(source: Path, dest: Path) -> None:
        seen.append([is_frozen(s) for s in stagings])
        real_copy(source, dest)

    monkeypatch.setattr(image_backend, "copy_sparse", copy)
    return seen


def test_snapshot_freezes_a_volume_staged_below_a_symlinked_kubelet_dir(
    linked: LinkedKubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol, staging = linked.mounted_volume("a")
    assert linked.snapshots.mount_point(vol) == staging
    seen = record_freezes(monkeypatch, [staging])
    linked.snapshots.create("snap", vol)
    assert seen == [[True]], "the live ext4 volume is frozen while it is copied"
    assert not is_frozen(staging)


def test_group_snapshot_freezes_members_below_a_symlinked_kubelet_dir(
    linked: LinkedKubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    vols = [linked.mounted_volume(n) for n in ("a", "b")]
    seen = record_freezes(monkeypatch, [s for _, s in vols])
    view = linked.groups.create("g", [v for v, _ in vols], {})
    assert view.ready and len(view.snapshots) == 2
    assert seen == [[True, True], [True, True]], "every member is frozen for every copy"
    assert [is_frozen(s) for _, s in vols] == [False, False]
