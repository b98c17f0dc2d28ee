"""Freeze and thaw a mounted filesystem (FIFREEZE/FITHAW) for point-in-time copies."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Unavailable

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)


@contextmanager
def frozen(mount_point: str) -> Iterator[None]:
    """Hold the filesystem at mount_point frozen for the block; always thaw it after."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
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
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not frozen
            return False
        raise
    finally:
        os.close(fd)
    return True
