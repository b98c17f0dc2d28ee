"""The mount-table seam: one read of the table per operation, and one meaning of "mounted here".

`MountTable` is where the mount table comes from: `ProcMountTable` reads /proc/self/mountinfo,
`fake_mounts.FakeMounter` is the in-memory stand-in for unit tests. `MountView` is one read of it
(a snapshot: every question of one operation gets its answer from the same table), and it answers
the two questions the node asks:

- `at(path)`: the topmost mount at path, with path opened exactly as `paths.py` walks it (the
  operator's trusted directory resolved once, no symlink below it followed), so a symlinked
  kubelet directory finds its mounts and a planted link never leads to another one. The mount is
  found from the opened descriptor (statx: its mount id and whether it is that mount's root), not
  by comparing path strings with the table: a parent renamed between the table's read and the
  lookup cannot hide a mount, so a publish never stacks a second one on it;
- `volume_at(staging, path, device)`: the mount at path when it is the volume's, the one check
  that stats, expansion, health, snapshots and recovery share: a filesystem volume's mount has the
  same device and root as its staging mount (whose device, for a volume on a block device, is
  that device), a block volume's bind shows its device node as its root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from . import paths, syscalls
from .errors import InvalidArgument
from .models import AccessType, Staging
from .mountinfo import MountEntry, find_mount, read_mountinfo

#: The trusted directory of a path (paths.trusted_prefix with the driver's configuration).
TrustedPrefix = Callable[[str], str | None]


class MountTable(Protocol):
    """Where the mount table comes from."""

    def entries(self) -> list[MountEntry]:
        """One read of the whole table, in the kernel's order (parents before children)."""
        ...

    def mount_at_fd(self, fd: int, entries: Sequence[MountEntry]) -> MountEntry | None:
        """The mount whose root the open file fd is (the topmost one at its path), looked up in
        entries; None when fd is not a mount's root."""
        ...


class ProcMountTable:
    """The kernel's table of this process's mount namespace."""

    def entries(self) -> list[MountEntry]:
        return read_mountinfo()

    def mount_at_fd(self, fd: int, entries: Sequence[MountEntry]) -> MountEntry | None:
        mount_id, is_root = syscalls.mount_of(fd)
        if not is_root:
            return None
        for table in (entries, self.entries()):  # a mount made after entries were read
            for entry in table:
                if entry.mount_id == mount_id:
                    return entry
        return None


def _device_number(device: str) -> tuple[int, int] | None:
    """(major, minor) of a block device node; None when device is not one (or is gone)."""
    try:
        st = os.stat(device)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


@dataclass(frozen=True, slots=True)
class MountView:
    """One read of the mount table, looked up by paths resolved as the driver walks them."""

    table: MountTable
    entries: Sequence[MountEntry]
    trusted: TrustedPrefix

    @classmethod
    def read(cls, table: MountTable, trusted: TrustedPrefix) -> MountView:
        return cls(table, tuple(table.entries()), trusted)

    def resolve(self, path: str) -> str | None:
        """The kernel's name for path (what mountinfo shows), or None when it does not exist.

        InvalidArgument when path leads through a symlink below its trusted directory.
        """
        try:
            fd = paths.open_path(path, self.trusted(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def lookup(self, path: str) -> tuple[bool, MountEntry | None]:
        """(path could be opened, the topmost mount at it): one open, one answer.

        InvalidArgument when path leads through a symlink below its trusted directory.
        """
        try:
            fd = paths.open_path(path, self.trusted(path))
        except (FileNotFoundError, NotADirectoryError):
            return False, None
        try:
            return True, self.table.mount_at_fd(fd, self.entries)
        finally:
            os.close(fd)

    def at(self, path: str) -> MountEntry | None:
        """The topmost mount at path (None when path is no mount point or does not exist)."""
        return self.lookup(path)[1]

    def named(self, path: str) -> MountEntry | None:
        """The topmost mount whose mount point carries path's name, for a path that cannot be
        reached right now (a parent renamed or missing): a mount we cannot see is not gone."""
        return find_mount(path, self.entries)

    def staging_mount(self, st: Staging) -> MountEntry | None:
        """The volume's staging mount: the mount at its staging path, when it is on the staging's
        device (for a volume on a block device); None for a block-access staging (no mount)."""
        if st.access_type is AccessType.BLOCK:
            return None
        try:
            entry = self.at(st.staging_path)
        except InvalidArgument:
            return None  # reachable only through a link the driver did not make: not its mount
        if entry is None:
            return None
        dev = _device_number(st.device) if st.device else None
        if dev is not None and (entry.major, entry.minor) != dev:
            return None
        return entry

    def volume_at(self, st: Staging, path: str, device: str = "") -> MountEntry | None:
        """The mount at path when it is the volume staged as st (see is_volume)."""
        try:
            entry = self.at(path)
        except InvalidArgument:
            return None
        return entry if entry is not None and self.is_volume(st, entry, device) else None

    def is_volume(self, st: Staging, entry: MountEntry, device: str = "") -> bool:
        """True when entry (a mount already looked up) is the volume staged as st: same device
        and root as its staging mount; for block access, a bind of device or of the staging's
        device. Callers that looked the entry up themselves use this, not volume_at, so that one
        resolution of the path decides (a second one may see a path swapped meanwhile)."""
        if st.access_type is AccessType.BLOCK:
            node = device or st.device
            return bool(node) and entry.root == "/" + os.path.basename(node)
        staged = self.staging_mount(st)
        if staged is None:
            return False
        return (entry.major, entry.minor, entry.root) == (staged.major, staged.minor, staged.root)
