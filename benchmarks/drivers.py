"""Start a CSI driver process (ours or the Go reference) on a unix socket, and read its memory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux._proto import csi_pb2_grpc as rpc
from tests.support.background import Background
from tests.support.driver import cleanup_under


@dataclass
class ServedDriver:
    """One driver process under test; `root` holds its socket, state and log."""

    name: str
    root: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    leaked: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.root / "csi.sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_path(self) -> Path:
        return self.root / "driver.log"

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if self.socket.exists():
                with contextlib.suppress(grpc.RpcError), self.channel() as channel:
                    rpc.IdentityStub(channel).Probe(pb.ProbeRequest(), timeout=2)
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer Probe within {timeout}s: {self.tail()}")

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.socket}")

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""


def ours(
    root: Path, node_id: str, extra: Sequence[str] = (), source: Path | None = None
) -> ServedDriver:
    """Our driver; `source` is a directory holding the csi_hostpath_selinux package to run
    (default: the one this interpreter imports)."""
    env = None
    if source is not None:
        env = dict(os.environ, PYTHONPATH=str(source))
    argv = [
        sys.executable,
        "-m",
        "csi_hostpath_selinux",
        "--endpoint",
        f"unix://{root / 'csi.sock'}",
        "--nodeid",
        node_id,
        "--state-dir",
        str(root / "state"),
        *extra,
    ]
    # `python -m` puts the working directory first on sys.path: run from the source directory.
    return ServedDriver("ours", root, argv, env, source)


#: The environment variable that names the reference driver's binary when --go-binary is not given.
GO_BINARY_ENV = "CSI_BENCH_GO_BINARY"


def reference_version(binary: Path) -> str:
    """What the reference binary says it is (`hostpathplugin --version` prints
    "hostpathplugin v1.18.0-8-g1f2b2e64"): the version it was built with, not one we assume."""
    proc = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    words = (proc.stdout or proc.stderr).split()
    if proc.returncode != 0 or not words:
        raise RuntimeError(
            f"{binary} --version failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return words[-1]


def reference(binary: Path, root: Path, node_id: str, extra: Sequence[str] = ()) -> ServedDriver:
    """The Go reference driver (kubernetes-csi/csi-driver-host-path's hostpathplugin), built
    elsewhere and named by path: the repository holds none of its code and no recipe for it."""
    argv = [
        str(binary),
        f"--endpoint=unix://{root / 'csi.sock'}",
        f"--nodeid={node_id}",
        f"--statedir={root / 'state'}",
        *extra,
    ]
    return ServedDriver("go", root, argv)


@contextlib.contextmanager
def serving(driver: ServedDriver) -> Iterator[ServedDriver]:
    """Run the driver; afterwards stop it and unmount/detach whatever is left below its root."""
    try:
        driver.start()
        yield driver
    except BaseException:
        print(f"--- {driver.name} driver log (tail) ---\n{driver.tail()}", file=sys.stderr)
        raise
    finally:
        driver.stop()
        driver.leaked = cleanup_under(driver.root)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:  # the process has just exited
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                found.append(int(child))
                todo.append(int(child))
    return found


def _vm_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def rss_mib(pid: int) -> float:
    """VmRSS of the process plus its descendants, in MiB.

    A child caught between fork and exec still runs the driver's own executable and its VmRSS
    counts the pages it shares with the driver; such children are left out, or eight concurrent
    forks of a 48 MiB Python process would read as 400 MiB."""
    own = _exe(pid)
    children = [c for c in _descendants(pid) if _exe(c) != own]
    return sum(_vm_rss_kib(p) for p in [pid, *children]) / 1024


class RssSampler(Background):
    """Samples the driver's memory in a background thread.

    `peak` is the largest VmRSS of the driver with all its descendants (mkfs, losetup, mount
    helpers it forks); `peak_own` that of the driver process alone."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__()
        self.pid = pid
        self.interval = interval
        self.samples: list[float] = []
        self.own: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(rss_mib(self.pid))
            self.own.append(_vm_rss_kib(self.pid) / 1024)
            self.stop.wait(self.interval)

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)

    @property
    def peak_own(self) -> float:
        return max(self.own, default=0.0)
