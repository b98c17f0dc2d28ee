"""Mount options: turning option entries into mount(2)'s MS_* flags and data string.

Options are lists of whole entries. An entry is split only on commas outside double quotes, so the
comma in an MCS level never cuts a label in two, and nothing here goes through a shell.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from . import syscalls
from .mountinfo import split_outside_quotes
from .syscalls import (
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_RDONLY,
    MS_RELATIME,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
)

ATIME = MS_NOATIME | MS_RELATIME | MS_STRICTATIME

#: VFS options: name -> (flags to set, flags to clear). Applied in order, so a later entry wins.
VFS_OPTIONS: dict[str, tuple[int, int]] = {
    "defaults": (0, 0),
    "ro": (MS_RDONLY, 0),
    "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0),
    "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0),
    "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0),
    "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0),
    "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0),
    "noatime": (MS_NOATIME, ATIME),
    "atime": (0, MS_NOATIME),
    "nodiratime": (MS_NODIRATIME, 0),
    "diratime": (0, MS_NODIRATIME),
    "relatime": (MS_RELATIME, ATIME),
    "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, ATIME),
    "lazytime": (MS_LAZYTIME, 0),
    "nolazytime": (0, MS_LAZYTIME),
    "mand": (MS_MANDLOCK, 0),
    "nomand": (0, MS_MANDLOCK),
    "nosymfollow": (MS_NOSYMFOLLOW, 0),
}

#: Per-mount flags a bind mount can carry, with their mount_setattr(2) attribute.
BIND_ATTRS: dict[int, int] = {
    MS_RDONLY: syscalls.MOUNT_ATTR_RDONLY,
    MS_NOSUID: syscalls.MOUNT_ATTR_NOSUID,
    MS_NODEV: syscalls.MOUNT_ATTR_NODEV,
    MS_NOEXEC: syscalls.MOUNT_ATTR_NOEXEC,
    MS_NODIRATIME: syscalls.MOUNT_ATTR_NODIRATIME,
    MS_NOSYMFOLLOW: syscalls.MOUNT_ATTR_NOSYMFOLLOW,
}
BIND_ATIME: dict[int, int] = {
    MS_NOATIME: syscalls.MOUNT_ATTR_NOATIME,
    MS_RELATIME: syscalls.MOUNT_ATTR_RELATIME,
    MS_STRICTATIME: syscalls.MOUNT_ATTR_STRICTATIME,
}
#: statvfs f_flag bits of a mount -> the MS_* flag that keeps them on a remount.
STATVFS_FLAGS: tuple[tuple[int, int], ...] = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)


class MountError(Exception):
    """A mount or unmount failed. errno is the kernel's when the failure came from a syscall.

    EBUSY from a mount with context= means the filesystem is already mounted elsewhere with other
    security settings (the kernel logs "Same superblock, different security settings").
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno


def split_options(options: Sequence[str]) -> tuple[int, str]:
    """Turn mount option entries into (MS_* flags, data string) for mount(2).

    Entries are split on commas outside double quotes; VFS options (VFS_OPTIONS) become flags,
    later ones overriding earlier ones. Every other piece is kept verbatim, quotes included, and
    the pieces are joined with commas into the data string the filesystem parses.
    """
    flags = 0
    data: list[str] = []
    for entry in options:
        for piece in split_outside_quotes(entry):
            known = VFS_OPTIONS.get(piece)
            if known is None:
                data.append(piece)
            else:
                set_bits, clear_bits = known
                flags = (flags & ~clear_bits) | set_bits
    return flags, ",".join(data)


def bind_flags(read_only: bool, extra_flags: Sequence[str]) -> int:
    """The MS_* flags of a bind mount; MountError for options only a filesystem can apply."""
    flags, data = split_options(extra_flags)
    if data:
        raise MountError(
            f"a bind mount cannot apply filesystem options ({data}); only per-mount flags such "
            "as ro, nosuid, nodev, noexec and the atime options",
            errno.EINVAL,
        )
    if read_only:
        flags |= MS_RDONLY
    return flags
