"""A parser of /proc/<pid>/mountinfo lines (proc(5)), with the one option splitter.

The probe needs it to find selinuxfs; the driver's mount table (mounts.py) can take it as its own,
so that the driver parses mountinfo one way. The kernel quotes a SELinux label in the super options
(``context="system_u:object_r:container_file_t:s0:c1,c2"``), so option fields are split outside
double quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .split import split_kernel_options

_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(field_text: str) -> str:
    """Decode the kernel's octal escapes (\\040 space, \\011 tab, \\012 newline, \\134 \\)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field_text)


@dataclass(frozen=True)
class MountInfoEntry:
    """One line of /proc/<pid>/mountinfo, with octal escapes decoded."""

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


def parse_mountinfo_line(line: str) -> MountInfoEntry:
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
    return MountInfoEntry(
        mount_id=mount_id,
        parent_id=parent_id,
        major=major,
        minor=minor,
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        mount_options=tuple(split_kernel_options(fields[5])),
        optional_fields=tuple(fields[6:sep]),
        fs_type=unescape(fields[sep + 1]),
        source=unescape(fields[sep + 2]),
        super_options=tuple(unescape(o) for o in split_kernel_options(fields[sep + 3])),
    )


def parse_mountinfo(text: str) -> list[MountInfoEntry]:
    """Parse the text of a mountinfo file, in the kernel's order (parents before children)."""
    return [parse_mountinfo_line(line) for line in text.split("\n") if line.strip()]
