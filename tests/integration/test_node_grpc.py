"""The driver over gRPC with real loop devices and mounts, as kubelet drives it (SELinux off here)."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import stat
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux.backends.image import has_sys_resource
from csi_hostpath_selinux.mountinfo import find_mount, read_mountinfo
from tests.support.driver import Clients, DriverProcess, clients, running_driver
from tests.support.kubelet import kubelet_paths, publish, published, stage, teardown
from tests.support.requests import L1, MIB, RWOP, block_cap, context_flag, create, mount_cap

pytestmark = pytest.mark.integration


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
def test_filesystem_volume_lifecycle(csi: Clients, driver: DriverProcess, fs_type: str) -> None:
    cap = mount_cap(fs_type, ("noatime",))
    size = 400 * MIB if fs_type == "xfs" else 64 * MIB
    vol = csi.controller.CreateVolume(create(f"pvc-{fs_type}", cap, size)).volume
    assert vol.capacity_bytes == size
    assert dict(vol.accessible_topology[0].segments) == {
        "topology.hostpath-selinux.csi/node": "test-node"
    }
    staging, target = kubelet_paths(driver, fs_type)
    stage(csi, vol.volume_id, staging, cap)
    stage(csi, vol.volume_id, staging, cap)  # idempotent
    publish(csi, vol.volume_id, staging, target, cap)
    publish(csi, vol.volume_id, staging, target, cap)  # idempotent
    entry = find_mount(target)
    assert entry is not None and entry.fs_type == fs_type
    assert "noatime" in entry.mount_options
    Path(target, "data").write_bytes(b"hello")
    assert Path(staging, "data").read_bytes() == b"hello"
    ro_target = str(Path(target).parent.parent / "uid-ro" / "mount")
    Path(ro_target).parent.mkdir()
    publish(csi, vol.volume_id, staging, ro_target, cap, ro=True)
    with pytest.raises(OSError) as err:
        Path(ro_target, "other").write_bytes(b"x")
    assert err.value.errno == 30  # EROFS
    stats = csi.node.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id=vol.volume_id, volume_path=target)
    )
    assert stats.usage[0].total > 0 and stats.usage[1].unit == pb.VolumeUsage.INODES
    # A second unpublish of what is gone succeeds, as the spec asks.
    csi.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=target)
    )
    teardown(csi, vol.volume_id, staging, target, ro_target)
    assert not os.path.exists(target), "the target directory is removed at unpublish"
    assert find_mount(staging) is None


def test_context_request_on_a_node_without_selinux_is_refused(
    csi: Clients, driver: DriverProcess
) -> None:
    cap = mount_cap("ext4", (context_flag(L1),), RWOP)
    vol = csi.controller.CreateVolume(create("pvc-label", cap)).volume
    staging, _ = kubelet_paths(driver, "label")
    code, message = code_of(lambda: stage(csi, vol.volume_id, staging, cap))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "SELinux is disabled on node test-node" in message
    assert L1 in message
    assert find_mount(staging) is None, "nothing may be mounted without the label kubelet asked for"
    assert not any(
        e.source.startswith("/dev/loop") and str(driver.root) in e.root for e in read_mountinfo()
    )
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_directory_volume_refuses_a_label_with_the_reason(
    csi: Clients, driver: DriverProcess
) -> None:
    cap = mount_cap("", (context_flag(L1),))
    vol = csi.controller.CreateVolume(create("pvc-dir", cap, kind="directory")).volume
    staging, _ = kubelet_paths(driver, "dir")
    code, message = code_of(lambda: stage(csi, vol.volume_id, staging, cap))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "bind mount cannot carry its own SELinux context" in message
    assert "seLinuxChangePolicy: Recursive" in message
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ('context="system_u:object_r:container_file_t:s0:c1,c2', "quote"),
        ('context="system_u:object_r"', "context"),
        ("bind", "bind"),
    ],
)
def test_malformed_flags_are_invalid_argument(
    csi: Clients, driver: DriverProcess, flag: str, expected: str
) -> None:
    good = mount_cap("ext4")
    vol = csi.controller.CreateVolume(create(f"pvc-bad-{abs(hash(flag))}", good)).volume
    staging, _ = kubelet_paths(driver, "bad")
    code, message = code_of(lambda: stage(csi, vol.volume_id, staging, mount_cap("ext4", (flag,))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in message
    assert not os.path.exists(staging), "a refused request changes nothing on disk"
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_snapshot_restore_and_clone_hold_the_data(csi: Clients, driver: DriverProcess) -> None:
    cap = mount_cap("ext4")
    vol, staging, target = published(csi, driver, "src", cap)
    payload = os.urandom(1 << 20)
    Path(target, "before").write_bytes(payload)
    snap = csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name="snap-1", source_volume_id=vol.volume_id)
    ).snapshot
    assert snap.ready_to_use and snap.size_bytes == vol.capacity_bytes
    Path(target, "after").write_bytes(b"written after the snapshot")
    clone_req = create("pvc-clone", cap)
    clone_req.volume_content_source.volume.volume_id = vol.volume_id
    restore_req = create("pvc-restore", cap)
    restore_req.volume_content_source.snapshot.snapshot_id = snap.snapshot_id
    teardown(csi, vol.volume_id, staging, target)  # the source is gone; the snapshot stays usable
    restored = csi.controller.CreateVolume(restore_req).volume
    assert restored.content_source.snapshot.snapshot_id == snap.snapshot_id
    staging2, target2 = kubelet_paths(driver, "restore")
    stage(csi, restored.volume_id, staging2, cap)
    publish(csi, restored.volume_id, staging2, target2, cap)
    got = Path(target2, "before").read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert not Path(target2, "after").exists()
    teardown(csi, restored.volume_id, staging2, target2)
    code, _ = code_of(lambda: csi.controller.CreateVolume(clone_req))
    assert code == grpc.StatusCode.NOT_FOUND, "cloning a deleted volume names it missing"
    listed = csi.controller.ListSnapshots(pb.ListSnapshotsRequest(snapshot_id=snap.snapshot_id))
    assert [e.snapshot.snapshot_id for e in listed.entries] == [snap.snapshot_id]
    csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))


def test_online_expansion_grows_the_mounted_filesystem(csi: Clients, driver: DriverProcess) -> None:
    cap = mount_cap("xfs")
    vol, staging, target = published(csi, driver, "grow", cap, 320 * MIB)
    before = os.statvfs(target)
    grown = csi.controller.ControllerExpandVolume(
        pb.ControllerExpandVolumeRequest(
            volume_id=vol.volume_id, capacity_range=pb.CapacityRange(required_bytes=640 * MIB)
        )
    )
    assert grown.capacity_bytes == 640 * MIB and grown.node_expansion_required
    csi.node.NodeExpandVolume(
        pb.NodeExpandVolumeRequest(
            volume_id=vol.volume_id, volume_path=target, staging_target_path=staging
        )
    )
    after = os.statvfs(target)
    assert after.f_blocks * after.f_frsize > 1.8 * before.f_blocks * before.f_frsize
    teardown(csi, vol.volume_id, staging, target)


def test_ext4_online_expansion_says_what_it_needs(csi: Clients, driver: DriverProcess) -> None:
    cap = mount_cap("ext4")
    vol, staging, target = published(csi, driver, "grow4", cap)
    before = os.statvfs(target).f_blocks
    request = pb.NodeExpandVolumeRequest(
        volume_id=vol.volume_id,
        volume_path=target,
        staging_target_path=staging,
        capacity_range=pb.CapacityRange(required_bytes=128 * MIB),
    )
    if has_sys_resource():
        assert csi.node.NodeExpandVolume(request).capacity_bytes == 128 * MIB
        assert os.statvfs(target).f_blocks > before
    else:
        code, message = code_of(lambda: csi.node.NodeExpandVolume(request))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "CAP_SYS_RESOURCE" in message
    teardown(csi, vol.volume_id, staging, target)


def test_block_volume_is_the_loop_device(csi: Clients, driver: DriverProcess) -> None:
    cap = block_cap()
    vol, staging, target = published(csi, driver, "block", cap, 32 * MIB)
    assert stat.S_ISBLK(os.stat(target).st_mode)
    with open(target, "r+b") as dev:
        dev.seek(5 * MIB)
        dev.write(b"block data")
    stats = csi.node.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id=vol.volume_id, volume_path=target)
    )
    assert stats.usage[0].total == 32 * MIB
    teardown(csi, vol.volume_id, staging, target)


def test_inline_ephemeral_volume_lives_with_the_pod(csi: Clients, driver: DriverProcess) -> None:
    _, target = kubelet_paths(driver, "inline")
    handle = "csi-0123456789abcdef"
    csi.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=handle,
            target_path=target,
            volume_capability=mount_cap(),
            volume_context={"csi.storage.k8s.io/ephemeral": "true", "size": "32Mi"},
        )
    )
    assert find_mount(target) is not None
    listed = csi.controller.ListVolumes(pb.ListVolumesRequest())
    assert [e.volume.capacity_bytes for e in listed.entries] == [32 * MIB]
    csi.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=handle, target_path=target)
    )
    assert find_mount(target) is None
    assert list(csi.controller.ListVolumes(pb.ListVolumesRequest()).entries) == []


def test_state_survives_kill_9(csi: Clients, driver: DriverProcess) -> None:
    cap = mount_cap("ext4")
    vol = csi.controller.CreateVolume(create("pvc-kill", cap)).volume
    staging, target = kubelet_paths(driver, "kill")
    stage(csi, vol.volume_id, staging, cap)
    driver.stop(signal.SIGKILL)
    driver.start()
    again = clients(driver.channel())
    publish(again, vol.volume_id, staging, target, cap)
    assert find_mount(target) is not None
    teardown(again, vol.volume_id, staging, target)


def test_health_reports_what_happened_behind_the_drivers_back(
    csi: Clients, driver: DriverProcess
) -> None:
    cap = mount_cap("ext4")
    vol = csi.controller.CreateVolume(create("pvc-health", cap)).volume
    staging, _ = kubelet_paths(driver, "health")
    stage(csi, vol.volume_id, staging, cap)
    healthy = csi.node.NodeGetVolumeHealth(pb.NodeGetVolumeHealthRequest(volume_id=vol.volume_id))
    assert list(healthy.volume_health.health_statuses) == []
    os.system(f"umount {staging}")  # noqa: S605 - the test plays an admin unmounting by hand
    sick = csi.node.NodeGetVolumeHealth(pb.NodeGetVolumeHealthRequest(volume_id=vol.volume_id))
    assert [h.reason for h in sick.volume_health.health_statuses] == ["StagingMountMissing"]
    csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=staging)
    )
    image = driver.state_dir / "volumes" / f"{vol.volume_id}.img"
    image.unlink()
    lost = csi.controller.ControllerGetVolumeHealth(
        pb.ControllerGetVolumeHealthRequest(volume_id=vol.volume_id)
    )
    entry = lost.volume_health.health_statuses[0]
    assert (entry.status, entry.reason) == (pb.DATA_LOSS, "ImageMissing")
    listed = csi.controller.ControllerListVolumeHealth(pb.ControllerListVolumeHealthRequest())
    assert [e.volume_id for e in listed.entries] == [vol.volume_id]
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_secrets_never_reach_the_log(csi: Clients, driver: DriverProcess) -> None:
    request = create("pvc-secret", mount_cap("ext4"))
    request.secrets["password"] = "hunter2-secret-value"
    vol = csi.controller.CreateVolume(request).volume
    csi.controller.DeleteVolume(
        pb.DeleteVolumeRequest(volume_id=vol.volume_id, secrets={"token": "s3cr3t-token"})
    )
    log = driver.log()
    assert "CreateVolume request" in log, "the debug log records requests"
    assert "hunter2-secret-value" not in log and "s3cr3t-token" not in log
    assert "<redacted>" in log


def test_fsgroup_is_applied_by_the_driver(csi: Clients, driver: DriverProcess) -> None:
    caps = csi.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest()).capabilities
    assert pb.NodeServiceCapability.RPC.VOLUME_MOUNT_GROUP in [c.rpc.type for c in caps]
    cap = mount_cap("ext4")
    cap.mount.volume_mount_group = "4321"
    vol = csi.controller.CreateVolume(create("pvc-fsgroup", mount_cap("ext4"))).volume
    staging, target = kubelet_paths(driver, "fsgroup")
    stage(csi, vol.volume_id, staging, cap)
    publish(csi, vol.volume_id, staging, target, cap)
    root = os.stat(target)
    assert root.st_gid == 4321 and root.st_mode & stat.S_ISGID
    Path(target, "new").write_bytes(b"x")
    assert os.stat(Path(target, "new")).st_gid == 4321, "new files inherit the pod's group"
    teardown(csi, vol.volume_id, staging, target)


def test_get_capacity_honours_the_configured_maximum(tmp_path: Path) -> None:
    with running_driver(tmp_path / "cap", extra_args=("--capacity", "1Gi")) as d:
        csi = clients(d.channel())
        assert csi.controller.GetCapacity(pb.GetCapacityRequest()).available_capacity == 1024 * MIB
        vol = csi.controller.CreateVolume(create("pvc-cap", mount_cap("ext4"), 256 * MIB)).volume
        assert csi.controller.GetCapacity(pb.GetCapacityRequest()).available_capacity == 768 * MIB
        other = pb.GetCapacityRequest(
            accessible_topology=pb.Topology(
                segments={"topology.hostpath-selinux.csi/node": "other"}
            )
        )
        assert csi.controller.GetCapacity(other).available_capacity == 0
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))
    assert not d.leaked


def test_xfs_restore_mounts_beside_its_mounted_source(csi: Clients, driver: DriverProcess) -> None:
    cap = mount_cap("xfs")
    vol, staging, target = published(csi, driver, "xsrc", cap, 320 * MIB)
    Path(target, "f").write_text("xfs data")
    snap = csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name="xsnap", source_volume_id=vol.volume_id)
    ).snapshot
    req = create("pvc-xrestore", cap, 320 * MIB)
    req.volume_content_source.snapshot.snapshot_id = snap.snapshot_id
    restored = csi.controller.CreateVolume(req).volume
    staging2, target2 = kubelet_paths(driver, "xrestore")
    stage(csi, restored.volume_id, staging2, cap)  # same filesystem UUID as the mounted source
    publish(csi, restored.volume_id, staging2, target2, cap)
    assert Path(target2, "f").read_text() == "xfs data"
    teardown(csi, restored.volume_id, staging2, target2)
    teardown(csi, vol.volume_id, staging, target)
    csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))


def test_orphan_snapshot_files_are_removed_at_start(csi: Clients, driver: DriverProcess) -> None:
    snapshots = driver.state_dir / "snapshots"
    snapshots.mkdir(exist_ok=True)
    orphan = snapshots / ("snap-" + "a" * 32 + ".img")
    orphan.write_bytes(b"left by a kill between the copy and the catalog write")
    (driver.state_dir / "intents").mkdir(exist_ok=True)
    (driver.state_dir / "intents" / orphan.name.removesuffix(".img")).touch()
    unrelated = snapshots / "notes.txt"
    unrelated.write_text("not the driver's")
    driver.stop(signal.SIGKILL)
    driver.start()
    assert not orphan.exists()
    assert unrelated.exists(), "only files the driver names are ever removed"
    unrelated.unlink()


def test_read_only_block_publish_cannot_write(csi: Clients, driver: DriverProcess) -> None:
    cap = block_cap()
    vol = csi.controller.CreateVolume(create("pvc-roblock", cap, 16 * MIB)).volume
    staging, target = kubelet_paths(driver, "roblock")
    stage(csi, vol.volume_id, staging, cap)
    publish(csi, vol.volume_id, staging, target, cap, ro=True)
    with pytest.raises(OSError), open(target, "r+b") as dev:
        dev.write(b"must not land")
        dev.flush()
        os.fsync(dev.fileno())
    with open(target, "rb") as dev:
        assert dev.read(13) == bytes(13)
    teardown(csi, vol.volume_id, staging, target)


def test_metrics_count_rpcs_and_selinux_outcomes(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with running_driver(tmp_path / "m", extra_args=("--metrics-address", f"127.0.0.1:{port}")) as d:
        csi = clients(d.channel())
        csi.identity.Probe(pb.ProbeRequest())
        code, _ = code_of(lambda: csi.controller.DeleteVolume(pb.DeleteVolumeRequest()))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    assert 'csi_hostpath_selinux_rpc_duration_seconds_count{method="Probe",code="OK"}' in text
    assert 'method="DeleteVolume",code="INVALID_ARGUMENT"' in text
    for counter in ("labelled_mounts", "label_conflicts", "label_verification_failures"):
        assert f"csi_hostpath_selinux_selinux_{counter}_total 0" in text
    assert not d.leaked


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
def test_restore_and_clone_into_a_larger_volume_fill_it(
    csi: Clients, driver: DriverProcess, fs_type: str
) -> None:
    """Found by Kubernetes' provisioning suite on the real cluster: a claim larger than its
    snapshot got the snapshot's filesystem size. The pod must see the size it asked for."""
    cap = mount_cap(fs_type)
    small, large = 320 * MIB, 640 * MIB
    vol, staging, target = published(csi, driver, f"small-{fs_type}", cap, small)
    Path(target, "data").write_text("kept")
    snap = csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name=f"snap-small-{fs_type}", source_volume_id=vol.volume_id)
    ).snapshot  # taken while mounted (frozen): the copy's journal needs a replay
    restore_req = create(f"pvc-large-{fs_type}", cap, large)
    restore_req.volume_content_source.snapshot.snapshot_id = snap.snapshot_id
    clone_req = create(f"pvc-clone-large-{fs_type}", cap, large)
    clone_req.volume_content_source.volume.volume_id = vol.volume_id
    grown = [
        csi.controller.CreateVolume(restore_req).volume,
        csi.controller.CreateVolume(clone_req).volume,
    ]
    for new in grown:
        assert new.capacity_bytes == large
        staging2, target2 = kubelet_paths(driver, new.volume_id)
        stage(csi, new.volume_id, staging2, cap)
        publish(csi, new.volume_id, staging2, target2, cap)
        st = os.statvfs(target2)
        # Larger than the whole source volume (xfs keeps its internal log out of f_blocks).
        assert st.f_blocks * st.f_frsize > small, (
            f"the {fs_type} filesystem is {st.f_blocks * st.f_frsize} bytes on a {large}-byte volume"
        )
        assert Path(target2, "data").read_text() == "kept"
        teardown(csi, new.volume_id, staging2, target2)
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=new.volume_id))
    teardown(csi, vol.volume_id, staging, target)
    csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))
    assert not list((driver.state_dir / "work").glob("grow-*"))
