"""Start the real driver as a process on a unix socket, talk to it, and clean up after it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux._proto import csi_pb2_grpc as rpc

MNT_DETACH_NEVER = 0  # tests unmount for real; a lazy unmount would hide a leak


@dataclass
class DriverProcess:
    root: Path
    node_id: str = "test-node"
    extra_args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    #: What had to be cleaned up below root after the driver stopped (should stay empty).
    leaked: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "driver.log"

    @property
    def socket(self) -> Path:
        return self.root / "csi.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def start(self, timeout: float = 30.0) -> None:
        """Start the driver and return once it answers Probe."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the driver exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                with contextlib.suppress(grpc.RpcError):
                    rpc.IdentityStub(self.channel()).Probe(pb.ProbeRequest(), timeout=2)
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the driver did not answer Probe within {timeout}s:\n{self.log()}")

    def spawn(self) -> None:
        """Start the driver process, without waiting for it to serve."""
        argv = [
            sys.executable,
            "-m",
            "csi_hostpath_selinux",
            "--endpoint",
            self.endpoint,
            "--nodeid",
            self.node_id,
            "--state-dir",
            str(self.state_dir),
            "-v",
            "5",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed by stop()
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.socket}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def wait_for_log(self, text: str, timeout: float = 30.0, interval: float = 0.1) -> None:
        """Return once text is in the driver's log; AssertionError with the log after timeout."""
        deadline = time.monotonic() + timeout
        while text not in self.log() and time.monotonic() < deadline:
            time.sleep(interval)
        assert text in self.log(), f"{text!r} not in the driver's log:\n{self.log()}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""


@dataclass
class Clients:
    identity: rpc.IdentityStub
    controller: rpc.ControllerStub
    node: rpc.NodeStub
    group: rpc.GroupControllerStub
    metadata: rpc.SnapshotMetadataStub


def clients(channel: grpc.Channel) -> Clients:
    return Clients(
        rpc.IdentityStub(channel),
        rpc.ControllerStub(channel),
        rpc.NodeStub(channel),
        rpc.GroupControllerStub(channel),
        rpc.SnapshotMetadataStub(channel),
    )


@contextlib.contextmanager
def running_driver(
    root: Path, node_id: str = DriverProcess.node_id, extra_args: Sequence[str] = ()
) -> Iterator[DriverProcess]:
    driver = DriverProcess(root, node_id, extra_args)
    try:
        driver.start()
        yield driver
    finally:
        driver.stop()
        driver.leaked = cleanup_under(root)


def _mount_points_under(root: str) -> list[str]:
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root.rstrip("/") + "/"):
                found.append(point)
    return found


def cleanup_under(root: Path) -> list[str]:
    """Unmount everything below root and detach loop devices backed by files below it.

    Returns what had to be cleaned (a test that expects a clean exit asserts it is empty).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    leaked: list[str] = []
    real = os.path.realpath(root)
    for _ in range(64):
        points = _mount_points_under(real)
        if not points:
            break
        for point in sorted(points, key=len, reverse=True):
            leaked.append(f"mount {point}")
            libc.umount2(point.encode(), MNT_DETACH_NEVER)
    for dev in loop_devices_under(real):
        leaked.append(f"loop {dev}")
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)
    return leaked


def loop_devices_under(root: str) -> list[str]:
    devices = []
    sys_block = Path("/sys/block")
    for entry in sorted(sys_block.glob("loop*")):
        backing = entry / "loop" / "backing_file"
        try:
            path = backing.read_text().strip()
        except OSError:
            continue
        if path.startswith(root.rstrip("/") + "/"):
            devices.append(f"/dev/{entry.name}")
    return devices
