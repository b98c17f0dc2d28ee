"""The state directory under an unlucky operator: a lost catalog, a second driver, a full disk.

Each test sets up what an operator or a crash really leaves (a deleted or emptied catalog, a
-wal file gone after kill -9, two driver processes on one directory, a state directory with no
free space) and checks that no volume is lost and the driver says what happened in one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux import intents
from csi_hostpath_selinux._proto import csi_pb2 as pb
from tests.reliability.conftest import Node, NodeFactory
from tests.reliability.crash import mount_count
from tests.support.codes import code_of
from tests.support.driver import (
    Clients,
    DriverProcess,
    cleanup_under,
    clients,
    loop_devices_under,
    running_driver,
)
from tests.support.kubelet import publish, stage
from tests.support.requests import MIB, create, mount_cap

pytestmark = pytest.mark.integration


def refused_start(node: Node) -> str:
    """Start the driver again; it must exit non-zero. Returns its log of this start."""
    before = len(node.driver.log_path.read_bytes())
    with pytest.raises(RuntimeError, match="the driver exited with 3"):
        node.driver.start()
    node.driver.proc = None
    return node.driver.log_path.read_bytes()[before:].decode(errors="replace")


def refusal_line(log: str) -> str:
    lines = [line for line in log.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, f"expected one line saying why the driver refused to start:\n{log}"
    assert "Traceback" not in log, f"a traceback instead of a clear line:\n{log}"
    return lines[0]


def files(state: Path) -> set[str]:
    return {
        p.name
        for d in ("volumes", "snapshots")
        if (state / d).is_dir()
        for p in (state / d).iterdir()
    }


def volume_and_snapshot(node: Node, name: str) -> tuple[str, str]:
    vol = node.csi.controller.CreateVolume(create(name, mount_cap("ext4"))).volume
    snap = node.csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name=f"snap-{name}", source_volume_id=vol.volume_id)
    ).snapshot
    return vol.volume_id, snap.snapshot_id


def drop_catalog(state: Path, how: str) -> None:
    catalog = state / "catalog.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{catalog}{suffix}").unlink(missing_ok=True)
    if how == "deleted":
        catalog.unlink()
    else:
        catalog.write_bytes(b"")


@pytest.mark.parametrize("how", ["deleted", "empty"])
def test_a_lost_catalog_never_deletes_volumes(node: Node, how: str) -> None:
    """A deleted or 0-byte catalog.sqlite used to open as a new, empty catalog, and start-up
    reconciliation then deleted every image and snapshot as an orphan."""
    vol_id, snap_id = volume_and_snapshot(node, f"lost-{how}")
    state = node.driver.state_dir
    before = files(state)
    assert f"{vol_id}.img" in before and f"{snap_id}.img" in before
    node.driver.stop()
    drop_catalog(state, how)
    line = refusal_line(refused_start(node))
    assert "catalog.sqlite" in line and "is new or empty" in line and "Restore" in line, line
    assert files(state) == before, "volume or snapshot files were removed"
    # Still refused on the next try: the refusal is not a one-off that a restart clears.
    refusal_line(refused_start(node))
    assert files(state) == before


def test_a_lost_wal_never_deletes_the_volumes_it_recorded(node: Node) -> None:
    """kill -9, then the -wal file is lost (a file-level backup that skipped it): the last
    committed transactions are gone from the catalog, and their volumes looked like orphans."""
    old_vol, _ = volume_and_snapshot(node, "checkpointed")
    node.driver.stop()
    db = sqlite3.connect(node.driver.state_dir / "catalog.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all that came before is in the main file
    db.close()
    node.driver.start()
    new_vol = node.csi.controller.CreateVolume(create("only-in-wal", mount_cap("ext4"))).volume
    state = node.driver.state_dir
    # The create is finished once its row is synced (at most 0.25 s after the reply) and its
    # intent is gone. Before that, a catalog without the row (a power cut, or this lost WAL)
    # means the create is undone: its storage, never mounted, is removed (test_intents.py).
    deadline = time.monotonic() + 10
    while intents.intents(state) and time.monotonic() < deadline:
        time.sleep(0.05)
    node.driver.stop(signal.SIGKILL)
    wal = state / "catalog.sqlite-wal"
    assert wal.stat().st_size > 0, "the test needs the last create to live in the WAL only"
    wal.unlink()
    (state / "catalog.sqlite-shm").unlink(missing_ok=True)
    before = files(state)
    line = refusal_line(refused_start(node))
    assert f"{new_vol.volume_id}.img" in line and "does not list 1" in line, line
    assert files(state) == before, "volume or snapshot files were removed"
    assert f"{old_vol}.img" in before and f"{new_vol.volume_id}.img" in before


def test_a_catalog_from_another_state_dir_is_refused(node_factory: NodeFactory) -> None:
    first, second = node_factory(), node_factory()
    volume_and_snapshot(first, "a")
    volume_and_snapshot(second, "b")
    first.driver.stop()
    second.driver.stop()
    before = files(second.driver.state_dir)
    catalog = second.driver.state_dir / "catalog.sqlite"
    catalog.write_bytes((first.driver.state_dir / "catalog.sqlite").read_bytes())
    line = refusal_line(refused_start(second))
    assert "another node's or an older copy" in line, line
    assert files(second.driver.state_dir) == before


def test_a_second_driver_on_the_same_state_dir_waits_and_touches_nothing(
    node: Node, tmp_path: Path
) -> None:
    """Two drivers on one --state-dir (a DaemonSet update with maxSurge) used to both serve, and
    the second one's start-up reconciliation acted on the first one's work in flight."""
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("first", cap)).volume
    staging = node.staging("first")
    stage(node.csi, vol.volume_id, staging, cap)
    second = DriverProcess(
        tmp_path / "second",
        extra_args=("--state-dir", str(node.driver.state_dir), "--kubelet-dir", str(node.kubelet)),
    )
    started: list[BaseException | None] = []

    def start_second() -> None:
        try:
            second.start(timeout=120)
            started.append(None)
        except BaseException as exc:  # reported by the main thread
            started.append(exc)

    thread = threading.Thread(target=start_second, daemon=True)
    thread.start()
    try:
        second.wait_for_log("waiting for it to exit")
        # While it waits, the first driver keeps working, and the second serves nothing.
        for i in range(3):
            extra = node.csi.controller.CreateVolume(create(f"while-waiting-{i}", cap)).volume
            node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=extra.volume_id))
        assert not second.socket.exists(), "the second driver serves beside the first"
        assert "reconciliation" not in second.log(), (
            "the second driver reconciled the first's state"
        )
        assert started == []
        assert node.driver.stop() == 0
        thread.join(60)
        assert started == [None], f"the second driver did not take over: {started}"
        # It took over the first's volume as it was: still staged, nothing rolled back.
        csi = clients(second.channel())
        vols = csi.controller.ListVolumes(pb.ListVolumesRequest()).entries
        assert [e.volume.volume_id for e in vols] == [vol.volume_id]
        assert mount_count(str(Path(staging).resolve())) == 1
        csi.node.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=staging)
        )
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))
    finally:
        second.stop()
        thread.join(5)


def fill(directory: Path, name: str) -> int:
    """Write into directory/name until the filesystem is full; return the bytes written."""
    written = 0
    chunk = b"\xa5" * (256 * 1024)
    with open(directory / name, "ab", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    with contextlib.suppress(OSError), open(directory / name, "ab", buffering=0) as f:
        while f.write(b"\xa5" * 4096):
            written += 4096
    return written


def storage_reasons(csi: Clients) -> set[str]:
    health = csi.node.NodeGetStorageHealth(pb.NodeGetStorageHealthRequest())
    return {h.reason for h in health.backend_health}


@contextlib.contextmanager
def tmpfs(path: Path, size: str, test_root: Path) -> Iterator[Path]:
    """A tmpfs of size at path; at the end everything below test_root is unmounted and
    detached (twice: the tmpfs stays busy until the loop devices on its files are gone)."""
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        cleanup_under(test_root)
        cleanup_under(test_root)


def test_a_second_driver_waiting_for_the_state_dir_stops_on_sigterm(
    node: Node, tmp_path: Path
) -> None:
    """A DaemonSet update gives up on the new pod while the old one still runs: SIGTERM ends
    the waiting driver at once (it has not started serving), and the running one goes on."""
    second = DriverProcess(
        tmp_path / "second", extra_args=("--state-dir", str(node.driver.state_dir))
    )
    second.spawn()
    try:
        second.wait_for_log("waiting for it to exit")
        assert second.proc is not None
        second.proc.send_signal(signal.SIGTERM)
        code = second.proc.wait(10)
    finally:
        second.stop(signal.SIGKILL)
    assert code == -signal.SIGTERM, second.log()
    assert not second.socket.exists()
    assert "reconciliation" not in second.log()
    vol = node.csi.controller.CreateVolume(create("after-the-second", mount_cap("ext4"))).volume
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_a_full_state_dir_keeps_unstage_working_and_the_driver_startable(
    tmp_path: Path,
) -> None:
    """A full state directory used to wedge the node: unstage unmounted, then failed to drop
    its record (INTERNAL "database or disk is full"), and the restart crashed in
    reconciliation with an uncaught sqlite error."""
    kubelet = tmp_path / "kubelet"
    kubelet.mkdir()
    root = tmp_path / "driver"
    with (
        tmpfs(root / "state", "64m", tmp_path) as state,
        running_driver(root, extra_args=("--kubelet-dir", str(kubelet))) as driver,
    ):
        csi = clients(driver.channel())
        assert (state / "reserve").stat().st_blocks * 512 >= 16 * MIB
        cap = mount_cap("ext4")
        vol = csi.controller.CreateVolume(create("full", cap, 16 * MIB)).volume
        staging = kubelet / "plugins" / "full" / "globalmount"
        target = kubelet / "pods" / "p" / "volumes" / "full" / "mount"
        staging.parent.mkdir(parents=True)
        target.parent.mkdir(parents=True)
        stage(csi, vol.volume_id, str(staging), cap)
        publish(csi, vol.volume_id, str(staging), str(target), cap)
        assert "StateDirFull" not in storage_reasons(csi)
        fill(state, "filler-1")  # something else filled the disk
        csi.node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=str(target))
        )
        assert "StateDirFull" in storage_reasons(csi)
        fill(state, "filler-2")  # and filled the reserve the driver gave back, too
        csi.node.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=str(staging))
        )
        assert mount_count(str(staging.resolve())) == 0
        assert loop_devices_under(str(state)) == []
        # A restart on the full disk: it starts, answers Probe, and reports the full disk.
        driver.stop(signal.SIGKILL)
        driver.start()
        assert csi.identity.Probe(pb.ProbeRequest()).ready.value
        assert "StateDirFull" in storage_reasons(csi)
        assert "Traceback" not in driver.log()
        # Space freed: the reserve comes back, and deleting works.
        (state / "filler-1").unlink()
        (state / "filler-2").unlink()
        assert "StateDirFull" not in storage_reasons(csi)
        assert (state / "reserve").exists()
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))
        assert not (state / "volumes" / f"{vol.volume_id}.img").exists()


def test_capacity_is_enforced_at_create_also_under_concurrent_creates(
    node_factory: NodeFactory,
) -> None:
    """--capacity was reported by GetCapacity but not enforced: five 64 MiB volumes were created
    under --capacity 100Mi."""
    node = node_factory("--capacity", "100Mi")
    cap = mount_cap("ext4")
    codes: list[grpc.StatusCode] = []
    threads = [
        threading.Thread(
            target=lambda i=i: codes.append(
                code_of(lambda: node.csi.controller.CreateVolume(create(f"cap-{i}", cap)))
            )
        )
        for i in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.name for c in codes) == ["OK"] + ["RESOURCE_EXHAUSTED"] * 4, codes
    with pytest.raises(grpc.RpcError) as err:
        node.csi.controller.CreateVolume(create("cap-more", cap))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--capacity" in (err.value.details() or "")
    vols = node.csi.controller.ListVolumes(pb.ListVolumesRequest()).entries
    assert len(vols) == 1
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vols[0].volume.volume_id))
    node.csi.controller.CreateVolume(create("cap-after-delete", cap))


@pytest.mark.parametrize("preallocate", [False, True])
def test_volumes_never_overcommit_a_small_state_dir(tmp_path: Path, preallocate: bool) -> None:
    """Twelve 256 MiB volumes were created on a 24 MiB state directory, and pods then got I/O
    errors. A volume larger than the free space is refused; with --preallocate the volumes
    together never exceed the disk, and a pod can fill its whole volume without an I/O error."""
    kubelet = tmp_path / "kubelet"
    kubelet.mkdir()
    root = tmp_path / "driver"
    extra = ("--kubelet-dir", str(kubelet), *(["--preallocate"] if preallocate else []))
    with (
        tmpfs(root / "state", "96m", tmp_path) as state,
        running_driver(root, extra_args=extra) as driver,
    ):
        csi = clients(driver.channel())
        cap = mount_cap("ext4")
        with pytest.raises(grpc.RpcError) as err:
            csi.controller.CreateVolume(create("too-big", cap, 256 * MIB))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "free in its state directory" in (err.value.details() or "")
        if not preallocate:
            return
        made: list[pb.Volume] = []
        for i in range(6):
            try:
                made.append(csi.controller.CreateVolume(create(f"fill-{i}", cap, 24 * MIB)).volume)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.code()
                break
        assert 1 <= len(made) < 6, "the disk was overcommitted"
        assert {p.name for p in (state / "volumes").iterdir()} == {
            f"{v.volume_id}.img" for v in made
        }, "a refused create left storage behind"
        # Every volume's pod fills its filesystem: ENOSPC from the filesystem, never EIO.
        for i, vol in enumerate(made):
            staging = kubelet / "plugins" / f"s{i}" / "globalmount"
            staging.parent.mkdir(parents=True)
            csi.node.NodeStageVolume(
                pb.NodeStageVolumeRequest(
                    volume_id=vol.volume_id,
                    staging_target_path=str(staging),
                    volume_capability=cap,
                )
            )
            written = fill(staging, "data")
            fd = os.open(staging / "data", os.O_RDONLY)
            try:
                os.fsync(fd)  # raises EIO if a write could not reach the image
            finally:
                os.close(fd)
            assert written > 16 * MIB
            csi.node.NodeUnstageVolume(
                pb.NodeUnstageVolumeRequest(
                    volume_id=vol.volume_id, staging_target_path=str(staging)
                )
            )


@pytest.mark.parametrize("damage", ["not a database", "malformed pages"])
def test_a_damaged_catalog_stops_the_driver_with_one_line(node: Node, damage: str) -> None:
    """A corrupt catalog stopped the driver with a raw traceback."""
    volume_and_snapshot(node, f"damaged-{damage[:3]}")
    state = node.driver.state_dir
    node.driver.stop()
    catalog = state / "catalog.sqlite"
    before = files(state)
    # Every committed page in the main file (a -wal left behind would otherwise serve them).
    db = sqlite3.connect(catalog)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(catalog.read_bytes())
    if damage == "not a database":
        data[:100] = b"\x5a" * 100  # the header
    else:
        data[4096:] = b"\x5a" * (len(data) - 4096)  # every page after the first
    catalog.write_bytes(bytes(data))
    line = refusal_line(refused_start(node))
    assert "catalog.sqlite" in line and "damaged" in line and "Restore" in line, line
    assert files(state) == before
