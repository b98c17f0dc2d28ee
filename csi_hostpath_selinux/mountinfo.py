"""The mount table as the kernel prints it: /proc/self/mountinfo, parsed (proc(5)).

Mount option lists are split only on commas outside double quotes, so the comma in an MCS level
(`context="...:s0:c1,c2"`) never cuts a label in two.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/<pid>/mountinfo (proc(5)), with octal escapes decoded."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fs_type: str
    source: str
    super_options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        """True when either the mount or its superblock is read-only."""
        return "ro" in self.mount_options or "ro" in self.super_options


def unescape(field_text: str) -> str:
    """Decode the kernel's octal escapes (\\040 space, \\011 tab, \\012 newline, \\134 \\)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field_text)


def split_outside_quotes(text: str, sep: str = ",") -> list[str]:
    """Split text on sep where it is not inside double quotes; empty pieces are dropped."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p]


def parse_mountinfo_line(line: str) -> MountEntry:
    """Parse one mountinfo line; raise ValueError when it does not have the documented shape."""
    fields = line.split(" ")
    try:
        sep = fields.index("-", 6)
    except ValueError:
        raise ValueError(f"mountinfo line has no '-' separator: {line!r}") from None
    if len(fields) != sep + 4:
        raise ValueError(f"mountinfo line has {len(fields) - sep - 1} fields after '-': {line!r}")
    try:
        major, minor = (int(n) for n in fields[2].split(":", 1))
        mount_id, parent_id = int(fields[0]), int(fields[1])
    except ValueError:
        raise ValueError(f"mountinfo line has bad numbers: {line!r}") from None
    return MountEntry(
        mount_id=mount_id,
        parent_id=parent_id,
        major=major,
        minor=minor,
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        mount_options=tuple(split_outside_quotes(fields[5])),
        optional_fields=tuple(fields[6:sep]),
        fs_type=unescape(fields[sep + 1]),
        source=unescape(fields[sep + 2]),
        super_options=tuple(unescape(o) for o in split_outside_quotes(fields[sep + 3])),
    )


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse the text of a mountinfo file, in the kernel's order (parents before children)."""
    return [parse_mountinfo_line(line) for line in text.split("\n") if line.strip()]


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
