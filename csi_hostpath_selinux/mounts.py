"""The mount table, and mounting: mount(2) for local filesystems, helpers for network ones.

Why mount(2) and not util-linux for local filesystems: libmount drops SELinux options (context=
and friends) without a word when selinuxfs is not visible read-write (DESIGN.md). mount(2) hands
the data string to the kernel as it is, so `context="user:role:type:s0:c1,c2"` arrives whole,
quotes included (the kernel removes them itself).

Mount options are lists of whole entries. An entry is split only on commas outside double quotes,
so the comma in an MCS level never cuts a label in two, and nothing here goes through a shell.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import syscalls
from .syscalls import (
    MS_BIND,
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
    MS_REMOUNT,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
)

log = logging.getLogger(__name__)

MOUNTINFO = "/proc/self/mountinfo"
PROC_FD_PREFIX = "/proc/self/fd/"
#: How long a mount helper may run (a network mount to a dead server can hang for minutes).
HELPER_TIMEOUT_SECONDS = 120.0
#: Where mount.cifs looks for a user name and password besides its options.
HELPER_CREDENTIAL_VARIABLES = frozenset({"USER", "PASSWD", "PASSWD_FD", "PASSWD_FILE"})

_ATIME = MS_NOATIME | MS_RELATIME | MS_STRICTATIME

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
    "noatime": (MS_NOATIME, _ATIME),
    "atime": (0, MS_NOATIME),
    "nodiratime": (MS_NODIRATIME, 0),
    "diratime": (0, MS_NODIRATIME),
    "relatime": (MS_RELATIME, _ATIME),
    "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, _ATIME),
    "lazytime": (MS_LAZYTIME, 0),
    "nolazytime": (0, MS_LAZYTIME),
    "mand": (MS_MANDLOCK, 0),
    "nomand": (0, MS_MANDLOCK),
    "nosymfollow": (MS_NOSYMFOLLOW, 0),
}

#: Per-mount flags a bind mount can carry, with their mount_setattr(2) attribute.
_BIND_ATTRS: dict[int, int] = {
    MS_RDONLY: syscalls.MOUNT_ATTR_RDONLY,
    MS_NOSUID: syscalls.MOUNT_ATTR_NOSUID,
    MS_NODEV: syscalls.MOUNT_ATTR_NODEV,
    MS_NOEXEC: syscalls.MOUNT_ATTR_NOEXEC,
    MS_NODIRATIME: syscalls.MOUNT_ATTR_NODIRATIME,
    MS_NOSYMFOLLOW: syscalls.MOUNT_ATTR_NOSYMFOLLOW,
}
_BIND_ATIME: dict[int, int] = {
    MS_NOATIME: syscalls.MOUNT_ATTR_NOATIME,
    MS_RELATIME: syscalls.MOUNT_ATTR_RELATIME,
    MS_STRICTATIME: syscalls.MOUNT_ATTR_STRICTATIME,
}
#: statvfs f_flag bits of a mount -> the MS_* flag that keeps them on a remount.
_STATVFS_FLAGS: tuple[tuple[int, int], ...] = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)

_ESCAPE = re.compile(r"\\([0-7]{3})")
_PROC_FD_LINK = re.compile(r"/proc/self/fd/[0-9]+")


class MountError(Exception):
    """A mount or unmount failed. errno is the kernel's when the failure came from a syscall.

    EBUSY from a mount with context= means the filesystem is already mounted elsewhere with other
    security settings (the kernel logs "Same superblock, different security settings").
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno


# mountinfo


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/<pid>/mountinfo (proc(5)), with octal escapes decoded."""

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


def unescape(field_text: str) -> str:
    """Decode the kernel's octal escapes (\\040 space, \\011 tab, \\012 newline, \\134 \\)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field_text)


def split_outside_quotes(text: str, sep: str = ",") -> list[str]:
    """Split text on sep where it is not inside double quotes; empty pieces are dropped."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p]


def parse_mountinfo_line(line: str) -> MountEntry:
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
    return MountEntry(
        mount_id=mount_id,
        parent_id=parent_id,
        major=major,
        minor=minor,
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        mount_options=tuple(split_outside_quotes(fields[5])),
        optional_fields=tuple(fields[6:sep]),
        fs_type=unescape(fields[sep + 1]),
        source=unescape(fields[sep + 2]),
        super_options=tuple(unescape(o) for o in split_outside_quotes(fields[sep + 3])),
    )


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse the text of a mountinfo file, in the kernel's order (parents before children)."""
    return [parse_mountinfo_line(line) for line in text.split("\n") if line.strip()]


def read_mountinfo(path: str = MOUNTINFO) -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        return parse_mountinfo(f.read())


def _normalize(path: str) -> str:
    stripped = path.rstrip("/")
    return stripped or "/"


def find_mount(mount_point: str, entries: Sequence[MountEntry] | None = None) -> MountEntry | None:
    """The topmost (last) mount at exactly mount_point; never a prefix or substring match."""
    wanted = _normalize(mount_point)
    table = read_mountinfo() if entries is None else entries
    for entry in reversed(table):
        if entry.mount_point == wanted:
            return entry
    return None


def mounts_under(prefix_dir: str, entries: Sequence[MountEntry] | None = None) -> list[MountEntry]:
    """Mounts at prefix_dir or below it, by whole path components (/a/vol-1 is not /a/vol-10)."""
    base = _normalize(prefix_dir)
    below = "/" if base == "/" else base + "/"
    table = read_mountinfo() if entries is None else entries
    return [e for e in table if e.mount_point == base or e.mount_point.startswith(below)]


# options


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


def _describe(options: Iterable[str]) -> str:
    text = ",".join(options)
    return text or "no options"


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _proc_fd_path(path: str) -> bool:
    return path.startswith(PROC_FD_PREFIX)


# mounters


class Mounter(Protocol):
    """What the driver needs to mount and unmount; LinuxMounter is real, FakeMounter for tests."""

    def mount(self, source: str, target: str, fs_type: str, options: Sequence[str]) -> None: ...

    def bind(
        self, source: str, target: str, read_only: bool = False, extra_flags: Sequence[str] = ()
    ) -> None: ...

    def mount_helper(
        self,
        source: str,
        target: str,
        fs_type: str,
        options: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None: ...

    def unmount(self, target: str) -> None: ...

    def is_mount_point(self, path: str) -> bool: ...


def _bind_flags(read_only: bool, extra_flags: Sequence[str]) -> int:
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


class LinuxMounter:
    """Mounts with the kernel's system calls; network filesystems through their mount helpers.

    Targets may be /proc/self/fd/N names of directories opened without following symlinks: the
    mount lands on the directory the descriptor holds.
    """

    def __init__(self, helper_timeout: float = HELPER_TIMEOUT_SECONDS) -> None:
        self.helper_timeout = helper_timeout

    def mount(self, source: str, target: str, fs_type: str, options: Sequence[str]) -> None:
        """mount(2) of a filesystem; options become MS_* flags and the data string."""
        flags, data = split_options(options)
        try:
            syscalls.mount(source, target, fs_type, flags, data or None)
        except OSError as exc:
            message = (
                f"mount of {source} on {target} as {fs_type} with {_describe(options)} failed: "
                f"{os.strerror(exc.errno) if exc.errno else exc}"
            )
            if exc.errno == errno.EBUSY and "context=" in data:
                message += (
                    " (the filesystem is already mounted with different security settings: "
                    "another SELinux context)"
                )
            raise MountError(message, exc.errno) from exc
        log.debug(
            "mounted %s on %s as %s (flags %#x, data %r)", source, target, fs_type, flags, data
        )

    def bind(
        self, source: str, target: str, read_only: bool = False, extra_flags: Sequence[str] = ()
    ) -> None:
        """Bind-mount source on target, read-only and with per-mount flags when asked.

        The restrictions are applied to a detached copy of the mount before it is attached
        (open_tree + mount_setattr + move_mount), so the target is never visible without them.
        Kernels without that API get MS_BIND followed by MS_REMOUNT|MS_BIND, which keeps the
        source's own restrictions. Superblock options (sync, lazytime, ...) cannot differ per
        mount and are left to the source's filesystem.
        """
        flags = _bind_flags(read_only, extra_flags)
        try:
            self._bind_detached(source, target, flags)
        except OSError as exc:
            # ENOSYS: a kernel before 5.12; EPERM: also what seccomp profiles answer for system
            # calls they do not know. The classic calls give a real EPERM again if it is one.
            if exc.errno not in (errno.ENOSYS, errno.EPERM):
                raise MountError(
                    f"bind mount of {source} on {target} failed: {os.strerror(exc.errno or 0)}",
                    exc.errno,
                ) from exc
            self._bind_legacy(source, target, flags)
        log.debug("bind-mounted %s on %s (flags %#x)", source, target, flags)

    def _bind_detached(self, source: str, target: str, flags: int) -> None:
        tree = syscalls.open_tree(source, syscalls.OPEN_TREE_CLONE | syscalls.OPEN_TREE_CLOEXEC)
        try:
            attr_set = 0
            for ms_flag, attr in _BIND_ATTRS.items():
                if flags & ms_flag:
                    attr_set |= attr
            attr_clr = 0
            for ms_flag, attr in _BIND_ATIME.items():
                if flags & ms_flag:
                    attr_set |= attr
                    attr_clr = syscalls.MOUNT_ATTR__ATIME
            if attr_set or attr_clr:
                syscalls.mount_setattr(tree, attr_set, attr_clr)
            syscalls.move_mount(tree, target)
            if flags & MS_RDONLY and not os.fstatvfs(tree).f_flag & os.ST_RDONLY:
                self.unmount(target)
                raise MountError(f"the bind mount on {target} is not read-only", errno.EROFS)
        finally:
            os.close(tree)

    def _bind_legacy(self, source: str, target: str, flags: int) -> None:
        try:
            syscalls.mount(source, target, None, MS_BIND, None)
        except OSError as exc:
            raise MountError(
                f"bind mount of {source} on {target} failed: {os.strerror(exc.errno or 0)}",
                exc.errno,
            ) from exc
        if not flags:
            return
        # A remount resolves the path again; /proc/self/fd/N would name the covered directory.
        where = os.readlink(target) if _proc_fd_path(target) else target
        try:
            current = os.statvfs(where).f_flag
            keep = 0
            for st_flag, ms_flag in _STATVFS_FLAGS:
                if current & st_flag:
                    keep |= ms_flag
            if flags & _ATIME:  # an atime option in the request replaces the source's
                keep &= ~_ATIME
            syscalls.mount(None, where, None, MS_REMOUNT | MS_BIND | keep | flags, None)
        except OSError as exc:
            self.unmount(where)
            raise MountError(
                f"applying {flags:#x} to the bind mount on {target} failed: "
                f"{os.strerror(exc.errno or 0)}",
                exc.errno,
            ) from exc

    def mount_helper(
        self,
        source: str,
        target: str,
        fs_type: str,
        options: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Run util-linux `mount -t fs_type` (argv, no shell) for filesystems that need a helper.

        env is added to the driver's environment (mount.cifs reads USER and PASSWD from it, so
        secrets never appear in argv); its values are never put in an error message. The
        credential variables of the driver's own environment are not passed on: credentials come
        from the request or not at all.

        A helper never waits for an answer: stdin is /dev/null and it runs in a session of its
        own, without a controlling terminal, so a password prompt (mount.cifs asks on /dev/tty)
        fails at once instead of hanging until the timeout.
        """
        argv = ["mount", "-t", fs_type]
        if options:
            argv += ["-o", ",".join(options)]
        argv += [source, target]
        inherited = {k: v for k, v in os.environ.items() if k not in HELPER_CREDENTIAL_VARIABLES}
        full_env = {**inherited, **(env or {})}
        secrets = [v for v in (env or {}).values() if v]
        try:
            proc = subprocess.run(
                argv,
                env=full_env,
                capture_output=True,
                text=True,
                check=False,
                timeout=self.helper_timeout,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise MountError(
                _redact(
                    f"mount -t {fs_type} of {source} on {target} did not finish in "
                    f"{self.helper_timeout:g} s",
                    secrets,
                ),
                errno.ETIMEDOUT,
            ) from None
        except OSError as exc:
            raise MountError(f"cannot run mount: {exc.strerror}", exc.errno) from exc
        if proc.returncode != 0:
            detail = proc.stderr.strip() or proc.stdout.strip() or "no output"
            raise MountError(
                _redact(
                    f"mount -t {fs_type} of {source} on {target} failed "
                    f"(exit {proc.returncode}): {detail}",
                    secrets,
                )
            )
        log.debug("mounted %s on %s with mount -t %s", source, target, fs_type)

    def unmount(self, target: str) -> None:
        """umount2 without MNT_DETACH (never lazy); a target that is not mounted is fine.

        The last component is never followed if it is a symlink, except a bare /proc/self/fd/N
        name, which is the descriptor itself. /proc/self/fd/P/name (paths.unmount_name) reaches
        name inside the held directory P.
        """
        flags = 0 if _PROC_FD_LINK.fullmatch(target) else syscalls.UMOUNT_NOFOLLOW
        try:
            syscalls.umount2(target, flags)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return
            raise MountError(
                f"unmount of {target} failed: {os.strerror(exc.errno or 0)}", exc.errno
            ) from exc
        log.debug("unmounted %s", target)

    def is_mount_point(self, path: str) -> bool:
        """True when something is mounted exactly at path (per /proc/self/mountinfo)."""
        if _proc_fd_path(path):
            path = os.readlink(path)
        return find_mount(path) is not None


# the fake


@dataclass
class FakeMount:
    source: str
    target: str
    fs_type: str
    options: tuple[str, ...]
    kind: str  # "mount", "bind" or "helper"
    read_only: bool = False


@dataclass
class FakeMounter:
    """An in-memory mount table that records every call, for unit tests of the layers above.

    Queue a failure with fail("mount", MountError(...)); the next call of that method raises it.
    entries() turns the table into MountEntry values for code that reads mountinfo.
    """

    mounts: list[FakeMount] = field(default_factory=list)
    calls: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)
    failures: dict[str, list[MountError]] = field(default_factory=dict)

    def fail(self, method: str, error: MountError) -> None:
        self.failures.setdefault(method, []).append(error)

    def _record(self, method: str, *args: object) -> None:
        self.calls.append((method, args))
        queued = self.failures.get(method)
        if queued:
            raise queued.pop(0)

    def mount(self, source: str, target: str, fs_type: str, options: Sequence[str]) -> None:
        self._record("mount", source, target, fs_type, tuple(options))
        flags, _ = split_options(options)
        self.mounts.append(
            FakeMount(source, target, fs_type, tuple(options), "mount", bool(flags & MS_RDONLY))
        )

    def bind(
        self, source: str, target: str, read_only: bool = False, extra_flags: Sequence[str] = ()
    ) -> None:
        self._record("bind", source, target, read_only, tuple(extra_flags))
        flags = _bind_flags(read_only, extra_flags)
        below = self.mount_at(source)
        fs_type = below.fs_type if below else "none"
        # A bind shares the source mount's superblock (its options) and lands on the directory
        # a /proc/self/fd/N target holds.
        options = (*below.options, *extra_flags) if below else tuple(extra_flags)
        if _proc_fd_path(target):
            target = os.path.realpath(target)
        self.mounts.append(
            FakeMount(source, target, fs_type, options, "bind", bool(flags & MS_RDONLY))
        )

    def mount_helper(
        self,
        source: str,
        target: str,
        fs_type: str,
        options: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._record("mount_helper", source, target, fs_type, tuple(options), dict(env or {}))
        self.mounts.append(FakeMount(source, target, fs_type, tuple(options), "helper"))

    def unmount(self, target: str) -> None:
        self._record("unmount", target)
        if _proc_fd_path(target):  # a name through a held descriptor: the directory it reaches
            target = os.path.realpath(target)
        found = self.mount_at(target)
        if found is not None:
            self.mounts.remove(found)

    def is_mount_point(self, path: str) -> bool:
        return self.mount_at(path) is not None

    def mount_at(self, target: str) -> FakeMount | None:
        """The topmost fake mount at exactly target."""
        wanted = _normalize(target)
        for m in reversed(self.mounts):
            if _normalize(m.target) == wanted:
                return m
        return None

    def entries(self) -> list[MountEntry]:
        """The table as mountinfo entries (ids from 1000; flags in mount_options, data in super)."""
        result = []
        for i, m in enumerate(self.mounts):
            flags, data = split_options(m.options)
            ro = m.read_only or bool(flags & MS_RDONLY)
            result.append(
                MountEntry(
                    mount_id=1000 + i,
                    parent_id=1,
                    major=0,
                    minor=0,
                    root="/",
                    mount_point=_normalize(m.target),
                    mount_options=("ro" if ro else "rw",),
                    optional_fields=(),
                    fs_type=m.fs_type,
                    source=m.source,
                    super_options=("ro" if ro else "rw", *split_outside_quotes(data)),
                )
            )
        return result
