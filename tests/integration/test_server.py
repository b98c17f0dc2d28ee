"""Start and stop the way a DaemonSet does: a stale socket is replaced, SIGTERM ends cleanly."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import threading
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from tests.support.driver import DriverProcess, clients, running_driver

pytestmark = pytest.mark.integration


def test_stale_socket_is_replaced_and_sigterm_removes_it(tmp_path: Path) -> None:
    driver = DriverProcess(tmp_path / "d")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(driver.socket))  # a socket file left by a killed driver
    stale.close()
    driver.start()
    try:
        info = clients(driver.channel()).identity.GetPluginInfo(pb.GetPluginInfoRequest())
        assert info.name == "hostpath-selinux.csi.k8s.io" and info.vendor_version
    finally:
        code = driver.stop(signal.SIGTERM)
    assert code == 0
    assert not driver.socket.exists(), "the socket is removed on a graceful stop"
    assert "signal received: stopping" in driver.log()


def test_refuses_to_remove_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    driver = DriverProcess(tmp_path / "d")
    driver.socket.write_text("someone's file")
    with pytest.raises(RuntimeError, match="exited with 2"):
        driver.start(timeout=15)
    assert driver.socket.read_text() == "someone's file"
    assert "is not a socket; refusing to remove it" in driver.log()


SYS_TGKILL = 234  # x86_64: send a signal to one thread of a process
#: Threads Python starts keep the process's name (python, python3: the interpreter's file name).
MAIN_NAME = "the main thread's name"


@pytest.mark.parametrize(
    ("signum", "thread_name"),
    [
        (signal.SIGTERM, "grpc_global_tim"),  # gRPC core's timer thread
        (signal.SIGTERM, MAIN_NAME),  # a thread the driver started (catalog sync, the server's)
        (signal.SIGINT, "event_engine"),  # gRPC core's event engine pool
    ],
    ids=["SIGTERM-grpc-timer", "SIGTERM-python-thread", "SIGINT-grpc-event-engine"],
)
def test_a_stop_signal_taken_by_another_thread_still_stops_the_driver(
    tmp_path: Path, signum: signal.Signals, thread_name: str
) -> None:
    """The kernel hands a process's signal to any of its threads; each must lead to a graceful
    stop. The signal goes to one thread other than the main one (tgkill), as the kernel may."""
    driver = DriverProcess(tmp_path / "d")
    driver.start()
    try:
        assert driver.proc is not None
        pid = driver.proc.pid
        delivered_to = deliver_to_thread(pid, thread_name, signum)
        assert delivered_to != pid
        code = driver.proc.wait(30)
    finally:
        driver.stop(signal.SIGKILL)
    assert code == 0
    assert f"signal received: stopping ({signum.name}" in driver.log()
    assert "stopped" in driver.log()
    assert not driver.socket.exists()


def deliver_to_thread(pid: int, name: str, signum: int) -> int:
    """Send signum to one thread of pid named name, not the main one; return its id. A pool
    thread may end between listing and signalling: then the next one of that name."""
    libc = ctypes.CDLL(None, use_errno=True)
    if name == MAIN_NAME:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    seen = {}
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            seen[tid] = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except FileNotFoundError:
            continue
        if tid == pid or seen[tid] != name:
            continue
        if libc.syscall(SYS_TGKILL, pid, tid, signum) == 0:
            return tid
        assert ctypes.get_errno() == errno.ESRCH, os.strerror(ctypes.get_errno())
    raise AssertionError(f"the driver has no thread named {name!r} besides its main one: {seen}")


def test_in_flight_calls_finish_during_a_graceful_stop(tmp_path: Path) -> None:
    with running_driver(tmp_path / "d") as driver:
        csi = clients(driver.channel())
        results: list[object] = []

        def slow_create() -> None:
            request = pb.CreateVolumeRequest(
                name="pvc-in-flight",
                capacity_range=pb.CapacityRange(required_bytes=1 << 30),
                volume_capabilities=[
                    pb.VolumeCapability(
                        mount=pb.VolumeCapability.MountVolume(fs_type="xfs"),
                        access_mode=pb.VolumeCapability.AccessMode(
                            mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
                        ),
                    )
                ],
            )
            try:
                results.append(csi.controller.CreateVolume(request, timeout=60).volume.volume_id)
            except grpc.RpcError as exc:
                results.append(exc.code())

        worker = threading.Thread(target=slow_create)
        worker.start()
        driver.wait_for_log("CreateVolume request", interval=0.005)  # it logs calls at -v 5
        assert driver.proc is not None
        os.kill(driver.proc.pid, signal.SIGTERM)
        worker.join(60)
        assert driver.proc.wait(60) == 0
        assert len(results) == 1
        assert isinstance(results[0], str), f"the in-flight CreateVolume was cut off: {results[0]}"
