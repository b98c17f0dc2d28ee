"""The one small interface every kind of volume implements.

A backend owns where a volume's data lives and how it is mounted at the staging path. Everything
that is the same for every kind (request validation, SELinux label checks and verification,
publishing by bind mount, the catalog, locking) lives in the controller and node layers, so a
vendor adds a kind of storage by writing one subclass of Backend and registering it
(`backends.register`, see docs/vendor-guide.md); tests/contract checks that a kind keeps this
contract. Everything that depends on how a kind lays out its storage (where a volume, a snapshot
and a clone's source live, what can be frozen, which leftovers are its own, what its health
signals are) is asked of the backend here, never decided elsewhere by the kind's name.
"""

from __future__ import annotations

import abc
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import FailedPrecondition, InvalidArgument
from ..models import AccessType, HealthIssue, Staging, Volume, is_snapshot_id, is_volume_id
from ..mounts import Mounter
from ..selinux import MountFlags


@dataclass(frozen=True)
class BackendEnv:
    """What a backend may touch: its own directories under the state directory, and the mounter."""

    state_dir: Path
    mounter: Mounter
    #: Allocate image files in full (--preallocate) instead of leaving them sparse.
    preallocate: bool = False

    @property
    def volumes_dir(self) -> Path:
        return self.state_dir / "volumes"

    @property
    def snapshots_dir(self) -> Path:
        return self.state_dir / "snapshots"

    @property
    def work_dir(self) -> Path:
        """Private mount points for controller work on network shares."""
        return self.state_dir / "work"


@dataclass(frozen=True)
class StageRequest:
    volume: Volume
    staging_path: str  # the validated staging path, as kubelet sent it (for messages only)
    #: /proc/self/fd/N of that directory, opened without following symlinks: mount only here
    #: (a helper that resolves paths mounts privately, then attaches, as network.py does).
    mount_target: str
    flags: MountFlags  # parsed mount flags, SELinux options included
    secrets: Mapping[str, str]
    read_only: bool
    #: VolumeCapability.mount.volume_mount_group: the pod's fsGroup, for kinds that apply it
    #: through a mount option (CIFS); "" when not given.
    mount_group: str = ""


class Backend(abc.ABC):
    """One kind of volume."""

    kind: ClassVar[str]
    #: The backend mounts with a util-linux helper, which drops SELinux options silently
    #: unless selinuxfs is visible read-write (see DESIGN.md); local kinds use mount(2).
    uses_mount_helper: ClassVar[bool] = False
    #: A context= mount gives the volume its own label (False for bind-mounted directories).
    can_label: ClassVar[bool] = True
    supports_block: ClassVar[bool] = False
    #: fs_type values a request may name for this kind ("" always means the default).
    fs_types: ClassVar[tuple[str, ...]] = ()
    default_fs_type: ClassVar[str] = ""
    #: A grown volume needs NodeExpandVolume (loop capacity, filesystem) before pods see it.
    node_expansion: ClassVar[bool] = False
    #: The kind applies volume_mount_group (fsGroup) through a mount option itself.
    mount_group_option: ClassVar[bool] = False
    #: Why a label is impossible, for the error a pod author reads.
    no_label_reason: ClassVar[str] = ""
    #: Options a mount of this kind needs beside its label so that the labelled mount gets a
    #: superblock of its own (NFS: nosharecache, CIFS: nosharesock); added when a label is asked.
    label_extra_options: ClassVar[tuple[str, ...]] = ()
    #: The volume's data lives in the state directory (so its size must fit in its free space).
    stored_in_state_dir: ClassVar[bool] = True

    def __init__(self, env: BackendEnv) -> None:
        self.env = env

    def check_parameters(self, parameters: Mapping[str, str]) -> dict[str, str]:
        """Validate the StorageClass parameters this kind understands; return what to store."""
        unknown = sorted(set(parameters) - self.known_parameters())
        if unknown:
            raise InvalidArgument(
                f"unknown parameter {unknown[0]!r} for volumes of kind {self.kind!r}; "
                f"known: {', '.join(sorted(self.known_parameters())) or 'none'}"
            )
        return dict(parameters)

    def known_parameters(self) -> set[str]:
        return set()

    def check_fs_type(self, fs_type: str, access_type: AccessType) -> str:
        """Return the fs type to use for a request naming fs_type (may be "")."""
        if access_type is AccessType.BLOCK:
            if not self.supports_block:
                raise InvalidArgument(f"volumes of kind {self.kind!r} do not support block access")
            return ""
        if not fs_type:
            return self.default_fs_type
        if self.fs_types and fs_type not in self.fs_types:
            raise InvalidArgument(
                f"fsType {fs_type!r} is not supported for volumes of kind {self.kind!r}; "
                f"use one of: {', '.join(self.fs_types)}"
            )
        return fs_type if self.fs_types else self.default_fs_type

    def minimum_bytes(self, fs_type: str) -> int:
        return 0

    @abc.abstractmethod
    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        """Allocate the volume's storage; source is a snapshot or volume image to copy from."""

    @abc.abstractmethod
    def delete(self, volume: Volume, secrets: Mapping[str, str]) -> None:
        """Release the volume's storage; a missing one is not an error."""

    @abc.abstractmethod
    def stage(self, request: StageRequest) -> str:
        """Mount (or, for block access, attach) the volume; return the device path or ""."""

    @abc.abstractmethod
    def unstage(self, volume: Volume, staging_path: str, device: str) -> None:
        """Undo stage: unmount the staging path and release the device; idempotent.

        staging_path is a name that reaches the staging directory through its held parent
        (/proc/self/fd/P/name, see paths.unmount_name): pass it to the mounter's unmount as it
        is, never resolve or rebuild it.
        """

    def publish_device(self, volume: Volume, staged_device: str, read_only: bool) -> str:
        """The device to bind at a block volume's target (a read-only one when asked)."""
        if read_only:
            raise FailedPrecondition(
                f"volumes of kind {self.kind!r} cannot be published read-only as block devices"
            )
        return staged_device

    def release_publish_device(self, volume: Volume, device: str) -> None:
        """Release a device publish_device made for one publication."""
        return  # the base kind makes none: its targets share the staged device

    def health(self, volume: Volume) -> list[HealthIssue]:
        """Adverse conditions of the volume's storage (not of its mounts); [] when healthy."""
        return []

    # snapshots and expansion: optional per kind

    #: File suffix of this kind's snapshots ("" when the kind cannot snapshot).
    snapshot_suffix: ClassVar[str] = ""

    def snapshot(self, volume: Volume, dest: Path, mount_point: str | None) -> int:
        """Write a point-in-time copy of the volume to dest; return its size in bytes.

        mount_point is where the volume is mounted on this node, if it is (to freeze it).
        """
        raise FailedPrecondition(f"volumes of kind {self.kind!r} cannot be snapshotted")

    def expand(self, volume: Volume, new_bytes: int) -> bool:
        """Grow the volume's storage; return True when the node must grow the filesystem."""
        raise FailedPrecondition(f"volumes of kind {self.kind!r} cannot be expanded")

    def node_expand(self, volume: Volume, device: str, mount_path: str | None) -> None:
        """Make a grown volume's new size visible on the node (loop capacity, filesystem)."""
        raise FailedPrecondition(f"volumes of kind {self.kind!r} cannot be expanded")

    # layout: where the kind keeps its storage (every path stays under env.state_dir)

    #: Suffix of the name a volume's storage has in env.volumes_dir (".img" for an image file,
    #: "" for a directory named by the volume id). Two local kinds must not share a suffix.
    volume_suffix: ClassVar[str] = ""

    def volume_path(self, volume_id: str) -> Path | None:
        """Where the volume's storage lives under the state directory; None when it lives
        elsewhere (a network share, a volume group): then the kind has no local orphans."""
        if not self.stored_in_state_dir:
            return None
        return self.env.volumes_dir / f"{volume_id}{self.volume_suffix}"

    def snapshot_path(self, snapshot_id: str) -> Path:
        """The file a snapshot of this kind is written to (and restored from)."""
        return self.env.snapshots_dir / f"{snapshot_id}{self.snapshot_suffix}"

    def can_snapshot(self) -> bool:
        """Whether snapshot() works for this kind (declared by a non-empty snapshot_suffix)."""
        return bool(self.snapshot_suffix)

    def clone_source(self, volume: Volume) -> Path | None:
        """What create() receives as `source` to clone volume; None: the kind cannot clone."""
        return self.volume_path(volume.id)

    def can_freeze(self, volume: Volume) -> bool:
        """Whether snapshot() freezes the volume while it is mounted (so a group snapshot may
        include it while pods use it, and start-up thaws what a killed copy left frozen)."""
        return False

    #: A snapshot of a block volume is a file of the device's bytes at their offsets, holes
    #: where nothing was written, so the SnapshotMetadata service can read its extents.
    raw_block_snapshots: ClassVar[bool] = False

    # start-up recovery: what this kind left on disk

    def stored_volume_ids(self) -> set[str]:
        """Ids of the volumes whose storage of this kind exists on this node (the orphan scan:
        recovery removes those the catalog does not list and an intent proves unfinished)."""
        return _ids_in(self.env.volumes_dir, self.volume_suffix, is_volume_id, self.volume_path)

    def remove_storage(self, volume_id: str) -> None:
        """Remove an orphan's storage, known only by its id (no catalog record); idempotent.
        Never follows a symlink: a link in the storage's place is removed, not its target."""
        path = self.volume_path(volume_id)
        if path is not None:
            remove_path(path)

    def stored_snapshot_ids(self) -> set[str]:
        """Ids of the snapshots whose files of this kind exist on this node."""
        if not self.can_snapshot():
            return set()
        return _ids_in(
            self.env.snapshots_dir, self.snapshot_suffix, is_snapshot_id, self.snapshot_path
        )

    def serves(self, volume: Volume, device: str) -> bool:
        """Whether device, recorded by a block staging, still serves the volume's storage. The
        name alone proves nothing: after a reboot /dev/loopN exists again (the kernel makes
        loop0-7 at boot), detached or bound to another volume's image."""
        return os.path.exists(device)

    def staged_health(self, volume: Volume, staging: Staging) -> list[HealthIssue]:
        """Node-side signals of a staged volume's storage (a detached loop device, say); the
        node layer checks the mount itself. [] when healthy or when the kind has none."""
        return []


def _ids_in(
    directory: Path,
    suffix: str,
    valid: Callable[[str], bool],
    path_of: Callable[[str], Path | None],
) -> set[str]:
    """The ids whose `path_of(id)` is an entry of directory named id + suffix."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return set()
    found = set()
    for name in names:
        if not name.endswith(suffix):
            continue
        ident = name[: len(name) - len(suffix)] if suffix else name
        if valid(ident) and path_of(ident) == directory / name:
            found.add(ident)
    return found


def remove_path(path: Path) -> None:
    """Remove a file, a symlink (not its target) or a directory tree; a missing one is fine."""
    try:
        # An empty directory (a new volume's) goes with one system call. rmdir never follows a
        # symlink: a link in the directory's place fails with ENOTDIR and is unlinked below.
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass  # not empty, or not a directory
    try:
        if path.is_dir() and not path.is_symlink():
            # rmtree removes links inside the tree, never what they point to.
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
