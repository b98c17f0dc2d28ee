"""What a hostile request must leave alone: files and mounts outside the driver's roots.

Shared by the path-safety tests and the RPC fuzzer: a snapshot of a directory tree to compare
before/after, and the mounts the driver may have made outside the directories it owns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from tests.support.driver import loop_devices_under


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry below root with its inode and size: the sentinel to compare before/after."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[path] = (st.st_ino, st.st_size)
    return found


def below(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def outside_mounts(root: Path, allowed: Sequence[Path], state_dir: Path) -> set[str]:
    """Mounts below the test's root but outside the allowed directories, and mounts of the
    driver's loop devices (those of state_dir) anywhere outside them. Other mounts on the host
    belong to other tests running at the same time and are not ours to judge."""
    allowed_dirs = [str(a.resolve()) for a in allowed]
    loops = set()
    for dev in loop_devices_under(str(state_dir.resolve())):
        with contextlib.suppress(OSError):
            rdev = os.stat(dev).st_rdev
            loops.add(f"{os.major(rdev)}:{os.minor(rdev)}")
    found = set()
    real_root = str(root.resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            if any(below(point, a) for a in allowed_dirs):
                continue
            if below(point, real_root) or fields[2] in loops:
                found.add(point)
    return found
