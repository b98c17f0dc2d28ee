"""Volume group snapshots with real images, loop devices and mounts.

Over gRPC against the real driver: data written before the group snapshot (and never synced:
the freeze must flush it) is in every restored volume, data written after it is not. In
process, with the domain class: a copy that fails still thaws every frozen filesystem and
leaves no snapshot behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux import freeze
from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux._proto import csi_pb2_grpc as rpc
from csi_hostpath_selinux.backends import _files as backend_files
from csi_hostpath_selinux.backends import image as image_backend
from csi_hostpath_selinux.errors import FailedPrecondition, Internal, Unavailable
from tests.support.codes import refusal_code
from tests.support.domain import InProcessDriver, in_process
from tests.support.driver import Clients, DriverProcess, clients, running_driver
from tests.support.freezing import is_frozen
from tests.support.kubelet import kubelet_paths, publish, stage, teardown
from tests.support.requests import MIB, block_cap, create, mount_cap

pytestmark = pytest.mark.integration


# over gRPC


def from_snapshot(
    name: str, snapshot_id: str, cap: pb.VolumeCapability, **params: str
) -> pb.CreateVolumeRequest:
    request = create(name, cap, 64 * MIB, **params)
    request.volume_content_source.snapshot.snapshot_id = snapshot_id
    return request


def test_group_snapshot_of_two_mounted_volumes(csi: Clients, driver: DriverProcess) -> None:
    groups = rpc.GroupControllerStub(driver.channel())
    cap = mount_cap("ext4")
    volumes: dict[str, tuple[str, str, str]] = {}
    for name in ("db", "wal"):
        vol_id = csi.controller.CreateVolume(create(f"pvc-{name}", cap)).volume.volume_id
        staging, target = kubelet_paths(driver, name)
        stage(csi, vol_id, staging, cap)
        publish(csi, vol_id, staging, target, cap)
        volumes[name] = (vol_id, staging, target)
        # Not synced: only the freeze flushes this into the image before the copy.
        Path(target, "data").write_bytes(f"before {name}".encode() * 1000)
    ids = [v[0] for v in volumes.values()]

    group = groups.CreateVolumeGroupSnapshot(
        pb.CreateVolumeGroupSnapshotRequest(name="group-1", source_volume_ids=ids)
    ).group_snapshot
    for name, (_, _, target) in volumes.items():
        Path(target, "data").write_bytes(f"after {name}".encode())
        Path(target, "later").write_bytes(b"written after the group snapshot")
        os.sync()

    assert group.group_snapshot_id.startswith("group-")
    assert group.ready_to_use
    assert group.creation_time.seconds > 0
    assert sorted(s.source_volume_id for s in group.snapshots) == sorted(ids)
    for snap in group.snapshots:
        assert snap.group_snapshot_id == group.group_snapshot_id
        assert snap.ready_to_use and snap.size_bytes == 64 * MIB
    snap_ids = [s.snapshot_id for s in group.snapshots]

    # Idempotent by name and by set of volumes (in any order); a different set is a conflict.
    again = groups.CreateVolumeGroupSnapshot(
        pb.CreateVolumeGroupSnapshotRequest(name="group-1", source_volume_ids=ids[::-1])
    ).group_snapshot
    assert again.group_snapshot_id == group.group_snapshot_id
    assert sorted(s.snapshot_id for s in again.snapshots) == sorted(snap_ids)
    assert (
        refusal_code(
            lambda: groups.CreateVolumeGroupSnapshot(
                pb.CreateVolumeGroupSnapshotRequest(name="group-1", source_volume_ids=ids[:1])
            )
        )
        == grpc.StatusCode.ALREADY_EXISTS
    )
    assert (
        refusal_code(
            lambda: groups.CreateVolumeGroupSnapshot(
                pb.CreateVolumeGroupSnapshotRequest(
                    name="group-2", source_volume_ids=[ids[0], "vol-" + "0" * 32]
                )
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )

    # Members are ordinary snapshots too.
    listed = csi.controller.ListSnapshots(pb.ListSnapshotsRequest()).entries
    assert sorted(e.snapshot.snapshot_id for e in listed) == sorted(snap_ids)

    got = groups.GetVolumeGroupSnapshot(
        pb.GetVolumeGroupSnapshotRequest(
            group_snapshot_id=group.group_snapshot_id, snapshot_ids=snap_ids[::-1]
        )
    ).group_snapshot
    assert got.group_snapshot_id == group.group_snapshot_id and got.ready_to_use
    assert (
        refusal_code(
            lambda: groups.GetVolumeGroupSnapshot(
                pb.GetVolumeGroupSnapshotRequest(
                    group_snapshot_id=group.group_snapshot_id, snapshot_ids=snap_ids[:1]
                )
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )

    # Restore every member into a new volume: the data from before, nothing from after.
    for snap in group.snapshots:
        name = next(n for n, v in volumes.items() if v[0] == snap.source_volume_id)
        restored = csi.controller.CreateVolume(
            from_snapshot(f"restore-{name}", snap.snapshot_id, cap)
        ).volume
        staging, target = kubelet_paths(driver, f"restore-{name}")
        stage(csi, restored.volume_id, staging, cap)
        publish(csi, restored.volume_id, staging, target, cap)
        try:
            assert Path(target, "data").read_bytes() == f"before {name}".encode() * 1000
            assert not Path(target, "later").exists()
        finally:
            teardown(csi, restored.volume_id, staging, target)

    # Delete: a wrong list is refused; then the group and its snapshots go, idempotently.
    delete = pb.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id, snapshot_ids=snap_ids
    )
    wrong = pb.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id, snapshot_ids=[*snap_ids, "snap-" + "0" * 32]
    )
    assert (
        refusal_code(lambda: groups.DeleteVolumeGroupSnapshot(wrong))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    groups.DeleteVolumeGroupSnapshot(delete)
    groups.DeleteVolumeGroupSnapshot(delete)
    for snap_id in snap_ids:
        assert (
            refusal_code(
                partial(csi.controller.GetSnapshot, pb.GetSnapshotRequest(snapshot_id=snap_id))
            )
            == grpc.StatusCode.NOT_FOUND
        )
    assert not list((driver.state_dir / "snapshots").iterdir())
    assert (
        refusal_code(
            lambda: groups.GetVolumeGroupSnapshot(
                pb.GetVolumeGroupSnapshotRequest(
                    group_snapshot_id=group.group_snapshot_id, snapshot_ids=snap_ids
                )
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    for vol_id, staging, target in volumes.values():
        teardown(csi, vol_id, staging, target)


def test_members_that_cannot_be_frozen_must_be_idle(csi: Clients, driver: DriverProcess) -> None:
    """A staged block volume or directory cannot be frozen: refused; idle ones are copied."""
    groups = rpc.GroupControllerStub(driver.channel())
    fs_cap, raw_cap = mount_cap("ext4"), block_cap()
    fs_vol = csi.controller.CreateVolume(create("pvc-fs", fs_cap)).volume.volume_id
    raw_vol = csi.controller.CreateVolume(create("pvc-raw", raw_cap)).volume.volume_id
    dir_vol = csi.controller.CreateVolume(
        create("pvc-dir", mount_cap(), kind="directory")
    ).volume.volume_id
    (driver.state_dir / "volumes" / dir_vol / "file").write_bytes(b"directory data")
    staging, target = kubelet_paths(driver, "raw")
    stage(csi, raw_vol, staging, raw_cap)
    publish(csi, raw_vol, staging, target, raw_cap)
    request = pb.CreateVolumeGroupSnapshotRequest(
        name="mixed", source_volume_ids=[fs_vol, raw_vol, dir_vol]
    )
    with pytest.raises(grpc.RpcError) as info:
        groups.CreateVolumeGroupSnapshot(request)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raw_vol in (info.value.details() or "")
    assert not list((driver.state_dir / "snapshots").glob("*")), "no snapshot may be left"
    csi.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=raw_vol, target_path=target)
    )
    csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=raw_vol, staging_target_path=staging)
    )

    group = groups.CreateVolumeGroupSnapshot(request).group_snapshot
    assert len(group.snapshots) == 3 and group.ready_to_use
    dir_snap = next(s.snapshot_id for s in group.snapshots if s.source_volume_id == dir_vol)
    restored = csi.controller.CreateVolume(
        from_snapshot("restore-dir", dir_snap, mount_cap(), kind="directory")
    ).volume.volume_id
    assert (driver.state_dir / "volumes" / restored / "file").read_bytes() == b"directory data"
    groups.DeleteVolumeGroupSnapshot(
        pb.DeleteVolumeGroupSnapshotRequest(
            group_snapshot_id=group.group_snapshot_id,
            snapshot_ids=[s.snapshot_id for s in group.snapshots],
        )
    )
    for vol_id in (fs_vol, raw_vol, dir_vol, restored):
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol_id))


def test_request_validation(csi: Clients, driver: DriverProcess) -> None:
    groups = rpc.GroupControllerStub(driver.channel())
    caps = groups.GroupControllerGetCapabilities(pb.GroupControllerGetCapabilitiesRequest())
    assert [c.rpc.type for c in caps.capabilities] == [
        pb.GroupControllerServiceCapability.RPC.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT
    ]
    plugin = csi.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest())
    services = {c.service.type for c in plugin.capabilities if c.HasField("service")}
    assert pb.PluginCapability.Service.GROUP_CONTROLLER_SERVICE in services
    vol = csi.controller.CreateVolume(create("pvc-x", mount_cap("ext4"))).volume.volume_id
    invalid = [
        pb.CreateVolumeGroupSnapshotRequest(source_volume_ids=[vol]),
        pb.CreateVolumeGroupSnapshotRequest(name="g"),
        pb.CreateVolumeGroupSnapshotRequest(name="g", source_volume_ids=[vol, vol]),
        pb.CreateVolumeGroupSnapshotRequest(
            name="g", source_volume_ids=[vol], parameters={"speed": "fast"}
        ),
    ]
    for request in invalid:
        assert (
            refusal_code(partial(groups.CreateVolumeGroupSnapshot, request))
            == grpc.StatusCode.INVALID_ARGUMENT
        )
    missing = "group-" + "0" * 32
    assert (
        refusal_code(
            lambda: groups.GetVolumeGroupSnapshot(
                pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=missing)
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    groups.DeleteVolumeGroupSnapshot(pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=missing))
    assert (
        refusal_code(
            lambda: groups.DeleteVolumeGroupSnapshot(pb.DeleteVolumeGroupSnapshotRequest())
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol))


# in process: failures while frozen


@pytest.fixture
def in_process_env(tmp_path: Path) -> Iterator[InProcessDriver]:
    with in_process(InProcessDriver, tmp_path) as env:
        yield env


def test_a_failing_copy_still_thaws_every_filesystem(
    in_process_env: InProcessDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    vols = [in_process_env.mounted_volume(n) for n in ("a", "b")]
    real_copy = backend_files.copy_sparse  # what image.py imported; patched there below
    seen: list[list[bool]] = []

    def copy_then_fail(source: Path, dest: Path) -> None:
        seen.append([is_frozen(staging) for _, staging in vols])
        if len(seen) == 2:
            raise Internal("copying the volume image failed: the disk is on fire")
        real_copy(source, dest)

    monkeypatch.setattr(image_backend, "copy_sparse", copy_then_fail)
    with pytest.raises(Internal, match="on fire"):
        in_process_env.groups.create("g", [v for v, _ in vols], {})
    assert seen == [[True, True], [True, True]], "both filesystems are frozen for every copy"
    assert [is_frozen(staging) for _, staging in vols] == [False, False]
    for _, staging in vols:
        Path(staging, "writable").write_bytes(b"thawed")
    snapshots_dir = in_process_env.config.state_dir / "snapshots"
    assert not list(snapshots_dir.glob("*")), "the first member's copy is removed"
    assert in_process_env.catalog.all_snapshots() == []
    assert in_process_env.catalog.group_snapshot_by_name("g") is None

    # The same request succeeds once copies work again, and thaws too; it takes the same locks
    # (the group's name, every member), so it also shows the failed create released them all
    # (a lock still held would make it raise Aborted).
    monkeypatch.setattr(image_backend, "copy_sparse", real_copy)
    view = in_process_env.groups.create("g", [v for v, _ in vols], {})
    assert view.ready and len(view.snapshots) == 2
    assert [is_frozen(staging) for _, staging in vols] == [False, False]


def test_a_failing_freeze_thaws_those_already_frozen(
    in_process_env: InProcessDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = in_process_env.mounted_volume("a")
    second = in_process_env.mounted_volume("b")
    # Freeze the second one ourselves: the driver's FIFREEZE of it then fails with EBUSY.
    fd = os.open(second[1], os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, freeze.FIFREEZE, 0)
        try:
            with pytest.raises(Unavailable, match="is already frozen"):
                in_process_env.groups.create("g", [first[0], second[0]], {})
            assert not is_frozen(first[1]), "the first filesystem was thawed"
        finally:
            fcntl.ioctl(fd, freeze.FITHAW, 0)
    finally:
        os.close(fd)
    assert in_process_env.catalog.all_snapshots() == []


def test_an_uncopyable_kind_is_refused_before_anything_freezes(
    in_process_env: InProcessDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol, staging = in_process_env.mounted_volume("a")
    monkeypatch.setattr(type(in_process_env.backends["image"]), "snapshot_suffix", "")
    with pytest.raises(FailedPrecondition, match="cannot be snapshotted"):
        in_process_env.groups.create("g", [vol], {})
    assert not is_frozen(staging)


def test_a_group_member_cannot_be_deleted_alone(tmp_path: Path) -> None:
    with running_driver(tmp_path / "drv") as d:
        csi = clients(d.channel())
        cap = mount_cap("ext4")
        vols = [csi.controller.CreateVolume(create(f"pvc-g{i}", cap)).volume for i in range(2)]
        group = csi.group.CreateVolumeGroupSnapshot(
            pb.CreateVolumeGroupSnapshotRequest(
                name="grp", source_volume_ids=[v.volume_id for v in vols]
            )
        ).group_snapshot
        member = group.snapshots[0]
        listed = csi.controller.ListSnapshots(
            pb.ListSnapshotsRequest(snapshot_id=member.snapshot_id)
        )
        assert listed.entries[0].snapshot.group_snapshot_id == group.group_snapshot_id
        with pytest.raises(grpc.RpcError) as err:
            csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=member.snapshot_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert group.group_snapshot_id in (err.value.details() or "")
        csi.group.DeleteVolumeGroupSnapshot(
            pb.DeleteVolumeGroupSnapshotRequest(
                group_snapshot_id=group.group_snapshot_id,
                snapshot_ids=[s.snapshot_id for s in group.snapshots],
            )
        )
        assert list(csi.controller.ListSnapshots(pb.ListSnapshotsRequest()).entries) == []
        for v in vols:
            csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=v.volume_id))
    assert not d.leaked
