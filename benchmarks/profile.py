"""Sample our driver with py-spy while a workload runs, and summarise where the time goes.

py-spy samples every thread, idle ones included (`--idle`), so time spent blocked in a system
call (fsync, mount, ioctl) counts as well as time on the CPU. Only stacks that pass through our
interceptor are kept: they are the threads handling a request; the main thread, gRPC's pollers
and idle workers are left out. Shares are therefore of the wall time spent inside our handlers."""

from __future__ import annotations

import collections
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PACKAGE_MARK = "csi_hostpath_selinux"
#: Every RPC passes through the interceptor: a stack holding it is a thread handling a request.
HANDLER_MARK = "csi_hostpath_selinux/interceptor.py"


@dataclass
class ProfileSummary:
    samples: int  # stacks inside our handlers
    #: (function (file:line), share of samples) where the sample's innermost frame is.
    self_top: list[tuple[str, float]]
    #: (function in our package, share of samples that have it anywhere on the stack).
    inclusive_top: list[tuple[str, float]]


class PySpy:
    """`py-spy record` attached to a pid, writing collapsed stacks; stop() ends it."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError(
                "py-spy is not installed: pip install -r benchmarks/requirements.txt"
            )
        self.out = out
        argv = [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate)]
        argv += ["--output", str(out), "--nonblocking", "--idle"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        # py-spy writes its output when interrupted.
        self.proc.send_signal(2)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _frame_name(frame: str) -> str:
    # A raw py-spy frame reads "function (path/to/file.py:line)".
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    mark = where.find(PACKAGE_MARK)
    where = where[mark:] if mark >= 0 else where.rsplit("/", 1)[-1]
    return f"{name} ({where})"


def summarise(collapsed: Path, top: int = 12) -> ProfileSummary:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if HANDLER_MARK not in stack:
            continue
        frames = [_frame_name(f) for f in stack.split(";") if " (" in f]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            # The interceptor is on every handler's stack: listing it says nothing.
            if PACKAGE_MARK in name and "interceptor.py" not in name:
                inclusive[name] += count
    share = 1.0 / total if total else 0.0
    return ProfileSummary(
        samples=total,
        self_top=[(k, v * share) for k, v in own.most_common(top)],
        inclusive_top=[(k, v * share) for k, v in inclusive.most_common(top)],
    )
