"""NodePublishVolume and NodeUnpublishVolume: bind mounts of a staged volume into pods.

A publication carries its staging's label (a bind shares the superblock, so it cannot carry
another), is recorded before its bind is made, and never stacks a second mount on a target.
"""

from __future__ import annotations

import logging
import os

from . import paths
from .errors import (
    AlreadyExists,
    Internal,
    InvalidArgument,
    LabelInUse,
    LabelVerificationError,
    NotFound,
    NotStaged,
    PublishedIncompatibly,
    SingleWriterInUse,
)
from .models import AccessMode, AccessType, Publication, Staging, Volume, is_volume_id
from .mount_options import MountError, split_options
from .node_context import NodeContext, PublishArgs, unmount_failure
from .node_labels import apply_mount_group, check_capability
from .selinux import MountFlags, conflict_message, read_label, same_label
from .state import tolerate_full_disk

log = logging.getLogger(__name__)

MAX_STACKED_MOUNTS = 16


class Publisher:
    """Publishes and unpublishes staged volumes on this node."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def publish(self, args: PublishArgs) -> None:
        ctx = self.ctx
        target = ctx.request_path(args.target_path, "target_path")
        if not args.staging_path:
            raise InvalidArgument(
                "staging_target_path is required: the volume must be staged first"
            )
        staging_path = ctx.request_path(args.staging_path, "staging_target_path", args.internal)
        _check_apart(target, staging_path)
        vol = ctx.volume(args.volume_id)
        flags = check_capability(vol, args.capability)
        want = flags.context.canonical() if flags.context else None
        read_only = args.read_only or args.capability.access_mode.read_only
        mode = args.capability.access_mode
        with ctx.locks.hold(vol.id):
            staged = [
                s
                for s in ctx.catalog.stagings(vol.id)
                if s.staging_path == staging_path and ctx.staging_alive(vol, s)
            ]
            if not staged:
                raise NotStaged(
                    vol.id,
                    staging_path,
                    f"volume {vol.id} is not staged at {staging_path}; NodeStageVolume must "
                    "succeed first",
                )
            st = staged[0]
            if want is not None and not same_label(want, st.label):
                ctx.metrics.label_conflict()
                raise LabelInUse(
                    vol.id,
                    st.label,
                    want,
                    conflict_message(vol.id, st.staging_path, st.label, want),
                )
            others = []
            for pub in ctx.catalog.publications(vol.id):
                if ctx.gone(pub.target_path):
                    ctx.forget_publication(vol, pub)
                    continue
                if pub.target_path == target:
                    if (
                        pub.read_only != read_only
                        or not same_label(pub.label, st.label)
                        or pub.access_mode is not mode
                    ):
                        raise PublishedIncompatibly(
                            vol.id,
                            target,
                            f"volume {vol.id} is already published at {target} with "
                            f"{'read-only' if pub.read_only else 'read-write'} access and mode "
                            f"{pub.access_mode.name}; this request differs",
                        )
                    return
                others.append(pub)
            single = AccessMode.SINGLE_NODE_SINGLE_WRITER
            if others and (mode == single or any(p.access_mode is single for p in others)):
                raise SingleWriterInUse(vol.id, others[0].target_path)
            backend = ctx.backends[vol.kind]
            if args.capability.volume_mount_group and not read_only:
                apply_mount_group(ctx, vol, backend, st.staging_path, args.capability)
            device = ""
            if vol.access_type is AccessType.BLOCK:
                source = backend.publish_device(vol, st.device, read_only)
                device = source if source != st.device else ""
            pub = Publication(
                volume_id=vol.id,
                target_path=target,
                staging_path=staging_path,
                read_only=read_only,
                label=st.label,
                flags=tuple(args.capability.mount_flags),
                access_mode=mode,
                device=device,
            )
            # Record first, mount second: a driver killed in between leaves a record whose
            # target is not mounted (dropped and redone by the retry), never a mount nobody knows.
            ctx.catalog.put_publication(pub)
            try:
                self._bind(vol, st, target, read_only, flags, device or st.device)
            except BaseException:
                ctx.forget_publication(vol, pub)
                raise
            log.info(
                "published volume %s at %s%s", vol.id, target, " read-only" if read_only else ""
            )

    def _existing_bind(
        self, vol: Volume, st: Staging, target: str, device: str, target_fd: int
    ) -> bool:
        """True when the opened target already carries this volume (a bind made before a driver
        restart); AlreadyExists when something else is mounted there. Never stack a second mount.

        Asked of the descriptor the bind would go onto, so no rename of a parent between the
        question and the mount can hide a mount that is there."""
        view = self.ctx.view()
        entry = view.table.mount_at_fd(target_fd, view.entries)
        if entry is None:
            return False
        if not view.is_volume(st, entry, device):
            raise AlreadyExists(
                f"{target} already has another mount ({entry.source}); it is not volume {vol.id}"
            )
        log.info("adopting the existing bind mount of volume %s at %s", vol.id, target)
        return True

    def _bind(
        self,
        vol: Volume,
        st: Staging,
        target: str,
        read_only: bool,
        flags: MountFlags,
        device: str,
    ) -> None:
        """Bind the staged volume (or, for block access, device) at target and check its label."""
        ctx = self.ctx
        trusted = ctx.trusted(target)
        make = paths.make_file if vol.access_type is AccessType.BLOCK else paths.make_dir
        extra = _vfs_flags(flags)
        try:
            fd = paths.open_path(target, trusted)
        except FileNotFoundError:
            make(target, trusted_prefix=trusted)
            fd = paths.open_path(target, trusted)
        try:
            # First what is there (a block target carrying a bind shows the device node, which
            # make_file would refuse), then the target's type.
            if self._existing_bind(vol, st, target, device, fd):
                return
            make(target, trusted_prefix=trusted)
            target_fd = f"/proc/self/fd/{fd}"
            if vol.access_type is AccessType.BLOCK:
                ctx.mounter.bind(device, target_fd, read_only=read_only, extra_flags=extra)
            else:
                with paths.opened(st.staging_path, ctx.trusted(st.staging_path)) as staging_fd:
                    ctx.mounter.bind(staging_fd, target_fd, read_only=read_only, extra_flags=extra)
        except MountError as exc:
            raise Internal(
                f"bind-mounting volume {vol.id} at {target} failed: {exc.message}"
            ) from exc
        finally:
            os.close(fd)
        if st.label is not None:
            try:
                label = read_label(target)
            except OSError as exc:
                label = f"an unreadable label ({exc.strerror})"
            if not same_label(label, st.label):
                ctx.metrics.verification_failure()
                ctx.unmount(target)
                raise LabelVerificationError(
                    f"volume {vol.id} is mounted with SELinux context {st.label}, but its bind "
                    f"mount at {target} reads {label or 'no label'}"
                )

    def unpublish(self, volume_id: str, target_path: str) -> None:
        ctx = self.ctx
        target = ctx.request_path(target_path, "target_path")
        if not volume_id:
            raise InvalidArgument("volume_id is required")
        known = is_volume_id(volume_id) and (
            ctx.catalog.volume(volume_id) is not None
            or any(p.target_path == target for p in ctx.catalog.publications(volume_id))
        )
        if not known:
            raise NotFound(f"volume {volume_id!r} does not exist on node {ctx.config.node_id}")
        with ctx.locks.hold(volume_id):
            if not any(p.target_path == target for p in ctx.catalog.publications(volume_id)):
                # Every publication is recorded before its bind is made: without a record the
                # volume is not published here (already unpublished), and a mount at the path
                # (another volume's, or this volume's staging) is not this request's to remove.
                log.info("volume %s is not published at %s: nothing to undo", volume_id, target)
                return
            # A target can carry stacked mounts (a retried publish after a crash): remove them all.
            for _ in range(MAX_STACKED_MOUNTS):
                if ctx.view().at(target) is None:
                    break
                try:
                    ctx.unmount(target)
                except MountError as exc:
                    raise unmount_failure(volume_id, target, exc) from exc
            else:
                raise Internal(f"volume {volume_id} is still mounted at {target} after unmounting")
            if not paths.remove_mount_point(target, ctx.trusted(target)) and os.path.lexists(
                target
            ):
                log.warning("left %s in place: it is not an empty mount point", target)
            vol = ctx.catalog.volume(volume_id)
            for pub in ctx.catalog.publications(volume_id):
                if pub.target_path == target and pub.device and vol is not None:
                    ctx.backends[vol.kind].release_publish_device(vol, pub.device)
            with tolerate_full_disk(f"the publication of {volume_id} at {target}"):
                ctx.catalog.remove_publication(volume_id, target)
            log.info("unpublished volume %s from %s", volume_id, target)


def _check_apart(target: str, staging_path: str) -> None:
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


def _vfs_flags(flags: MountFlags) -> tuple[str, ...]:
    """The flags of a publish request that a bind mount can apply (nosuid, noexec, ...)."""
    kept = []
    for option in flags.other:
        _, data = split_options([option])
        if not data:
            kept.append(option)
    return tuple(kept)
