"""Thin ctypes wrappers for the mount system calls the standard library does not expose.

Every wrapper raises OSError with the kernel's errno on failure, like the os module does. Paths
are passed as bytes (os.fsencode), so names that are not valid UTF-8 survive the round trip.

The new mount API calls (open_tree, move_mount, mount_setattr) have one syscall number on every
architecture (they were added after the numbers were unified, Linux 5.2 and 5.12).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

# mount(2) flags (include/uapi/linux/mount.h)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

# umount2(2) flags
MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# new mount API
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_SYMLINKS = 0x10
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

#: The kernel copies at most one page of mount data; longer data would be cut silently.
MAX_MOUNT_DATA = 4095


class MountAttr(ctypes.Structure):
    """struct mount_attr (MOUNT_ATTR_SIZE_VER0, 32 bytes)."""

    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

_mount = _libc.mount
_mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_mount.restype = ctypes.c_int

_umount2 = _libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_umount2.restype = ctypes.c_int

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _fail(what: str, path: str | None = None) -> OSError:
    err = ctypes.get_errno()
    if path is None:
        return OSError(err, f"{what}: {os.strerror(err)}")
    return OSError(err, os.strerror(err), path)


def _opt(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(
    source: str | None, target: str, fs_type: str | None, flags: int, data: str | None
) -> None:
    """mount(2). data goes to the kernel unchanged (quotes included); None passes NULL."""
    raw = None if data is None else os.fsencode(data)
    if raw is not None and len(raw) > MAX_MOUNT_DATA:
        raise OSError(
            errno.EINVAL, f"mount data is {len(raw)} bytes; the kernel takes {MAX_MOUNT_DATA}"
        )
    if _mount(_opt(source), os.fsencode(target), _opt(fs_type), flags, raw) != 0:
        raise _fail("mount", target)


def umount2(target: str, flags: int) -> None:
    """umount2(2)."""
    if _umount2(os.fsencode(target), flags) != 0:
        raise _fail("umount2", target)


def open_tree(path: str, flags: int, dirfd: int = AT_FDCWD) -> int:
    """open_tree(2): a descriptor for the mount at path (a detached copy with OPEN_TREE_CLONE)."""
    fd = _syscall(
        ctypes.c_long(SYS_OPEN_TREE),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.c_uint(flags),
    )
    if fd < 0:
        raise _fail("open_tree", path)
    return int(fd)


def mount_setattr(fd: int, attr_set: int, attr_clr: int = 0, flags: int = AT_EMPTY_PATH) -> None:
    """mount_setattr(2) on the mount the descriptor refers to."""
    attr = MountAttr(attr_set, attr_clr, 0, 0)
    ret = _syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(fd),
        ctypes.c_char_p(b""),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if ret < 0:
        raise _fail("mount_setattr")


def move_mount(from_fd: int, target: str, flags: int = MOVE_MOUNT_F_EMPTY_PATH) -> None:
    """move_mount(2): attach the mount behind from_fd at target (followed like mount(2) does)."""
    ret = _syscall(
        ctypes.c_long(SYS_MOVE_MOUNT),
        ctypes.c_int(from_fd),
        ctypes.c_char_p(b""),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(os.fsencode(target)),
        ctypes.c_uint(flags | MOVE_MOUNT_T_SYMLINKS),
    )
    if ret < 0:
        raise _fail("move_mount", target)


# statx(2): which mount a file descriptor is on, and whether it is that mount's root. Asked of a
# held descriptor, so the answer cannot be about another file than the one the driver opened
# (a path, or a mountinfo line read a moment earlier, can be renamed meanwhile).
STATX_MNT_ID = 0x1000
STATX_ATTR_MOUNT_ROOT = 0x2000
_STATX_SIZE = 256
_STATX_ATTRIBUTES = 8  # u64 stx_attributes
_STATX_ATTRIBUTES_MASK = 56  # u64 stx_attributes_mask
_STATX_MNT_ID = 144  # u64 stx_mnt_id

_statx = _libc.statx
_statx.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
_statx.restype = ctypes.c_int


def mount_of(fd: int) -> tuple[int, bool]:
    """(mount id, is the mount's root) of the open file fd: the mount id is the one mountinfo's
    first field shows; the root of a mount is what opening its mount point reaches."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(fd, b"", AT_EMPTY_PATH, STATX_MNT_ID, buf) != 0:
        raise _fail("statx")
    raw = buf.raw
    mask = int.from_bytes(raw[0:4], "little")
    attributes = int.from_bytes(raw[_STATX_ATTRIBUTES : _STATX_ATTRIBUTES + 8], "little")
    known = int.from_bytes(raw[_STATX_ATTRIBUTES_MASK : _STATX_ATTRIBUTES_MASK + 8], "little")
    if not mask & STATX_MNT_ID or not known & STATX_ATTR_MOUNT_ROOT:
        raise OSError(errno.ENOSYS, "statx gives no mount id or mount-root attribute (Linux < 5.8)")
    mount_id = int.from_bytes(raw[_STATX_MNT_ID : _STATX_MNT_ID + 8], "little")
    return mount_id, bool(attributes & STATX_ATTR_MOUNT_ROOT)
