"""An in-memory stand-in for the kernel's mount table, for unit tests of the layers above.

FakeMounter is both a Mounter (records every call) and a MountTable (its entries() are the
mountinfo lines the kernel would show): each mounted source gets a device number of its own, and a
bind shares the device and root of the mount it copies, so "is this volume mounted here" tells
volumes apart as it does on a real node.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .mount_options import MountError, bind_flags, split_options
from .mountinfo import MountEntry, find_mount, normalize, split_outside_quotes
from .mounts import PROC_FD_PREFIX
from .syscalls import MS_RDONLY


def _resolved(path: str) -> str:
    """A /proc/self/fd/N name (a held descriptor) as the directory it reaches."""
    return os.path.realpath(path) if path.startswith(PROC_FD_PREFIX) else path


@dataclass
class FakeMount:
    source: str
    target: str
    fs_type: str
    options: tuple[str, ...]
    kind: str  # "mount", "bind" or "helper"
    read_only: bool = False
    #: (major, minor) of the superblock, and the directory of it that is mounted (mountinfo root).
    device: tuple[int, int] = (0, 0)
    root: str = "/"


@dataclass
class FakeMounter:
    """An in-memory mount table that records every call, for unit tests of the layers above.

    Queue a failure with fail("mount", MountError(...)); the next call of that method raises it.
    entries() turns the table into MountEntry values for code that reads mountinfo.
    """

    mounts: list[FakeMount] = field(default_factory=list)
    calls: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)
    failures: dict[str, list[MountError]] = field(default_factory=dict)
    devices: dict[str, tuple[int, int]] = field(default_factory=dict)

    def fail(self, method: str, error: MountError) -> None:
        self.failures.setdefault(method, []).append(error)

    def _record(self, method: str, *args: object) -> None:
        self.calls.append((method, args))
        queued = self.failures.get(method)
        if queued:
            raise queued.pop(0)

    def _device(self, source: str) -> tuple[int, int]:
        """One device number per mounted source, as the kernel gives one superblock per device."""
        return self.devices.setdefault(source, (0, 100 + len(self.devices)))

    def mount(self, source: str, target: str, fs_type: str, options: Sequence[str]) -> None:
        self._record("mount", source, target, fs_type, tuple(options))
        flags, _ = split_options(options)
        ro = bool(flags & MS_RDONLY)
        dev = self._device(source)
        self.mounts.append(
            FakeMount(source, _resolved(target), fs_type, tuple(options), "mount", ro, dev)
        )

    def bind(
        self, source: str, target: str, read_only: bool = False, extra_flags: Sequence[str] = ()
    ) -> None:
        self._record("bind", source, target, read_only, tuple(extra_flags))
        flags = bind_flags(read_only, extra_flags)
        below = self.mount_at(_resolved(source))
        ro = bool(flags & MS_RDONLY)
        target = _resolved(target)
        if below is None:
            # A file or device node that is no mount point: its own device, its name the root
            # (a bind of /dev/loop3 shows root /loop3 in mountinfo).
            dev = self._device(_resolved(source))
            root = "/" + os.path.basename(_resolved(source))
            self.mounts.append(
                FakeMount(source, target, "none", tuple(extra_flags), "bind", ro, dev, root)
            )
            return
        # A bind shares the source mount's superblock (its options, device and root).
        options = (*below.options, *extra_flags)
        self.mounts.append(
            FakeMount(source, target, below.fs_type, options, "bind", ro, below.device, below.root)
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
        dev = self._device(source)
        self.mounts.append(
            FakeMount(source, _resolved(target), fs_type, tuple(options), "helper", device=dev)
        )

    def unmount(self, target: str) -> None:
        self._record("unmount", target)
        found = self.mount_at(_resolved(target))
        if found is not None:
            self.mounts.remove(found)

    def mount_at(self, target: str) -> FakeMount | None:
        """The topmost fake mount at exactly target."""
        wanted = normalize(target)
        for m in reversed(self.mounts):
            if normalize(m.target) == wanted:
                return m
        return None

    def mount_at_fd(self, fd: int, entries: Sequence[MountEntry]) -> MountEntry | None:
        """The fake mount at the path fd was opened at (the fake has no mount ids to ask the
        kernel about: the path the kernel names for fd decides)."""
        return find_mount(os.readlink(f"/proc/self/fd/{fd}"), entries)

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
                    major=m.device[0],
                    minor=m.device[1],
                    root=m.root,
                    mount_point=normalize(m.target),
                    mount_options=("ro" if ro else "rw",),
                    optional_fields=(),
                    fs_type=m.fs_type,
                    source=m.source,
                    super_options=("ro" if ro else "rw", *split_outside_quotes(data)),
                )
            )
        return result
