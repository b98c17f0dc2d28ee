"""Freeze and thaw a mounted filesystem (FIFREEZE/FITHAW) for point-in-time copies.

FIFREEZE freezes the superblock of whatever directory it is given, so callers pass the
/proc/self/fd/N name of a descriptor paths.open_mount_root proved to be the volume's own mount
root (SnapshotManager.mount_root), never a path string a parent swap could redirect.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Unavailable

_PROC_FD_LINK = re.compile(r"/proc/self/fd/[0-9]+")


def _open(mount_point: str) -> int:
    """Open mount_point's directory: a bare /proc/self/fd/N is the descriptor itself."""
    nofollow = 0 if _PROC_FD_LINK.fullmatch(mount_point) else os.O_NOFOLLOW
    return os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | nofollow | os.O_CLOEXEC)


FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)


@contextmanager
def frozen(mount_point: str) -> Iterator[None]:
    """Hold the filesystem at mount_point frozen for the block; always thaw it after."""
    fd = _open(mount_point)
    try:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise Unavailable(
                    f"the filesystem at {mount_point} is already frozen (by another snapshot in "
                    "progress, or by an administrator); the request will be retried"
                ) from exc
            raise
        try:
            yield
        finally:
            try:
                fcntl.ioctl(fd, FITHAW, 0)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: not frozen (someone thawed it already)
                    raise
    finally:
        os.close(fd)


def thaw(mount_point: str) -> bool:
    """Thaw the filesystem at mount_point if it is frozen; True when it was."""
    fd = _open(mount_point)
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not frozen
            return False
        raise
    finally:
        os.close(fd)
    return True
