"""Path safety: every path the driver touches is validated here and walked without following symlinks.

Paths from requests (staging and target paths) must be absolute and normalized, and, when the
driver knows kubelet's directory, lie below it. They are opened component by component with
O_NOFOLLOW, so a symlink planted anywhere in the path is refused instead of followed.

Every action then goes through a descriptor, never through the path string again, so a parent
swapped for a symlink between the check and the action cannot redirect it:
- mounts are made onto the opened directory (`opened`: /proc/self/fd/N);
- unmounts name the mount through its opened parent (`unmount_name`: /proc/self/fd/P/name, with
  UMOUNT_NOFOLLOW), because a descriptor of the mount itself would keep it busy;
- FIFREEZE/FITHAW go only to a descriptor proven to be the root of the volume's own mount
  (`open_mount_root`: same device as the catalog's loop device, and the root of its mount).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import FailedPrecondition, InvalidArgument, NotFound
from .mountinfo import read_mountinfo

MAX_PATH = 4096
#: What unmount_name yields for a path whose parent is gone: umount2 answers ENOENT for it.
NOWHERE = "/proc/self/fd/-1/gone"


def validate(path: str, field: str, kubelet_dir: str | None = None) -> str:
    """Return path when it is a safe request path; raise InvalidArgument naming field otherwise."""
    if not path:
        raise InvalidArgument(f"{field} is required")
    if "\x00" in path:
        raise InvalidArgument(f"{field} contains a NUL byte")
    if len(path) > MAX_PATH:
        raise InvalidArgument(f"{field} is longer than {MAX_PATH} characters")
    if not path.startswith("/"):
        raise InvalidArgument(f"{field} must be an absolute path, got {path!r}")
    if os.path.normpath(path) != path or path.startswith("//"):
        raise InvalidArgument(
            f"{field} must be a normalized path (no '..', '.', '//' or trailing '/'), got {path!r}"
        )
    if path == "/":
        raise InvalidArgument(f"{field} must not be the root directory")
    if kubelet_dir is not None and not is_below(path, kubelet_dir):
        raise InvalidArgument(f"{field} {path!r} is not below kubelet's directory {kubelet_dir}")
    return path


def is_below(path: str, directory: str) -> bool:
    """True when path is strictly below directory (by whole components: /a/b1 is not below /a/b)."""
    directory = directory.rstrip("/") or "/"
    prefix = directory if directory == "/" else directory + "/"
    return path != directory and path.startswith(prefix)


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def open_path(path: str, trusted_prefix: str | None = None) -> int:
    """Open path as O_PATH without following any symlink below trusted_prefix (or below '/').

    trusted_prefix is a directory the operator configured (kubelet's or the state directory):
    it is resolved once; every component after it must be a real directory or the final entry.
    Raises FileNotFoundError, or InvalidArgument when a component is a symlink.
    """
    start = "/"
    rest = path
    if trusted_prefix is not None and (path == trusted_prefix or is_below(path, trusted_prefix)):
        start = os.path.realpath(trusted_prefix)
        rest = path[len(trusted_prefix.rstrip("/")) :]
    fd = os.open(start, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in _components(rest):
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise InvalidArgument(
                    f"{path!r} contains the symbolic link {part!r}; the driver does not follow links"
                )
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def opened(path: str, trusted_prefix: str | None = None) -> Iterator[str]:
    """Yield a /proc/self/fd/N name for path, held open (see open_path) for the block's duration."""
    fd = open_path(path, trusted_prefix)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def trusted_prefix(path: str, kubelet_dir: str | None, ephemeral_dir: str) -> str | None:
    """The operator-configured directory path lies in (its own symlinks are trusted)."""
    if is_below(path, ephemeral_dir):
        return ephemeral_dir
    return kubelet_dir


@contextmanager
def unmount_name(path: str, trusted_prefix: str | None = None) -> Iterator[str]:
    """Yield /proc/self/fd/P/name for path: its parent held open (walked without symlinks), so
    an unmount of that name with UMOUNT_NOFOLLOW reaches the mount at this very directory entry
    whatever happens to the path's parents meanwhile. A path whose parent is gone yields a name
    that does not resolve (nothing to unmount)."""
    parent, name = os.path.split(path)
    try:
        pfd = open_path(parent, trusted_prefix)
    except (FileNotFoundError, NotADirectoryError):
        yield NOWHERE
        return
    try:
        yield f"/proc/self/fd/{pfd}/{name}"
    finally:
        os.close(pfd)


def mount_id(fd: int) -> int:
    """The id of the mount fd's file lives on (as mountinfo numbers them)."""
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
        for line in f:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(errno.ENOTSUP, "the kernel's fdinfo has no mnt_id")


def open_mount_root(path: str, trusted_prefix: str | None, device: str) -> int | None:
    """A read-only directory descriptor of path, proven to be the root of device's mount.

    None when device is mounted nowhere (the volume is quiescent). FailedPrecondition when device
    is mounted but path (walked without symlinks) does not lead to the root of that mount: a
    freeze through it could stop another filesystem, the host's root included.
    """
    rdev = os.stat(device).st_rdev
    dev = (os.major(rdev), os.minor(rdev))
    table = read_mountinfo()
    if not any((e.major, e.minor) == dev for e in table):
        return None
    try:
        pfd = open_path(path, trusted_prefix)
    except (FileNotFoundError, NotADirectoryError, InvalidArgument):
        pfd = -1  # gone, or reachable only through a symlink: not provably the root
    dfd = -1
    if pfd >= 0:
        try:
            if stat.S_ISDIR(os.fstat(pfd).st_mode):
                dfd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            os.close(pfd)
    if dfd >= 0:
        ident = mount_id(dfd)
        entry = next((e for e in read_mountinfo() if e.mount_id == ident), None)
        if (
            os.fstat(dfd).st_dev == rdev
            and entry is not None
            and (entry.major, entry.minor) == dev
            and entry.root == "/"
            and os.readlink(f"/proc/self/fd/{dfd}") == entry.mount_point
        ):
            return dfd
        os.close(dfd)
    raise FailedPrecondition(
        f"{path} is not the root of the mount of {device} (the volume's filesystem is mounted, "
        "but not reachable there without following a symbolic link): refusing to freeze "
        "whatever is there instead"
    )


@contextmanager
def _parent_dir(path: str, trusted_prefix: str | None) -> Iterator[tuple[int, str]]:
    """(a directory descriptor of path's parent, the last component), walked without symlinks."""
    parent, name = os.path.split(path)
    try:
        pfd = open_path(parent, trusted_prefix)
    except FileNotFoundError as exc:
        raise NotFound(f"the parent directory of {path!r} does not exist") from exc
    try:
        if not stat.S_ISDIR(os.fstat(pfd).st_mode):
            raise InvalidArgument(f"the parent of {path!r} is not a directory")
        # O_PATH descriptors cannot be used with mkdirat/openat; reopen the parent as a directory.
        dfd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield dfd, name
        finally:
            os.close(dfd)
    finally:
        os.close(pfd)


def _refuse_link(path: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise InvalidArgument(
            f"{path!r} is a symbolic link; the driver does not follow links it did not make"
        )


def make_dir(path: str, mode: int = 0o750, trusted_prefix: str | None = None) -> None:
    """Create the directory path (its parent must exist and be reachable without symlinks).

    An existing directory is fine; an existing non-directory is refused.
    """
    with _parent_dir(path, trusted_prefix) as (dfd, name):
        try:
            os.mkdir(name, mode, dir_fd=dfd)
        except FileExistsError:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            _refuse_link(path, st)
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(f"{path!r} exists and is not a directory") from None


def make_file(path: str, mode: int = 0o640, trusted_prefix: str | None = None) -> None:
    """Create an empty regular file at path (the bind-mount target of a block volume)."""
    with _parent_dir(path, trusted_prefix) as (dfd, name):
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            os.close(os.open(name, flags, mode, dir_fd=dfd))
        except FileExistsError:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            _refuse_link(path, st)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument(f"{path!r} exists and is not a regular file") from None


def remove_mount_point(path: str, trusted_prefix: str | None = None) -> bool:
    """Remove what a publish left at path once it is unmounted: an empty directory or an empty
    regular file. Anything else (a directory with content, a file with data, a symlink, a device
    node) is not the driver's to delete and stays. True when something was removed.
    """
    try:
        with _parent_dir(path, trusted_prefix) as (dfd, name):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                try:
                    os.rmdir(name, dir_fd=dfd)
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        return False
                    raise
                return True
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(name, dir_fd=dfd)
                return True
            return False
    except (NotFound, FileNotFoundError):
        return False
