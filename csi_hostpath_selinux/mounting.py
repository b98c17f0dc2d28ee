"""Node-side domain logic: stage, publish, unpublish and unstage, with SELinux labels checked.

The rules this module keeps (DESIGN.md has the measured facts behind them):
- A label needs a superblock of its own: a labelled request for a kind that cannot carry one is
  refused, never mounted unlabelled.
- One volume has one label on a node: a stage or publish that asks for another label than the
  one the volume is mounted with is refused before anything is mounted, with both labels named.
- The exit code of a mount proves nothing: after every labelled mount the label is read back from
  mountinfo and from the root's security.selinux xattr, and the mount is undone if it is wrong.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import fsgroup, paths
from .backends import Backend, StageRequest
from .config import DriverConfig
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LabelVerificationError,
    NotFound,
    OutOfRange,
    Unavailable,
)
from .locks import OperationLocks
from .metrics import Metrics
from .models import (
    AccessMode,
    AccessType,
    Capability,
    Publication,
    Staging,
    StagingState,
    Volume,
    is_volume_id,
)
from .mounts import Mounter, MountError, find_mount, read_mountinfo, split_options
from .selinux import (
    MountFlags,
    SELinuxSupport,
    conflict_message,
    parse_mount_flags,
    read_label,
    same_label,
    verify_mounted_label,
)
from .state import Catalog, tolerate_full_disk
from .volumes import find_volume

log = logging.getLogger(__name__)

MAX_STACKED_MOUNTS = 16
MIB = 1024 * 1024


@dataclass(frozen=True)
class StageArgs:
    volume_id: str
    staging_path: str
    capability: Capability
    secrets: Mapping[str, str]
    #: The staging path is the driver's own (an inline volume's), under the state directory.
    internal: bool = False


@dataclass(frozen=True)
class PublishArgs:
    volume_id: str
    staging_path: str
    target_path: str
    capability: Capability
    read_only: bool
    internal: bool = False


class NodeVolumes:
    """Mounts volumes for pods on this node."""

    def __init__(
        self,
        config: DriverConfig,
        catalog: Catalog,
        backends: Mapping[str, Backend],
        mounter: Mounter,
        locks: OperationLocks,
        probe: Callable[[], SELinuxSupport],
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.backends = backends
        self.mounter = mounter
        self.locks = locks
        self.probe = probe
        self.metrics = metrics

    # helpers

    def volume(self, volume_id: str) -> Volume:
        return find_volume(self.catalog, volume_id, self.config.node_id)

    def request_path(self, path: str, field: str, internal: bool = False) -> str:
        if internal:
            return paths.validate(path, field, str(self.config.state_dir / "ephemeral"))
        return paths.validate(path, field, self.config.kubelet_dir)

    def trusted(self, path: str) -> str | None:
        """The operator-configured directory path lies in (its own symlinks are trusted)."""
        return paths.trusted_prefix(
            path, self.config.kubelet_dir, str(self.config.state_dir / "ephemeral")
        )

    def real_path(self, path: str) -> str | None:
        """The kernel's name for path (what mountinfo shows), or None when it does not exist."""
        try:
            fd = paths.open_path(path, self.trusted(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def mounted(self, path: str) -> bool:
        real = self.real_path(path)
        return real is not None and find_mount(real) is not None

    def check_capability(self, vol: Volume, cap: Capability) -> MountFlags:
        """Refuse a capability the volume cannot serve; return its parsed mount flags."""
        if not cap.access_mode.single_node:
            raise InvalidArgument(
                f"access mode {cap.access_mode.name} is not supported: volume {vol.id} lives on "
                f"node {self.config.node_id} only"
            )
        if cap.access_type is not vol.access_type:
            raise InvalidArgument(
                f"volume {vol.id} was created for {vol.access_type.value} access; this request "
                f"asks for {cap.access_type.value} access"
            )
        if (
            cap.access_type is AccessType.MOUNT
            and cap.fs_type
            and vol.fs_type
            and (cap.fs_type != vol.fs_type)
        ):
            raise InvalidArgument(
                f"volume {vol.id} holds a {vol.fs_type} filesystem; this request asks for "
                f"fsType {cap.fs_type}"
            )
        return parse_mount_flags(cap.mount_flags)

    def check_label_possible(self, vol: Volume, backend: Backend, flags: MountFlags) -> None:
        """Refuse a labelled mount that would not end up labelled."""
        label = ", ".join(flags.selinux_options())
        if not backend.can_label:
            raise FailedPrecondition(
                f"volume {vol.id} cannot be mounted with SELinux {label}: "
                f"{backend.no_label_reason}. Use a volume of kind 'image' for pods with "
                "seLinuxOptions, or set seLinuxChangePolicy: Recursive on the pod so the container "
                "runtime relabels the files instead"
            )
        support = self.probe()
        if not support.kernel_enabled:
            raise FailedPrecondition(
                f"SELinux is disabled on node {self.config.node_id}, so volume {vol.id} cannot be "
                f"mounted with SELinux {label}"
            )
        if backend.uses_mount_helper and not support.util_linux_keeps_options:
            raise FailedPrecondition(
                f"volume {vol.id} cannot be mounted with SELinux {label} on node "
                f"{self.config.node_id}: "
                + "; ".join(
                    support.problems()
                    or [
                        "the driver cannot see /sys/fs/selinux read-write and /etc/selinux/config, "
                        "so the mount helper would drop the option"
                    ]
                )
            )

    def verify(self, vol: Volume, path: str, flags: MountFlags) -> None:
        """Read the label back; raise LabelVerificationError when it is not what was asked."""
        if flags.context is None:
            return
        real = self.real_path(path)
        entry = find_mount(real) if real else None
        if entry is None:
            raise LabelVerificationError(
                f"volume {vol.id} was mounted at {path} with SELinux context {flags.context}, but "
                "the mount is not in the mount table"
            )
        verify_mounted_label(path, entry.super_options, flags.context, self.probe())

    # stage

    def stage(self, args: StageArgs) -> None:
        staging_path = self.request_path(args.staging_path, "staging_target_path", args.internal)
        vol = self.volume(args.volume_id)
        flags = self.check_capability(vol, args.capability)
        backend = self.backends[vol.kind]
        want = str(flags.context) if flags.context else None
        with self.locks.hold(vol.id):
            for st in self.catalog.stagings(vol.id):
                if not self.staging_alive(vol, st):
                    continue
                if st.staging_path == staging_path:
                    if not same_label(st.label, want):
                        self.metrics.label_conflict()
                        raise AlreadyExists(
                            conflict_message(vol.id, st.staging_path, st.label, want)
                        )
                    if st.flags != args.capability.mount_flags:
                        raise AlreadyExists(
                            f"volume {vol.id} is already staged at {staging_path} with mount flags "
                            f"{list(st.flags)}; this request asks for "
                            f"{list(args.capability.mount_flags)}"
                        )
                    return
                if not same_label(st.label, want):
                    self.metrics.label_conflict()
                    raise FailedPrecondition(
                        conflict_message(vol.id, st.staging_path, st.label, want)
                    )
                raise FailedPrecondition(
                    f"volume {vol.id} is already staged on this node at {st.staging_path}; "
                    "a volume is staged at one path per node"
                )
            self.check_stage_target(vol, staging_path)
            if flags.labelled:
                self.check_label_possible(vol, backend, flags)
            if vol.access_type is AccessType.MOUNT:
                paths.make_dir(staging_path, trusted_prefix=self.trusted(staging_path))
            pending = Staging(
                vol.id,
                staging_path,
                want,
                tuple(args.capability.mount_flags),
                "",
                vol.access_type,
                StagingState.PENDING,
            )
            self.catalog.put_staging(pending)
            try:
                device = self.stage_mount(vol, backend, staging_path, flags, args)
            except BaseException:
                self.catalog.remove_staging(vol.id, staging_path)
                raise
            self.catalog.put_staging(
                Staging(
                    vol.id,
                    staging_path,
                    want,
                    tuple(args.capability.mount_flags),
                    device,
                    vol.access_type,
                    StagingState.READY,
                )
            )
            if want:
                self.metrics.labelled_mount()
            log.info(
                "staged volume %s at %s%s",
                vol.id,
                staging_path,
                f" with SELinux context {want}" if want else "",
            )

    def check_stage_target(self, vol: Volume, staging_path: str) -> None:
        """Refuse a staging path that already carries a mount, or lies in or over another
        volume's staging or publication: stacking a filesystem there would hide a pod's data
        (this volume's own live staging at this path was answered before)."""
        for owner, path in self.catalog.claims(staging_path):
            if path == staging_path or paths.is_below(staging_path, path):
                raise FailedPrecondition(
                    f"staging path {staging_path} is in use by volume {owner} (at {path}); "
                    f"refusing to mount volume {vol.id} there"
                )
        if self.mounted(staging_path):
            raise FailedPrecondition(
                f"staging path {staging_path} already has a mount that is not volume {vol.id}'s "
                "staging; refusing to mount over it"
            )

    def stage_mount(
        self, vol: Volume, backend: Backend, staging_path: str, flags: MountFlags, args: StageArgs
    ) -> str:
        read_only = args.capability.access_mode.read_only
        flags = flags.for_stage()  # nosuid,nodev unless the volume's mountOptions say otherwise
        try:
            if vol.access_type is AccessType.BLOCK:
                request = StageRequest(
                    vol,
                    staging_path,
                    "",
                    flags,
                    args.secrets,
                    read_only,
                    args.capability.volume_mount_group,
                )
                return backend.stage(request)
            with paths.opened(staging_path, self.trusted(staging_path)) as target:
                request = StageRequest(
                    vol,
                    staging_path,
                    target,
                    flags,
                    args.secrets,
                    read_only,
                    args.capability.volume_mount_group,
                )
                device = backend.stage(request)
        except MountError as exc:
            raise self.mount_failure(vol, staging_path, flags, exc) from exc
        try:
            self.verify(vol, staging_path, flags)
            self.apply_mount_group(vol, backend, staging_path, args.capability)
        except LabelVerificationError:
            self.metrics.verification_failure()
            self.backend_unstage(vol, backend, staging_path, device)
            raise
        except BaseException:
            self.backend_unstage(vol, backend, staging_path, device)
            raise
        return device

    def backend_unstage(
        self, vol: Volume, backend: Backend, staging_path: str, device: str
    ) -> None:
        """The backend's unstage, given the staging path as a name its unmount cannot be
        redirected through (paths.unmount_name), never as the path string."""
        with paths.unmount_name(staging_path, self.trusted(staging_path)) as name:
            backend.unstage(vol, name, device)

    def unmount(self, path: str) -> None:
        """Unmount the topmost mount at path, through its held parent (paths.unmount_name)."""
        with paths.unmount_name(path, self.trusted(path)) as name:
            self.mounter.unmount(name)

    def apply_mount_group(self, vol: Volume, backend: Backend, path: str, cap: Capability) -> None:
        """Give the volume the pod's fsGroup where the kind has no mount option for it."""
        if not cap.volume_mount_group or vol.access_type is AccessType.BLOCK:
            return
        gid = fsgroup.parse_gid(cap.volume_mount_group)
        if backend.mount_group_option:
            return
        real = self.real_path(path)
        if real is not None:
            fsgroup.apply(real, gid)

    def mount_failure(
        self, vol: Volume, path: str, flags: MountFlags, exc: MountError
    ) -> Exception:
        if flags.context is not None and exc.errno == errno.EBUSY:
            self.metrics.label_conflict()
            return FailedPrecondition(
                f"the kernel refused to mount volume {vol.id} at {path} with SELinux context "
                f"{flags.context}: its filesystem is already mounted elsewhere with other security "
                "settings. Pods that share a volume on one node must use the same SELinux label"
            )
        return Internal(f"mounting volume {vol.id} at {path} failed: {exc.message}")

    def staging_alive(self, vol: Volume, st: Staging) -> bool:
        """True when a READY staging is really in place; stale records are dropped."""
        if st.state is StagingState.READY:
            if vol.access_type is AccessType.BLOCK:
                alive = bool(st.device) and os.path.exists(st.device)
            else:
                alive = not self.gone(st.staging_path)
            if alive:
                return True
        with tolerate_full_disk(f"the stale staging of {st.volume_id} at {st.staging_path}"):
            self.catalog.remove_staging(st.volume_id, st.staging_path)
        return False

    def drop_stale_records(self, vol: Volume) -> None:
        """Forget the volume's stagings and publications whose mounts are gone (the caller
        holds the volume's lock, so none of them is in progress)."""
        for pub in self.catalog.publications(vol.id):
            if self.gone(pub.target_path):
                self.forget_publication(vol, pub)
        for st in self.catalog.stagings(vol.id):
            self.staging_alive(vol, st)

    # unstage

    def unstage(self, volume_id: str, staging_path: str, internal: bool = False) -> None:
        staging_path = self.request_path(staging_path, "staging_target_path", internal)
        vol = self.volume(volume_id)
        backend = self.backends[vol.kind]
        with self.locks.hold(vol.id):
            records = [s for s in self.catalog.stagings(vol.id) if s.staging_path == staging_path]
            if not records:
                # Every staging is recorded before its mount is made, so a path without a record
                # holds nothing of this volume's: already unstaged, and whatever is mounted
                # there (a pod's publication, say) is not ours to remove.
                log.info("volume %s is not staged at %s: nothing to undo", vol.id, staging_path)
                return
            pubs = [p for p in self.catalog.publications(vol.id) if p.staging_path == staging_path]
            live = [p for p in pubs if not self.gone(p.target_path)]
            if live:
                raise FailedPrecondition(
                    f"volume {vol.id} is still published at {live[0].target_path}; "
                    "unpublish it before unstaging it"
                )
            for p in pubs:
                self.forget_publication(vol, p)
            device = records[0].device
            try:
                self.backend_unstage(vol, backend, staging_path, device)
            except MountError as exc:
                raise unmount_failure(vol.id, staging_path, exc) from exc
            if self.mounted(staging_path):
                raise Internal(f"volume {vol.id} is still mounted at {staging_path} after unmount")
            with tolerate_full_disk(f"the staging of {vol.id} at {staging_path}"):
                self.catalog.remove_staging(vol.id, staging_path)
            log.info("unstaged volume %s from %s", vol.id, staging_path)

    # publish

    def publish(self, args: PublishArgs) -> None:
        target = self.request_path(args.target_path, "target_path")
        if not args.staging_path:
            raise InvalidArgument(
                "staging_target_path is required: the volume must be staged first"
            )
        staging_path = self.request_path(args.staging_path, "staging_target_path", args.internal)
        check_apart(target, staging_path)
        vol = self.volume(args.volume_id)
        flags = self.check_capability(vol, args.capability)
        want = str(flags.context) if flags.context else None
        read_only = args.read_only or args.capability.access_mode.read_only
        with self.locks.hold(vol.id):
            staged = [
                s
                for s in self.catalog.stagings(vol.id)
                if s.staging_path == staging_path and self.staging_alive(vol, s)
            ]
            if not staged:
                raise FailedPrecondition(
                    f"volume {vol.id} is not staged at {staging_path}; NodeStageVolume must "
                    "succeed first"
                )
            st = staged[0]
            if want is not None and not same_label(want, st.label):
                self.metrics.label_conflict()
                raise FailedPrecondition(conflict_message(vol.id, st.staging_path, st.label, want))
            others = []
            for pub in self.catalog.publications(vol.id):
                if self.gone(pub.target_path):
                    self.forget_publication(vol, pub)
                    continue
                if pub.target_path == target:
                    if (
                        pub.read_only != read_only
                        or pub.label != st.label
                        or (pub.access_mode != args.capability.access_mode)
                    ):
                        raise AlreadyExists(
                            f"volume {vol.id} is already published at {target} with "
                            f"{'read-only' if pub.read_only else 'read-write'} access and mode "
                            f"{AccessMode(pub.access_mode).name}; this request differs"
                        )
                    return
                others.append(pub)
            single = AccessMode.SINGLE_NODE_SINGLE_WRITER
            if others and (
                args.capability.access_mode == single
                or any(p.access_mode == single for p in others)
            ):
                raise FailedPrecondition(
                    f"volume {vol.id} is ReadWriteOncePod (SINGLE_NODE_SINGLE_WRITER) and already "
                    f"published at {others[0].target_path}; only one pod may use it"
                )
            if args.capability.volume_mount_group and not read_only:
                self.apply_mount_group(
                    vol, self.backends[vol.kind], st.staging_path, args.capability
                )
            backend = self.backends[vol.kind]
            device = ""
            if vol.access_type is AccessType.BLOCK:
                source = backend.publish_device(vol, st.device, read_only)
                device = source if source != st.device else ""
            pub = Publication(
                vol.id,
                target,
                staging_path,
                read_only,
                st.label,
                tuple(args.capability.mount_flags),
                int(args.capability.access_mode),
                device,
            )
            # Record first, mount second: a driver killed in between leaves a record whose
            # target is not mounted (dropped and redone by the retry), never a mount nobody knows.
            self.catalog.put_publication(pub)
            try:
                self.bind(vol, st, target, read_only, flags, device or st.device)
            except BaseException:
                self.forget_publication(vol, pub)
                raise
            log.info(
                "published volume %s at %s%s", vol.id, target, " read-only" if read_only else ""
            )

    def gone(self, path: str) -> bool:
        """True when nothing is mounted at path any more (so its record can go).

        A path that cannot be reached right now (a parent renamed or missing) counts as gone only
        when no mount carries its name either: a mount we cannot see is not a mount that is gone.
        """
        real = self.real_path(path)
        if real is not None:
            return find_mount(real) is None
        return find_mount(path) is None

    def forget_publication(self, vol: Volume, pub: Publication) -> None:
        if pub.device:
            self.backends[vol.kind].release_publish_device(vol, pub.device)
        with tolerate_full_disk(f"the publication of {pub.volume_id} at {pub.target_path}"):
            self.catalog.remove_publication(pub.volume_id, pub.target_path)

    def existing_bind(self, vol: Volume, st: Staging, target: str, device: str) -> bool:
        """True when target already carries this volume (a bind made before a driver restart);
        AlreadyExists when something else is mounted there. Never stack a second mount."""
        real = self.real_path(target)
        entry = find_mount(real) if real is not None else None
        if entry is None:
            return False
        if vol.access_type is AccessType.BLOCK:
            ours = entry.root == "/" + os.path.basename(device)
        else:
            staged_real = self.real_path(st.staging_path)
            staged = find_mount(staged_real) if staged_real is not None else None
            ours = staged is not None and (entry.major, entry.minor, entry.root) == (
                staged.major,
                staged.minor,
                staged.root,
            )
        if not ours:
            raise AlreadyExists(
                f"{target} already has another mount ({entry.source}); it is not volume {vol.id}"
            )
        log.info("adopting the existing bind mount of volume %s at %s", vol.id, target)
        return True

    def bind(
        self,
        vol: Volume,
        st: Staging,
        target: str,
        read_only: bool,
        flags: MountFlags,
        device: str,
    ) -> None:
        """Bind the staged volume (or, for block access, device) at target and check its label."""
        trusted = self.trusted(target)
        if self.existing_bind(vol, st, target, device):
            return
        if vol.access_type is AccessType.BLOCK:
            paths.make_file(target, trusted_prefix=trusted)
        else:
            paths.make_dir(target, trusted_prefix=trusted)
        try:
            with paths.opened(target, trusted) as target_fd:
                if vol.access_type is AccessType.BLOCK:
                    self.mounter.bind(
                        device, target_fd, read_only=read_only, extra_flags=vfs_flags(flags)
                    )
                else:
                    with paths.opened(st.staging_path, self.trusted(st.staging_path)) as staging_fd:
                        self.mounter.bind(
                            staging_fd, target_fd, read_only=read_only, extra_flags=vfs_flags(flags)
                        )
        except MountError as exc:
            raise Internal(
                f"bind-mounting volume {vol.id} at {target} failed: {exc.message}"
            ) from exc
        if st.label is not None:
            try:
                label = read_label(target)
            except OSError as exc:
                label = f"an unreadable label ({exc.strerror})"
            if not same_label(label, st.label):
                self.metrics.verification_failure()
                self.unmount(target)
                raise LabelVerificationError(
                    f"volume {vol.id} is mounted with SELinux context {st.label}, but its bind "
                    f"mount at {target} reads {label or 'no label'}"
                )

    # expand

    def known_path(self, vol: Volume, path: str, field: str) -> str:
        """path, validated like a request path (below kubelet's directory, or the driver's own
        ephemeral one); INVALID_ARGUMENT otherwise."""
        internal = paths.is_below(path, str(self.config.state_dir / "ephemeral"))
        return self.request_path(path, field, internal)

    def published_path(self, vol: Volume, volume_path: str) -> str:
        """volume_path when it is one of the volume's publications or stagings and the volume
        is mounted there; NOT_FOUND otherwise, naming why (outside kubelet's directory, not
        absolute, ...), touching nothing: the spec's code for "not published at that path"."""
        try:
            path = self.known_path(vol, volume_path, "volume_path")
        except InvalidArgument as exc:
            raise NotFound(f"volume {vol.id} is not at {volume_path!r}: {exc.message}") from exc
        recorded = {p.target_path for p in self.catalog.publications(vol.id)}
        recorded |= {s.staging_path for s in self.catalog.stagings(vol.id)}
        if path not in recorded or not self.mounted(path):
            raise NotFound(f"volume {vol.id} is not mounted at {path}")
        return path

    def expand(
        self,
        volume_id: str,
        volume_path: str,
        staging_path: str,
        required_bytes: int = 0,
        limit_bytes: int = 0,
    ) -> int:
        """Grow the volume where it is staged (and its image, when the request asks for more
        than the catalog has: on a node-local driver the node can do the controller's part)."""
        vol = self.volume(volume_id)
        self.published_path(vol, volume_path)
        backend = self.backends[vol.kind]
        with self.locks.hold(vol.id):
            if limit_bytes and required_bytes > limit_bytes:
                raise InvalidArgument(
                    f"capacity_range required_bytes {required_bytes} exceeds limit_bytes "
                    f"{limit_bytes}"
                )
            size = vol.capacity_bytes
            if required_bytes > size:
                size = -(-required_bytes // MIB) * MIB
                if limit_bytes and size > limit_bytes:
                    size = limit_bytes
                if size > self.config.max_volume_bytes:
                    raise OutOfRange(
                        f"{size} bytes is more than this driver's largest volume, "
                        f"{self.config.max_volume_bytes} bytes"
                    )
                backend.expand(vol, size)
                self.catalog.update_capacity(vol.id, size)
            staged = [s for s in self.catalog.stagings(vol.id) if self.staging_alive(vol, s)]
            if staging_path:
                staged = [s for s in staged if s.staging_path == staging_path] or staged
            if not staged:
                raise FailedPrecondition(f"volume {vol.id} is not staged on this node")
            st = staged[0]
            mount_path = st.staging_path if vol.access_type is AccessType.MOUNT else None
            backend.node_expand(vol, st.device, mount_path)
            log.info("grew volume %s on the node to %d bytes", vol.id, size)
            return size

    # unpublish

    def unpublish(self, volume_id: str, target_path: str) -> None:
        target = self.request_path(target_path, "target_path")
        if not volume_id:
            raise InvalidArgument("volume_id is required")
        known = is_volume_id(volume_id) and (
            self.catalog.volume(volume_id) is not None
            or any(p.target_path == target for p in self.catalog.publications(volume_id))
        )
        if not known:
            raise NotFound(f"volume {volume_id!r} does not exist on node {self.config.node_id}")
        with self.locks.hold(volume_id):
            if not any(p.target_path == target for p in self.catalog.publications(volume_id)):
                # Every publication is recorded before its bind is made: without a record the
                # volume is not published here (already unpublished), and a mount at the path
                # (another volume's, or this volume's staging) is not this request's to remove.
                log.info("volume %s is not published at %s: nothing to undo", volume_id, target)
                return
            real = self.real_path(target)
            # A target can carry stacked mounts (a retried publish after a crash): remove them all.
            for _ in range(MAX_STACKED_MOUNTS):
                if real is None or find_mount(real, read_mountinfo()) is None:
                    break
                try:
                    self.unmount(target)
                except MountError as exc:
                    raise unmount_failure(volume_id, target, exc) from exc
            else:
                raise Internal(f"volume {volume_id} is still mounted at {target} after unmounting")
            if not paths.remove_mount_point(target, self.trusted(target)) and os.path.lexists(
                target
            ):
                log.warning("left %s in place: it is not an empty mount point", target)
            vol = self.catalog.volume(volume_id)
            for pub in self.catalog.publications(volume_id):
                if pub.target_path == target and pub.device and vol is not None:
                    self.backends[vol.kind].release_publish_device(vol, pub.device)
            with tolerate_full_disk(f"the publication of {volume_id} at {target}"):
                self.catalog.remove_publication(volume_id, target)
            log.info("unpublished volume %s from %s", volume_id, target)


def check_apart(target: str, staging_path: str) -> None:
    """A publication needs a directory of its own: not the staging path, nor in or over it
    (a later unpublish would unmount the staging mount the catalog still calls staged)."""
    if target == staging_path or paths.is_below(target, staging_path):
        raise InvalidArgument(
            f"target_path {target} is the staging path {staging_path} or inside it: a "
            "publication needs a directory of its own"
        )
    if paths.is_below(staging_path, target):
        raise InvalidArgument(
            f"target_path {target} contains the staging path {staging_path}: a publication "
            "needs a directory of its own"
        )


def unmount_failure(volume_id: str, path: str, exc: MountError) -> Exception:
    """EBUSY means a process still uses the mount: a state that passes, so the CO retries."""
    if exc.errno == errno.EBUSY:
        return Unavailable(
            f"volume {volume_id} is still in use at {path} (a process has files open on it); "
            "the request will be retried"
        )
    return Internal(f"unmounting volume {volume_id} from {path} failed: {exc.message}")


def vfs_flags(flags: MountFlags) -> tuple[str, ...]:
    """The flags of a publish request that a bind mount can apply (nosuid, noexec, ...)."""
    kept = []
    for option in flags.other:
        _, data = split_options([option])
        if not data:
            kept.append(option)
    return tuple(kept)
