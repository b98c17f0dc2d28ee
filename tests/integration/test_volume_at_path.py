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

from csi_hostpath_selinux import loopdev
from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux.backends import BACKENDS, Backend, BackendEnv
from csi_hostpath_selinux.backends import _files as backend_files
from csi_hostpath_selinux.backends import image as image_backend
from csi_hostpath_selinux.config import DriverConfig
from csi_hostpath_selinux.group_snapshots import GroupSnapshots
from csi_hostpath_selinux.locks import OperationLocks
from csi_hostpath_selinux.models import AccessMode, AccessType, Capability, Staging
from csi_hostpath_selinux.mountinfo import find_mount
from csi_hostpath_selinux.mounts import LinuxMounter
from csi_hostpath_selinux.snapshots import SnapshotManager
from csi_hostpath_selinux.state import Catalog
from csi_hostpath_selinux.volumes import CapacityRange, VolumeManager
from tests.support.driver import Clients, DriverProcess, cleanup_under
from tests.support.freezing import is_frozen, thaw_if_frozen
from tests.support.requests import MIB, block_cap, create, mount_cap

pytestmark = pytest.mark.integration


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()


def kubelet_paths(driver: DriverProcess, name: str) -> tuple[str, str]:
    kubelet = driver.root.parent / "kubelet"
    staging = kubelet / "plugins" / f"{name}-globalmount"
    pod = kubelet / "pods" / f"uid-{name}"
    pod.mkdir(parents=True, exist_ok=True)
    return str(staging), str(pod / "mount")


def stage(csi: Clients, vol: str, staging: str, cap: pb.VolumeCapability) -> None:
    csi.node.NodeStageVolume(
        pb.NodeStageVolumeRequest(volume_id=vol, staging_target_path=staging, volume_capability=cap)
    )


def publish(csi: Clients, vol: str, staging: str, target: str, cap: pb.VolumeCapability) -> None:
    csi.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=vol, staging_target_path=staging, target_path=target, volume_capability=cap
        )
    )


def unpublish(csi: Clients, vol: str, target: str) -> None:
    csi.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=target))


def unstage_and_delete(csi: Clients, vol: str, staging: str) -> None:
    csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=staging)
    )
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol))


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
    assert code_of(lambda: stats(csi, block, block_staging)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: expand(csi, block, block_staging)) == grpc.StatusCode.NOT_FOUND
    unpublish(csi, fs, block_staging)
    unstage_and_delete(csi, fs, fs_staging)
    unstage_and_delete(csi, block, block_staging)


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
    assert code_of(lambda: stats(csi, a, target)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: expand(csi, a, target)) == grpc.StatusCode.NOT_FOUND
    assert stats(csi, b, target).usage[0].total > 32 * MIB, "B's own stats still answer"
    unpublish(csi, b, target)
    unpublish(csi, a, target)
    unstage_and_delete(csi, b, b_staging)
    unstage_and_delete(csi, a, a_staging)


# snapshots with a symlinked kubelet directory, in process


class LinkedKubelet:
    """The domain objects over a kubelet directory that is a symlink (which paths.trusted()
    allows: the operator's own link), with ext4 volumes really mounted below it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        real = root / "var-lib-kubelet"
        (real / "plugins").mkdir(parents=True)
        self.kubelet = root / "kubelet"
        self.kubelet.symlink_to(real)
        self.config = DriverConfig(
            node_id="test-node", state_dir=root / "state", kubelet_dir=str(self.kubelet)
        )
        self.config.state_dir.mkdir(parents=True)
        self.catalog = Catalog(self.config.catalog_path)
        self.mounter = LinuxMounter()
        env = BackendEnv(self.config.state_dir, self.mounter)
        self.backends: dict[str, Backend] = {k: cls(env) for k, cls in BACKENDS.items()}
        self.locks = OperationLocks()
        self.volumes = VolumeManager(self.config, self.catalog, self.backends, self.locks)
        self.snapshots = SnapshotManager(self.config, self.catalog, self.backends, self.locks)
        self.groups = GroupSnapshots(self.catalog, self.backends, self.locks, self.snapshots)
        self.staged: list[str] = []

    def mounted_volume(self, name: str) -> tuple[str, str]:
        """An ext4 volume mounted at a staging path under the symlinked kubelet directory."""
        cap = Capability(
            access_type=AccessType.MOUNT, access_mode=AccessMode.SINGLE_NODE_WRITER, fs_type="ext4"
        )
        vol = self.volumes.create(name, CapacityRange(32 * MIB), [cap], {}, {}, None)
        staging = self.kubelet / "plugins" / f"{name}-globalmount"
        staging.mkdir()
        image = self.backends["image"]
        assert isinstance(image, image_backend.ImageBackend)
        device = loopdev.attach(str(image.image_path(vol.id))).path
        self.mounter.mount(device, str(staging), "ext4", [])
        self.staged.append(os.path.realpath(staging))
        self.catalog.put_staging(
            Staging(
                volume_id=vol.id,
                staging_path=str(staging),
                label=None,
                flags=(),
                device=device,
                access_type=AccessType.MOUNT,
            )
        )
        return vol.id, str(staging)


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[LinkedKubelet]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (loop devices and mounts)")
    env = LinkedKubelet(tmp_path)
    try:
        yield env
    finally:
        for staging in env.staged:
            thaw_if_frozen(staging)
        env.catalog.close()
        cleanup_under(tmp_path)


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
