"""Probing and undoing FIFREEZE on a test's mounts (shared by the snapshot integration tests)."""

from __future__ import annotations

import errno
import fcntl
import os

from csi_hostpath_selinux import freeze
from csi_hostpath_selinux.mountinfo import find_mount


def is_frozen(mount_point: str) -> bool:
    """Probe with FIFREEZE: EBUSY means frozen already; otherwise thaw what the probe froze."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.ioctl(fd, freeze.FIFREEZE, 0)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return True
            raise
        fcntl.ioctl(fd, freeze.FITHAW, 0)
        return False
    finally:
        os.close(fd)


def thaw_if_frozen(mount_point: str) -> None:
    """Thaw a mount a failed test left frozen, so that the clean-up can unmount it."""
    if find_mount(mount_point) is None or not is_frozen(mount_point):
        return
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, freeze.FITHAW, 0)
    finally:
        os.close(fd)
