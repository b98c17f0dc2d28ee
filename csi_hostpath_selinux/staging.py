"""NodeStageVolume and NodeUnstageVolume: a volume's one mount per node, with its SELinux label.

The rules kept here (DESIGN.md has the measured facts behind them):
- One volume has one label on a node: a stage that asks for another label than the one the volume
  is staged with is refused before anything is mounted, with both labels named.
- A label needs a superblock of its own (`node_labels.check_label_possible`), and the exit code of
  a mount proves nothing: the label is read back after every labelled mount and the mount undone
  if it is wrong (`node_labels.verify`).
- Records first, mounts second: a staging is recorded PENDING before its mount is made, so a
  driver killed in between leaves a record start-up reconciliation rolls back.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from . import paths
from .backends import Backend, StageRequest
from .errors import (
    Internal,
    LabelInUse,
    LabelVerificationError,
    PathInUse,
    StagedElsewhere,
    StagedIncompatibly,
    StillPublished,
)
from .models import AccessType, Staging, StagingState, Volume
from .mount_options import MountError
from .node_context import NodeContext, StageArgs, same_flags, unmount_failure
from .node_labels import (
    apply_mount_group,
    check_capability,
    check_label_possible,
    mount_failure,
    verify,
)
from .selinux import MountFlags, conflict_message, same_label
from .state import tolerate_full_disk

log = logging.getLogger(__name__)


class Stager:
    """Stages and unstages volumes on this node."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def stage(self, args: StageArgs) -> None:
        ctx = self.ctx
        staging_path = ctx.request_path(args.staging_path, "staging_target_path", args.internal)
        vol = ctx.volume(args.volume_id)
        flags = check_capability(vol, args.capability)
        backend = ctx.backends[vol.kind]
        want = flags.context.canonical() if flags.context else None
        with ctx.locks.hold(vol.id):
            if self._already_staged(vol, staging_path, want, args):
                return
            self._check_stage_target(vol, staging_path)
            if flags.labelled:
                check_label_possible(ctx, vol, backend, flags)
            if vol.access_type is AccessType.MOUNT:
                paths.make_dir(staging_path, trusted_prefix=ctx.trusted(staging_path))
            pending = Staging(
                volume_id=vol.id,
                staging_path=staging_path,
                label=want,  # canonical: one label, one spelling, in every comparison
                flags=tuple(args.capability.mount_flags),
                device="",
                access_type=vol.access_type,
                state=StagingState.PENDING,
            )
            ctx.catalog.put_staging(pending)
            try:
                device = self._stage_mount(vol, backend, staging_path, flags, args)
            except BaseException:
                ctx.catalog.remove_staging(vol.id, staging_path)
                raise
            ctx.catalog.put_staging(replace(pending, device=device, state=StagingState.READY))
            if want:
                ctx.metrics.labelled_mount()
            log.info(
                "staged volume %s at %s%s",
                vol.id,
                staging_path,
                f" with SELinux context {want}" if want else "",
            )

    def _already_staged(
        self, vol: Volume, staging_path: str, want: str | None, args: StageArgs
    ) -> bool:
        """True when this very staging exists (a retry); refuse a request another live staging
        of the volume conflicts with."""
        for st in self.ctx.catalog.stagings(vol.id):
            if not self.ctx.staging_alive(vol, st):
                continue
            if st.staging_path == staging_path:
                if not same_label(st.label, want):
                    self.ctx.metrics.label_conflict()
                    raise StagedIncompatibly(
                        vol.id,
                        staging_path,
                        conflict_message(vol.id, st.staging_path, st.label, want),
                    )
                if not same_flags(st.flags, args.capability.mount_flags):
                    raise StagedIncompatibly(
                        vol.id,
                        staging_path,
                        f"volume {vol.id} is already staged at {staging_path} with mount flags "
                        f"{list(st.flags)}; this request asks for "
                        f"{list(args.capability.mount_flags)}",
                    )
                return True
            if not same_label(st.label, want):
                self.ctx.metrics.label_conflict()
                raise LabelInUse(
                    vol.id,
                    st.label,
                    want,
                    conflict_message(vol.id, st.staging_path, st.label, want),
                )
            raise StagedElsewhere(vol.id, st.staging_path, staging_path)
        return False

    def _check_stage_target(self, vol: Volume, staging_path: str) -> None:
        """Refuse a staging path that already carries a mount, or lies in or over another
        volume's staging or publication: stacking a filesystem there would hide a pod's data
        (this volume's own live staging at this path was answered before)."""
        for owner, path in self.ctx.catalog.claims(staging_path):
            if path == staging_path or paths.is_below(staging_path, path):
                raise PathInUse(
                    vol.id,
                    staging_path,
                    f"staging path {staging_path} is in use by volume {owner} (at {path}); "
                    f"refusing to mount volume {vol.id} there",
                )
        if self.ctx.mounted(staging_path):
            raise PathInUse(
                vol.id,
                staging_path,
                f"staging path {staging_path} already has a mount that is not volume {vol.id}'s "
                "staging; refusing to mount over it",
            )

    def _stage_mount(
        self, vol: Volume, backend: Backend, staging_path: str, flags: MountFlags, args: StageArgs
    ) -> str:
        ctx = self.ctx
        read_only = args.capability.access_mode.read_only
        flags = flags.for_stage()  # nosuid,nodev unless the volume's mountOptions say otherwise
        group = args.capability.volume_mount_group
        try:
            if vol.access_type is AccessType.BLOCK:
                request = StageRequest(vol, staging_path, "", flags, args.secrets, read_only, group)
                return backend.stage(request)
            with paths.opened(staging_path, ctx.trusted(staging_path)) as target:
                request = StageRequest(
                    vol, staging_path, target, flags, args.secrets, read_only, group
                )
                device = backend.stage(request)
        except MountError as exc:
            raise mount_failure(ctx, vol, staging_path, flags, exc) from exc
        try:
            verify(ctx, vol, staging_path, flags)
            apply_mount_group(ctx, vol, backend, staging_path, args.capability)
        except LabelVerificationError:
            ctx.metrics.verification_failure()
            ctx.backend_unstage(vol, backend, staging_path, device)
            raise
        except BaseException:
            ctx.backend_unstage(vol, backend, staging_path, device)
            raise
        return device

    def unstage(self, volume_id: str, staging_path: str, internal: bool = False) -> None:
        ctx = self.ctx
        staging_path = ctx.request_path(staging_path, "staging_target_path", internal)
        vol = ctx.volume(volume_id)
        backend = ctx.backends[vol.kind]
        with ctx.locks.hold(vol.id):
            records = [s for s in ctx.catalog.stagings(vol.id) if s.staging_path == staging_path]
            if not records:
                # Every staging is recorded before its mount is made, so a path without a record
                # holds nothing of this volume's: already unstaged, and whatever is mounted
                # there (a pod's publication, say) is not ours to remove.
                log.info("volume %s is not staged at %s: nothing to undo", vol.id, staging_path)
                return
            pubs = [p for p in ctx.catalog.publications(vol.id) if p.staging_path == staging_path]
            live = [p for p in pubs if not ctx.gone(p.target_path)]
            if live:
                raise StillPublished(vol.id, live[0].target_path)
            for p in pubs:
                ctx.forget_publication(vol, p)
            try:
                ctx.backend_unstage(vol, backend, staging_path, records[0].device)
            except MountError as exc:
                raise unmount_failure(vol.id, staging_path, exc) from exc
            if ctx.mounted(staging_path):
                raise Internal(f"volume {vol.id} is still mounted at {staging_path} after unmount")
            with tolerate_full_disk(f"the staging of {vol.id} at {staging_path}"):
                ctx.catalog.remove_staging(vol.id, staging_path)
            log.info("unstaged volume %s from %s", vol.id, staging_path)
