"""The mount table as the kernel prints it: /proc/self/mountinfo (proc(5)), read and searched.

The parser is the SELinux package's (`selinux/mountinfo.py`): the driver reads mountinfo one way.
Mount option lists are split only on commas outside double quotes, so the comma in an MCS level
(`context="...:s0:c1,c2"`) never cuts a label in two.
"""

from __future__ import annotations

from collections.abc import Sequence

from .selinux.mountinfo import MountInfoEntry as MountEntry
from .selinux.mountinfo import parse_mountinfo, parse_mountinfo_line, unescape
from .selinux.split import split_kernel_options as split_outside_quotes

__all__ = [
    "MOUNTINFO",
    "MountEntry",
    "find_mount",
    "normalize",
    "parse_mountinfo",
    "parse_mountinfo_line",
    "read_mountinfo",
    "split_outside_quotes",
    "unescape",
]

MOUNTINFO = "/proc/self/mountinfo"


def read_mountinfo(path: str = MOUNTINFO) -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        return parse_mountinfo(f.read())


def normalize(path: str) -> str:
    """path without trailing slashes ("/" stays "/"), as mountinfo writes mount points."""
    stripped = path.rstrip("/")
    return stripped or "/"


def find_mount(mount_point: str, entries: Sequence[MountEntry] | None = None) -> MountEntry | None:
    """The topmost (last) mount at exactly mount_point; never a prefix or substring match."""
    wanted = normalize(mount_point)
    table = read_mountinfo() if entries is None else entries
    for entry in reversed(table):
        if entry.mount_point == wanted:
            return entry
    return None
