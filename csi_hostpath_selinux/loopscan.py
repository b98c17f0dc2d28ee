"""Finding loop devices: which are bound, to which backing file (sysfs and LOOP_GET_STATUS64).

The records (LoopDevice) are shared with loopdev.py, which attaches and detaches; loopdev
re-exports every public name here, so callers use `loopdev.find_by_backing_file` and the like.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
from dataclasses import dataclass, field

from .loop_abi import LOOP_GET_STATUS64, LoopInfo64

SYS_BLOCK = "/sys/block"
DELETED_SUFFIX = " (deleted)"


class DeviceHolder:
    """An open descriptor of a loop device; close() is idempotent (never closes a reused fd)."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


@dataclass(frozen=True)
class LoopDevice:
    path: str
    number: int
    backing_file: str
    #: The backing file was unlinked after it was attached (sysfs shows " (deleted)").
    deleted: bool = False
    #: attach(autoclear=True) only: an open descriptor that keeps the device bound; see release().
    holder: DeviceHolder | None = field(default=None, compare=False, repr=False)


class LoopError(OSError):
    """A loop device operation failed (an OSError with the kernel's errno)."""


def _device_path(number: int) -> str:
    return f"/dev/loop{number}"


def _read_backing(number: int) -> tuple[str, bool] | None:
    try:
        with open(
            f"{SYS_BLOCK}/loop{number}/loop/backing_file",
            encoding="utf-8",
            errors="surrogateescape",
        ) as f:
            text = f.read()
    except FileNotFoundError:  # not attached (the loop/ directory exists only while bound)
        return None
    except OSError as exc:
        # ENODEV/ENXIO: the device is being detached (by anyone on the host) while we read.
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            return None
        raise
    text = text.removesuffix("\n")
    if text.endswith(DELETED_SUFFIX):
        return text.removesuffix(DELETED_SUFFIX), True
    return text, False


def list_attached() -> list[LoopDevice]:
    """Every bound loop device, by number."""
    found = []
    for entry in glob.glob(f"{SYS_BLOCK}/loop*"):
        name = os.path.basename(entry)
        if not (name[4:].isascii() and name[4:].isdigit()):
            continue
        number = int(name[4:])
        backing = _read_backing(number)
        if backing is not None:
            found.append(LoopDevice(_device_path(number), number, backing[0], backing[1]))
    return sorted(found, key=lambda d: d.number)


def find_by_backing_file(backing_file: str) -> list[LoopDevice]:
    """Loop devices bound to backing_file (compared by real path; unlinked files match too)."""
    wanted = os.path.realpath(backing_file)
    return [
        d
        for d in list_attached()
        if d.backing_file in (wanted, backing_file) or _bound_elsewhere(d, wanted)
    ]


def is_backed_in(device: LoopDevice, directory: str) -> bool:
    """The device's backing file lies (or lay, if unlinked) directly in directory."""
    if os.path.dirname(device.backing_file) == directory:
        return True
    return _bound_elsewhere(device, os.path.join(directory, os.path.basename(device.backing_file)))


def _bound_elsewhere(device: LoopDevice, wanted: str) -> bool:
    """A device attached through a mount of another mount namespace that has since gone (the
    driver's previous container, killed) shows its backing file relative to that mount's root:
    `/volumes/vol-….img` instead of `/var/lib/csi-hostpath-selinux/volumes/vol-….img`. Such a
    path matches when it is a tail of wanted and the kernel's record of the backing inode
    (LOOP_GET_STATUS64) is wanted's, or, for an unlinked file, lies on wanted's filesystem."""
    if device.backing_file == wanted or not wanted.endswith(device.backing_file):
        return False
    identity = _backing_identity(device.path)
    if identity is None:
        return False
    try:
        st = os.stat(wanted, follow_symlinks=False)
    except FileNotFoundError:
        if not device.deleted:
            return False
        try:
            return identity[0] == os.stat(os.path.dirname(wanted)).st_dev
        except FileNotFoundError:
            return False
    return identity == (st.st_dev, st.st_ino)


def _backing_identity(device: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the device's backing file, as the kernel recorded it at attach."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = LoopInfo64()
        fcntl.ioctl(fd, LOOP_GET_STATUS64, info)
    except OSError:  # ENXIO: detached meanwhile
        return None
    finally:
        os.close(fd)
    return int(info.lo_device), int(info.lo_inode)
