"""Mounting: mount(2) for local filesystems, util-linux helpers for network ones.

Why mount(2) and not util-linux for local filesystems: libmount drops SELinux options (context=
and friends) without a word when selinuxfs is not visible read-write (DESIGN.md). mount(2) hands
the data string to the kernel as it is, so `context="user:role:type:s0:c1,c2"` arrives whole,
quotes included (the kernel removes them itself). Options are split in `mount_options`, the mount
table is read in `mountinfo` and looked up in `mounttable`; the in-memory fake is `fake_mounts`.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from . import syscalls
from .mount_options import (
    ATIME,
    BIND_ATIME,
    BIND_ATTRS,
    STATVFS_FLAGS,
    MountError,
    bind_flags,
    split_options,
)
from .syscalls import MS_BIND, MS_RDONLY, MS_REMOUNT

log = logging.getLogger(__name__)

PROC_FD_PREFIX = "/proc/self/fd/"
#: How long a mount helper may run (a network mount to a dead server can hang for minutes).
HELPER_TIMEOUT_SECONDS = 120.0
#: Where mount.cifs looks for a user name and password besides its options.
HELPER_CREDENTIAL_VARIABLES = frozenset({"USER", "PASSWD", "PASSWD_FD", "PASSWD_FILE"})

_PROC_FD_LINK = re.compile(r"/proc/self/fd/[0-9]+")


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
        flags = bind_flags(read_only, extra_flags)
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
            for ms_flag, attr in BIND_ATTRS.items():
                if flags & ms_flag:
                    attr_set |= attr
            attr_clr = 0
            for ms_flag, attr in BIND_ATIME.items():
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
            for st_flag, ms_flag in STATVFS_FLAGS:
                if current & st_flag:
                    keep |= ms_flag
            if flags & ATIME:  # an atime option in the request replaces the source's
                keep &= ~ATIME
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
