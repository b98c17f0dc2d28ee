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
import ctypes
import errno
import fcntl
import glob
import logging
import os
import stat
import struct
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

LOOP_MAJOR = 7
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_SET_CAPACITY = 0x4C07
LOOP_SET_DIRECT_IO = 0x4C08
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
BLKGETSIZE64 = 0x80081272

LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64

LOOP_CONTROL = "/dev/loop-control"
SYS_BLOCK = "/sys/block"
DELETED_SUFFIX = " (deleted)"
#: How many free devices attach() tries before giving up on races with other attachers.
ATTACH_ATTEMPTS = 64


class LoopInfo64(ctypes.Structure):
    """struct loop_info64 (include/uapi/linux/loop.h)."""

    _fields_ = (
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_crypt_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_encrypt_key", ctypes.c_ubyte * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    )


class LoopConfig(ctypes.Structure):
    """struct loop_config, the argument of LOOP_CONFIGURE."""

    _fields_ = (
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    )


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
        if not (name.startswith("loop") and name[4:].isdigit()):
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
        if not name[4:].isdigit():
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
