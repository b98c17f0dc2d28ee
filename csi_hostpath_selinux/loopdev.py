"""Loop devices through their ioctls (no losetup process per attach).

attach() asks /dev/loop-control for a free device and binds the backing file to it in one
LOOP_CONFIGURE call (Linux 5.8+), falling back to LOOP_SET_FD + LOOP_SET_STATUS64 on older
kernels. Another process may take the free device between the two steps: the kernel then answers
EBUSY and attach() asks for another. Device nodes missing in a container's /dev are created.

Autoclear devices are released by the kernel on their last close. attach(autoclear=True) keeps a
descriptor open in LoopDevice.holder so the device survives until the caller has mounted it;
release() closes it, after which the device lives exactly as long as its users.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
import time

from .loop_abi import (
    BLKGETSIZE64,
    LO_FLAGS_AUTOCLEAR,
    LO_FLAGS_DIRECT_IO,
    LO_FLAGS_READ_ONLY,
    LO_NAME_SIZE,
    LOOP_CLR_FD,
    LOOP_CONFIGURE,
    LOOP_CTL_GET_FREE,
    LOOP_MAJOR,
    LOOP_SET_CAPACITY,
    LOOP_SET_DIRECT_IO,
    LOOP_SET_FD,
    LOOP_SET_STATUS64,
    LoopConfig,
    LoopInfo64,
)
from .loopscan import (
    DeviceHolder,
    LoopDevice,
    LoopError,
    find_by_backing_file,
    is_backed_in,
    list_attached,
)

log = logging.getLogger(__name__)

LOOP_CONTROL = "/dev/loop-control"
SYS_BLOCK = "/sys/block"
#: How many free devices attach() tries before giving up on races with other attachers.
ATTACH_ATTEMPTS = 64

__all__ = [
    "LoopDevice",
    "LoopError",
    "attach",
    "detach",
    "ensure_node",
    "find_by_backing_file",
    "is_backed_in",
    "list_attached",
    "refresh_capacity",
    "release",
    "size_bytes",
]


def _device_path(number: int) -> str:
    return f"/dev/loop{number}"


def ensure_node(number: int) -> str:
    """Return /dev/loopN, creating the block node when /dev lacks it (containers)."""
    path = _device_path(number)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        minor = number
        try:
            with open(f"{SYS_BLOCK}/loop{number}/dev", encoding="ascii") as f:
                major_s, minor_s = f.read().strip().split(":")
            if int(major_s) == LOOP_MAJOR:
                minor = int(minor_s)
        except (OSError, ValueError):
            pass
        with contextlib.suppress(FileExistsError):
            os.mknod(path, 0o660 | stat.S_IFBLK, os.makedev(LOOP_MAJOR, minor))
        log.info("created the missing device node %s", path)
        return path
    if not stat.S_ISBLK(st.st_mode):
        raise LoopError(errno.ENOTBLK, f"{path} is not a block device", path)
    return path


def _open_device(device: str, flags: int) -> int:
    try:
        return os.open(device, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        name = os.path.basename(device)
        if not (name.startswith("loop") and name[4:].isascii() and name[4:].isdigit()):
            raise
        ensure_node(int(name[4:]))
        return os.open(device, flags | os.O_CLOEXEC)


def _info(backing_file: str, flags: int) -> LoopInfo64:
    info = LoopInfo64()
    info.lo_flags = flags
    # lo_file_name is informational (sysfs backing_file comes from the open file itself).
    info.lo_file_name = os.fsencode(backing_file)[: LO_NAME_SIZE - 1]
    return info


def _configure(dev_fd: int, backing_fd: int, backing_file: str, flags: int) -> None:
    """Bind the file to the device; raise OSError EBUSY when someone else got the device first."""
    config = LoopConfig()
    config.fd = backing_fd
    config.info = _info(backing_file, flags)
    try:
        fcntl.ioctl(dev_fd, LOOP_CONFIGURE, config)
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    _configure_legacy(dev_fd, backing_fd, backing_file, flags)


def _configure_legacy(dev_fd: int, backing_fd: int, backing_file: str, flags: int) -> None:
    """Kernels before 5.8: LOOP_SET_FD, then LOOP_SET_STATUS64 (and LOOP_SET_DIRECT_IO)."""
    fcntl.ioctl(dev_fd, LOOP_SET_FD, backing_fd)
    try:
        fcntl.ioctl(dev_fd, LOOP_SET_STATUS64, _info(backing_file, flags & LO_FLAGS_AUTOCLEAR))
        if flags & LO_FLAGS_DIRECT_IO:
            fcntl.ioctl(dev_fd, LOOP_SET_DIRECT_IO, 1)
    except OSError:
        fcntl.ioctl(dev_fd, LOOP_CLR_FD, 0)
        raise


def attach(
    backing_file: str, read_only: bool = False, autoclear: bool = False, direct_io: bool = False
) -> LoopDevice:
    """Attach backing_file (opened with O_NOFOLLOW) to a free loop device and return it.

    With autoclear the result holds the device open (holder): mount it, then call release().
    """
    mode = os.O_RDONLY if read_only else os.O_RDWR
    backing_fd = os.open(backing_file, mode | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(backing_fd).st_mode):
            raise LoopError(errno.EINVAL, "the backing file is not a regular file", backing_file)
        flags = (
            (LO_FLAGS_READ_ONLY if read_only else 0)
            | (LO_FLAGS_AUTOCLEAR if autoclear else 0)
            | (LO_FLAGS_DIRECT_IO if direct_io else 0)
        )
        ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        try:
            for attempt in range(ATTACH_ATTEMPTS):
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                path = ensure_node(number)
                dev_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                try:
                    _configure(dev_fd, backing_fd, backing_file, flags)
                except OSError as exc:
                    os.close(dev_fd)
                    if exc.errno == errno.EBUSY:
                        log.debug("loop%d was taken by someone else (try %d)", number, attempt)
                        time.sleep(0.001 * attempt)
                        continue
                    raise LoopError(
                        exc.errno,
                        f"attaching to {path} failed: {os.strerror(exc.errno or 0)}",
                        backing_file,
                    ) from exc
                holder = DeviceHolder(dev_fd) if autoclear else None
                if holder is None:
                    os.close(dev_fd)
                log.debug("attached %s to %s", backing_file, path)
                return LoopDevice(path, number, os.path.realpath(backing_file), holder=holder)
        finally:
            os.close(ctl)
    finally:
        os.close(backing_fd)
    raise LoopError(errno.EBUSY, f"no free loop device after {ATTACH_ATTEMPTS} tries", backing_file)


def release(device: LoopDevice) -> None:
    """Close the descriptor attach(autoclear=True) kept open (calling it again is fine); the
    kernel then frees the device when its last user, such as a mount, goes away."""
    if device.holder is not None:
        device.holder.close()


def detach(device: str) -> None:
    """LOOP_CLR_FD. A device that is already free is fine.

    A device that is still open (mounted) is not freed at once: the kernel marks it autoclear
    and frees it when the last user closes it.
    """
    try:
        fd = _open_device(device, os.O_RDONLY)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # the device itself was removed
            return
        raise
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise LoopError(
                exc.errno, f"detaching {device} failed: {os.strerror(exc.errno or 0)}", device
            ) from exc
    finally:
        os.close(fd)
    log.debug("detached %s", device)


def refresh_capacity(device: str) -> None:
    """LOOP_SET_CAPACITY: make the device see the backing file's new size."""
    fd = _open_device(device, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
    finally:
        os.close(fd)


def size_bytes(device: str) -> int:
    """The size of a block device in bytes (BLKGETSIZE64)."""
    fd = _open_device(device, os.O_RDONLY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, BLKGETSIZE64, buf)
        (size,) = struct.unpack("=Q", bytes(buf))
        return int(size)
    finally:
        os.close(fd)
