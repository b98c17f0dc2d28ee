"""Labels that must survive what happens to a volume after it was staged with context="L".

- online growth (ControllerExpandVolume, then NodeExpandVolume on the published volume) of ext4
  and xfs image volumes: the filesystem grows while mounted and the label stays L1;
- the driver killed with SIGKILL and started again: the staged label is still known, so a pod
  with another label is refused and a pod with the staged label is served;
- a snapshot of a labelled volume restored into a new volume staged with L2 carries L2.

In this VM the init's processes have CAP_SYS_RESOURCE, which ext4's online resize needs (the CI
host's root lacks it), so the ext4 case really grows a mounted filesystem here.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from e2e_lib import (
    KUBELET_DIR,
    L1,
    L2,
    Driver,
    Kubelet,
    MiB,
    Volume,
    context_flag,
    has_context,
    label_of,
    mounts_at,
    pod_can_create,
    pod_can_read,
    refusal,
    run,
)

from csi_hostpath_selinux._proto import csi_pb2 as pb


def filesystem_bytes(path: str) -> int:
    """The size of the filesystem mounted at path (statvfs), printed with df's view."""
    st = os.statvfs(path)
    size = st.f_blocks * st.f_frsize
    print(f"statvfs of {path}: {size} bytes ({st.f_blocks} blocks of {st.f_frsize})")
    print(run(["df", "-B1", "--output=source,fstype,size,avail,target", path]).rstrip())
    return size


def staging_path_of(kubelet: Kubelet, volume_id: str) -> str:
    """Where kubelet stages a filesystem volume (what Kubelet.create computes)."""
    digest = hashlib.sha256(volume_id.encode()).hexdigest()
    return f"{KUBELET_DIR}/plugins/kubernetes.io/csi/{kubelet.driver.name}/{digest}/globalmount"


def assert_mount_labelled(path: str, label: str) -> None:
    """mountinfo of path carries context=label and the mount's root reads label."""
    (entry,) = mounts_at(path)
    assert has_context(entry, label), f"context={label} missing from {entry.super_options}"
    assert label_of(path) == label


@pytest.mark.parametrize(
    ("fs_type", "size", "grown"),
    [("ext4", 64 * MiB, 160 * MiB), ("xfs", 320 * MiB, 704 * MiB)],
)
def test_online_expansion_keeps_the_label(
    kubelet: Kubelet, fs_type: str, size: int, grown: int
) -> None:
    volume = kubelet.create(kubelet.mount_capability(fs_type), {"kind": "image"}, size=size)
    flags = [context_flag(L1)]
    kubelet.stage(volume, flags)
    target = kubelet.target_for(volume)
    kubelet.publish(volume, target, flags)
    assert_mount_labelled(volume.staging_path, L1)
    assert_mount_labelled(target, L1)
    before = filesystem_bytes(target)
    data = Path(target, "before-growth")
    data.write_text("written before the volume grew\n")

    answer = kubelet.driver.controller.ControllerExpandVolume(
        pb.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id,
            capacity_range=pb.CapacityRange(required_bytes=grown),
            volume_capability=volume.capability,
        ),
        timeout=120,
    )
    needed = answer.node_expansion_required
    print(f"ControllerExpandVolume: {answer.capacity_bytes} bytes, node expansion {needed}")
    assert answer.capacity_bytes >= grown
    assert needed, "an image volume's filesystem must grow on the node"

    node_answer = kubelet.driver.node.NodeExpandVolume(
        pb.NodeExpandVolumeRequest(
            volume_id=volume.volume_id,
            volume_path=target,
            staging_target_path=volume.staging_path,
            capacity_range=pb.CapacityRange(required_bytes=grown),
            volume_capability=kubelet.with_flags(volume.capability, flags),
        ),
        timeout=120,
    )
    print(f"NodeExpandVolume: {node_answer.capacity_bytes} bytes")
    after = filesystem_bytes(target)
    # Metadata takes a share of the new space: ask for at least 80 % of what was added.
    assert after - before >= (grown - size) * 8 // 10, (
        f"{fs_type} did not grow online: {before} -> {after} bytes, asked {size} -> {grown}"
    )
    assert filesystem_bytes(volume.staging_path) == after

    # The label is the same after the growth: mountinfo, the roots, the old and a new file.
    assert_mount_labelled(volume.staging_path, L1)
    assert_mount_labelled(target, L1)
    assert label_of(str(data)) == L1
    assert data.read_text() == "written before the volume grew\n"
    # The new space is usable: a file larger than the whole old filesystem fits.
    big = Path(target, "uses-new-space")
    chunk = b"\xa5" * MiB
    with big.open("wb") as handle:
        for _ in range(before // MiB + 8):
            handle.write(chunk)
    print(f"wrote {big.stat().st_size} bytes to {big} after growth")
    assert label_of(str(big)) == L1
    assert pod_can_read(L1, str(data)) and pod_can_create(L1, target)
    assert not pod_can_read(L2, str(data))

    big.unlink()
    kubelet.unpublish(volume, target)
    kubelet.unstage(volume)
    kubelet.delete(volume)


# --- driver restart ---------------------------------------------------------------------------

RESTART_SOCKET = "/run/csi-restart/csi.sock"
RESTART_STATE = "/var/lib/csi-hostpath-selinux-restart"
RESTART_LOG = "/results/driver-restart.log"


def start_restart_driver() -> Driver:
    return Driver(socket=RESTART_SOCKET, state_dir=RESTART_STATE, log_path=RESTART_LOG)


@pytest.fixture
def restartable() -> Iterator[Kubelet]:
    """A driver of its own (socket, state directory, log) that the test may kill and restart.

    At the end the volumes are torn down by whatever driver runs then (one is started when the
    test left none running) and that driver is stopped.
    """
    fake = Kubelet(start_restart_driver())
    yield fake
    if fake.driver.process.poll() is not None:
        fake.driver.stop()
        fake.driver = start_restart_driver()
    errors = list(fake.cleanup())
    fake.driver.stop()
    for line in errors:
        print(line)
    assert not errors, "tearing the test's volumes down failed:\n" + "\n".join(errors)


def test_staged_label_survives_sigkill(restartable: Kubelet) -> None:
    kubelet = restartable
    volume = kubelet.create(kubelet.mount_capability("ext4"), {"kind": "image"})
    flags = [context_flag(L1)]
    kubelet.stage(volume, flags)
    pod_a = kubelet.target_for(volume)
    kubelet.publish(volume, pod_a, flags)
    Path(pod_a, "before-kill").write_text("written before the driver was killed\n")

    old = kubelet.driver
    print(f"killing the driver (pid {old.process.pid}) with SIGKILL")
    old.process.kill()
    old.process.wait(timeout=30)
    print(f"driver exited with {old.process.returncode}")
    assert old.process.returncode == -9
    old.stop()  # closes the channel and the log handle; the process is gone already
    # The mounts belong to the kernel, not to the driver process: they are still there.
    assert_mount_labelled(volume.staging_path, L1)
    assert_mount_labelled(pod_a, L1)

    kubelet.driver = start_restart_driver()
    assert kubelet.driver.process.pid != old.process.pid

    # A pod with another label is refused by the restarted driver, which names both labels.
    pod_b = kubelet.target_for(volume)
    error = refusal(lambda: kubelet.publish(volume, pod_b, [context_flag(L2)]))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert volume.volume_id in error.details
    assert L1 in error.details and L2 in error.details
    assert not mounts_at(pod_b), "the refused publish left a mount behind"
    # So is a second stage with another label.
    error = refusal(lambda: kubelet.stage(volume, [context_flag(L2)]))
    assert error.code in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION)
    assert L1 in error.details and L2 in error.details

    # A pod with the staged label is served, and sees what was written before the kill.
    pod_c = kubelet.target_for(volume)
    kubelet.publish(volume, pod_c, flags)
    assert_mount_labelled(pod_c, L1)
    written = os.path.join(pod_c, "before-kill")
    assert Path(written).read_text() == "written before the driver was killed\n"
    assert pod_can_read(L1, written)
    assert not pod_can_read(L2, written)

    for target in (pod_a, pod_c):
        kubelet.unpublish(volume, target)
        assert not mounts_at(target)
    kubelet.unstage(volume)
    assert not mounts_at(volume.staging_path)
    kubelet.delete(volume)


# --- restore from a snapshot ------------------------------------------------------------------


@pytest.fixture
def snapshots(kubelet: Kubelet) -> Iterator[list[str]]:
    """Snapshot ids the test made; deleted after the test (before its volumes are torn down)."""
    made: list[str] = []
    yield made
    errors = []
    for snapshot_id in made:
        try:
            kubelet.driver.controller.DeleteSnapshot(
                pb.DeleteSnapshotRequest(snapshot_id=snapshot_id), timeout=120
            )
            print(f"deleted snapshot {snapshot_id}")
        except grpc.RpcError as exc:
            errors.append(f"DeleteSnapshot {snapshot_id}: {exc.code().name}: {exc.details()}")
    assert not errors, "\n".join(errors)


def test_restored_snapshot_gets_the_new_pods_label(kubelet: Kubelet, snapshots: list[str]) -> None:
    capability = kubelet.mount_capability("ext4")
    source = kubelet.create(capability, {"kind": "image"})
    kubelet.stage(source, [context_flag(L1)])
    pod_a = kubelet.target_for(source)
    kubelet.publish(source, pod_a, [context_flag(L1)])
    content = f"data of the source volume {uuid.uuid4()}\n"
    Path(pod_a, "data").write_text(content)
    Path(pod_a, "dir").mkdir()
    Path(pod_a, "dir", "nested").write_text(content)
    assert label_of(os.path.join(pod_a, "data")) == L1

    snap = kubelet.driver.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name=f"snap-{uuid.uuid4()}", source_volume_id=source.volume_id),
        timeout=120,
    ).snapshot
    snapshots.append(snap.snapshot_id)
    print(f"snapshot {snap.snapshot_id} of {source.volume_id}: ready {snap.ready_to_use}")
    assert snap.ready_to_use

    pv_name = f"pvc-{uuid.uuid4()}"
    request = pb.CreateVolumeRequest(
        name=pv_name,
        capacity_range=pb.CapacityRange(required_bytes=64 * MiB),
        volume_capabilities=[capability],
        parameters={"kind": "image"},
    )
    request.volume_content_source.snapshot.snapshot_id = snap.snapshot_id
    created = kubelet.driver.controller.CreateVolume(request, timeout=120).volume
    print(f"restored {snap.snapshot_id} into {created.volume_id}")
    assert created.content_source.snapshot.snapshot_id == snap.snapshot_id
    restored = Volume(
        volume_id=created.volume_id,
        pv_name=pv_name,
        context=dict(created.volume_context),
        capability=capability,
        staging_path=staging_path_of(kubelet, created.volume_id),
    )
    kubelet.volumes.append(restored)

    kubelet.stage(restored, [context_flag(L2)])
    pod_b = kubelet.target_for(restored)
    kubelet.publish(restored, pod_b, [context_flag(L2)])
    assert_mount_labelled(restored.staging_path, L2)
    assert_mount_labelled(pod_b, L2)
    for name in ("data", "dir", "dir/nested"):
        assert label_of(os.path.join(pod_b, name)) == L2, f"{name} of the restore is not L2"
    assert Path(pod_b, "data").read_text() == content
    assert Path(pod_b, "dir", "nested").read_text() == content
    # The new pod uses the restore; the source's pod cannot; the source keeps its own label.
    assert pod_can_read(L2, os.path.join(pod_b, "dir", "nested")) and pod_can_create(L2, pod_b)
    assert not pod_can_read(L1, os.path.join(pod_b, "data"))
    assert_mount_labelled(pod_a, L1)
    assert pod_can_read(L1, os.path.join(pod_a, "data"))
