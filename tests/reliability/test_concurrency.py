"""Concurrent RPCs on one volume: serialized or ABORTED, never a double mount; limits hold."""

from __future__ import annotations

import os
import random
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from tests.reliability.conftest import Node, NodeFactory
from tests.reliability.crash import mount_entries_under, mount_points_under, stack_depth
from tests.support.background import Background
from tests.support.driver import clients, loop_devices_under
from tests.support.requests import block_cap, create, mount_cap

pytestmark = pytest.mark.integration

OK = grpc.StatusCode.OK
ABORTED = grpc.StatusCode.ABORTED
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def cap_for(flavour: str) -> pb.VolumeCapability:
    return block_cap() if flavour == "block" else mount_cap("ext4" if flavour == "ext4" else "")


def kind_for(flavour: str) -> str:
    return "directory" if flavour == "directory" else "image"


class MountWatch(Background):
    """Samples mountinfo in a loop and keeps the most entries seen at each watched path."""

    def __init__(self, points: list[str]) -> None:
        self.points = [os.path.realpath(p) for p in points]
        self.most: Counter[str] = Counter()
        super().__init__()

    def sample(self) -> None:
        rows = mount_entries_under("/")
        for point in self.points:
            self.most[point] = max(self.most[point], stack_depth(rows, point))

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()

    def finish(self) -> None:
        self.sample()

    def doubles(self) -> dict[str, int]:
        return {p: n for p, n in self.most.items() if n > 1}


def run_workers(worker: Callable[[int], None], threads: int) -> None:
    """worker(0) .. worker(threads - 1), each in a thread of its own; returns when all ended."""
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def storm(
    node: Node, calls: list[Callable[[], object]], threads: int, rounds: int, seed: int
) -> Counter[grpc.StatusCode]:
    """Run random calls from several threads (each with its own channel) and count the codes."""
    codes: Counter[grpc.StatusCode] = Counter()
    details: list[str] = []
    mutex = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        rng = random.Random(seed + index)  # noqa: S311 - a reproducible interleaving
        barrier.wait()
        for _ in range(rounds):
            call = rng.choice(calls)
            try:
                call()
                code = OK
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in (ABORTED, FAILED_PRECONDITION):
                    with mutex:
                        details.append(f"{code.name}: {exc.details()}")
            with mutex:
                codes[code] += 1

    run_workers(worker, threads)
    assert not details, f"answers other than OK/ABORTED/FAILED_PRECONDITION: {details[:5]}"
    return codes


@pytest.mark.parametrize("flavour", ["ext4", "block", "directory"])
def test_concurrent_stage_publish_unpublish_never_double_mounts(node: Node, flavour: str) -> None:
    cap = cap_for(flavour)
    vol = node.csi.controller.CreateVolume(
        create(f"pvc-storm-{flavour}", cap, kind=kind_for(flavour))
    ).volume
    staging = node.staging(f"storm-{flavour}")
    if flavour == "block":
        os.makedirs(staging, exist_ok=True)
    targets = [node.target(f"storm-{flavour}", pod=f"pod{i}") for i in range(3)]
    stubs = [clients(node.driver.channel()) for _ in range(6)]

    def stage(i: int) -> Callable[[], object]:
        return lambda: stubs[i].node.NodeStageVolume(
            pb.NodeStageVolumeRequest(
                volume_id=vol.volume_id, staging_target_path=staging, volume_capability=cap
            )
        )

    def publish(i: int, target: str) -> Callable[[], object]:
        return lambda: stubs[i].node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=vol.volume_id,
                staging_target_path=staging,
                target_path=target,
                volume_capability=cap,
            )
        )

    def unpublish(i: int, target: str) -> Callable[[], object]:
        return lambda: stubs[i].node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=target)
        )

    stage(0)()
    calls: list[Callable[[], object]] = []
    for i in range(len(stubs)):
        calls.append(stage(i))
        for t in targets:
            calls += [publish(i, t), publish(i, t), unpublish(i, t)]
    with MountWatch([*targets, staging]) as watch:
        codes = storm(node, calls, threads=len(stubs), rounds=40, seed=len(flavour))
    assert codes[OK] > 0
    assert codes[FAILED_PRECONDITION] == 0, f"a staged volume refused a call: {codes}"
    assert watch.doubles() == {}, f"double mounts seen: {watch.doubles()}"
    for t in targets:
        unpublish(0, t)()
        assert mount_points_under(os.path.realpath(t)) == []
    node.csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=staging)
    )
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))
    assert mount_points_under(str(node.kubelet.resolve())) == []
    assert loop_devices_under(str(node.driver.state_dir.resolve())) == []


def test_concurrent_unstage_with_publish_keeps_the_node_consistent(node: Node) -> None:
    """Unstage races publish: each call is OK, ABORTED or FAILED_PRECONDITION (published, or
    not staged), and afterwards no target is mounted without its staging mount below it."""
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-unstage-race", cap)).volume
    staging = node.staging("unstage-race")
    target = node.target("unstage-race")
    stubs = [clients(node.driver.channel()) for _ in range(6)]
    stage_req = pb.NodeStageVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=staging, volume_capability=cap
    )
    pub_req = pb.NodePublishVolumeRequest(
        volume_id=vol.volume_id,
        staging_target_path=staging,
        target_path=target,
        volume_capability=cap,
    )
    unpub_req = pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=target)
    unstage_req = pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=staging)
    calls: list[Callable[[], object]] = []
    for s in stubs:
        calls += [
            partial(s.node.NodeStageVolume, stage_req),
            partial(s.node.NodePublishVolume, pub_req),
            partial(s.node.NodeUnpublishVolume, unpub_req),
            partial(s.node.NodeUnstageVolume, unstage_req),
        ]
    with MountWatch([target, staging]) as watch:
        codes = storm(node, calls, threads=len(stubs), rounds=40, seed=99)
    assert codes[OK] > 0
    assert watch.doubles() == {}, f"double mounts seen: {watch.doubles()}"
    target_mounted = bool(mount_points_under(os.path.realpath(target)))
    staging_mounted = bool(mount_points_under(os.path.realpath(staging)))
    assert staging_mounted or not target_mounted, "published while its staging is gone"
    node.csi.node.NodeUnpublishVolume(unpub_req)
    node.csi.node.NodeUnstageVolume(unstage_req)
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))
    assert mount_points_under(str(node.kubelet.resolve())) == []
    assert loop_devices_under(str(node.driver.state_dir.resolve())) == []


def test_max_volumes_per_node_is_reported_and_enforced(node_factory: NodeFactory) -> None:
    node = node_factory("--max-volumes-per-node", "2")
    info = node.csi.node.NodeGetInfo(pb.NodeGetInfoRequest())
    assert info.max_volumes_per_node == 2
    cap = mount_cap("ext4")
    first = node.csi.controller.CreateVolume(create("pvc-max-1", cap)).volume
    node.csi.controller.CreateVolume(create("pvc-max-2", cap))
    with pytest.raises(grpc.RpcError) as info_err:
        node.csi.controller.CreateVolume(create("pvc-max-3", cap))
    assert info_err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max-volumes-per-node" in (info_err.value.details() or "")
    # A retry of an existing volume is not a new volume.
    again = node.csi.controller.CreateVolume(create("pvc-max-1", cap)).volume
    assert again.volume_id == first.volume_id
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=first.volume_id))
    node.csi.controller.CreateVolume(create("pvc-max-3", cap))


def test_max_volumes_per_node_holds_under_concurrent_creates(node_factory: NodeFactory) -> None:
    """Creates of different names race; the limit must still hold. (mkfs runs between the
    count check and the catalog insert, so the check must cover both.)"""
    limit = 3
    node = node_factory("--max-volumes-per-node", str(limit))
    cap = mount_cap("ext4")
    threads = 10
    barrier = threading.Barrier(threads)
    codes: Counter[grpc.StatusCode] = Counter()
    mutex = threading.Lock()

    def worker(i: int) -> None:
        stub = clients(node.driver.channel())
        barrier.wait()
        try:
            stub.controller.CreateVolume(create(f"pvc-race-{i}", cap))
            code = OK
        except grpc.RpcError as exc:
            code = exc.code()
        with mutex:
            codes[code] += 1

    run_workers(worker, threads)
    listed = node.csi.controller.ListVolumes(pb.ListVolumesRequest()).entries
    assert len(listed) <= limit, (
        f"{len(listed)} volumes exist on a node limited to {limit} (answers: {dict(codes)})"
    )
    assert codes[OK] == limit
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] == threads - limit


class LoopChurn(Background):
    """Attach and detach loop devices on a file of the test's own, as other software on a node
    does, until stopped; every device it attached is detached again on exit."""

    def __init__(self, backing: Path) -> None:
        backing.write_bytes(b"\0" * (1 << 20))
        self.backing = backing
        self.cycles = 0
        super().__init__()

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(
                ["losetup", "--find", "--show", str(self.backing)],
                capture_output=True,
                text=True,
                check=False,
            )
            dev = out.stdout.strip()
            if dev:
                subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
                self.cycles += 1

    def finish(self) -> None:
        for dev in loop_devices_under(str(self.backing)):
            subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


def test_loop_devices_detached_meanwhile_do_not_fail_other_volumes(
    node: Node, tmp_path: Path
) -> None:
    """Unstage and delete look up their loop devices by reading every device's backing_file in
    sysfs; a device detached during that scan (by another volume's unstage, or anything else on
    the node) must not turn into INTERNAL for an unrelated volume."""
    failures: list[str] = []
    mutex = threading.Lock()
    stop = threading.Event()

    def cycle(index: int) -> None:
        stub = clients(node.driver.channel())
        n = 0
        while not stop.is_set():
            n += 1
            name = f"churn-{index}-{n}"
            try:
                vol = stub.controller.CreateVolume(create(f"pvc-{name}", block_cap())).volume
                staging = node.staging(name)
                os.makedirs(staging, exist_ok=True)
                stub.node.NodeStageVolume(
                    pb.NodeStageVolumeRequest(
                        volume_id=vol.volume_id,
                        staging_target_path=staging,
                        volume_capability=block_cap(),
                    )
                )
                stub.node.NodeUnstageVolume(
                    pb.NodeUnstageVolumeRequest(
                        volume_id=vol.volume_id, staging_target_path=staging
                    )
                )
                stub.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))
            except grpc.RpcError as exc:
                with mutex:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                return

    with LoopChurn(tmp_path / "churn.img") as churn:
        workers = [threading.Thread(target=cycle, args=(i,)) for i in range(3)]
        for w in workers:
            w.start()
        deadline = threading.Event()
        deadline.wait(8)
        stop.set()
        for w in workers:
            w.join()
    assert churn.cycles > 10, "the loop churn did not run"
    assert failures == [], f"volume operations failed while loop devices came and went: {failures}"
