"""What a node mount must prove before and after it is made: the capability fits the volume, a
requested SELinux label can be applied, and the label is really on the mount afterwards.

- A label needs a superblock of its own: a labelled request for a kind that cannot carry one is
  refused, never mounted unlabelled.
- The exit code of a mount proves nothing: after every labelled mount the label is read back from
  mountinfo and from the root's security.selinux xattr (`verify`).
"""

from __future__ import annotations

import errno

from . import capabilities, fsgroup
from .backends import Backend
from .errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LabelInUse,
    LabelVerificationError,
)
from .models import AccessType, Capability, Volume
from .mount_options import MountError
from .node_context import NodeContext
from .selinux import MountFlags, parse_mount_flags, verify_mounted_label


def check_capability(vol: Volume, cap: Capability) -> MountFlags:
    """Refuse a capability the volume cannot serve; return its parsed mount flags."""
    problem = capabilities.mismatch(vol, cap)
    if problem:
        raise InvalidArgument(problem)
    return parse_mount_flags(cap.mount_flags)


def check_label_possible(
    ctx: NodeContext, vol: Volume, backend: Backend, flags: MountFlags
) -> None:
    """Refuse a labelled mount that would not end up labelled."""
    label = ", ".join(flags.selinux_options())
    node = ctx.config.node_id
    if not backend.can_label:
        raise FailedPrecondition(
            f"volume {vol.id} cannot be mounted with SELinux {label}: "
            f"{backend.no_label_reason}. Use a volume of kind 'image' for pods with "
            "seLinuxOptions, or set seLinuxChangePolicy: Recursive on the pod so the container "
            "runtime relabels the files instead"
        )
    support = ctx.probe()
    if not support.kernel_enabled:
        raise FailedPrecondition(
            f"SELinux is disabled on node {node}, so volume {vol.id} cannot be "
            f"mounted with SELinux {label}"
        )
    if backend.uses_mount_helper and not support.util_linux_keeps_options:
        problems = support.problems() or [
            "the driver cannot see /sys/fs/selinux read-write and /etc/selinux/config, "
            "so the mount helper would drop the option"
        ]
        raise FailedPrecondition(
            f"volume {vol.id} cannot be mounted with SELinux {label} on node {node}: "
            + "; ".join(problems)
        )


def verify(ctx: NodeContext, vol: Volume, path: str, flags: MountFlags) -> None:
    """Read the label back; raise LabelVerificationError when it is not what was asked."""
    if flags.context is None:
        return
    entry = ctx.view().at(path)
    if entry is None:
        raise LabelVerificationError(
            f"volume {vol.id} was mounted at {path} with SELinux context {flags.context}, but "
            "the mount is not in the mount table"
        )
    verify_mounted_label(path, entry.super_options, flags.context, ctx.probe())


def mount_failure(
    ctx: NodeContext, vol: Volume, path: str, flags: MountFlags, exc: MountError
) -> Exception:
    """The error a failed stage mount answers: EBUSY with a label is the kernel refusing a second
    label for one superblock (the volume is in use with another label)."""
    if flags.context is not None and exc.errno == errno.EBUSY:
        ctx.metrics.label_conflict()
        return LabelInUse(
            vol.id,
            None,
            flags.context.canonical(),
            f"the kernel refused to mount volume {vol.id} at {path} with SELinux context "
            f"{flags.context}: its filesystem is already mounted elsewhere with other security "
            "settings. Pods that share a volume on one node must use the same SELinux label",
        )
    return Internal(f"mounting volume {vol.id} at {path} failed: {exc.message}")


def apply_mount_group(
    ctx: NodeContext, vol: Volume, backend: Backend, path: str, cap: Capability
) -> None:
    """Give the volume the pod's fsGroup where the kind has no mount option for it."""
    if not cap.volume_mount_group or vol.access_type is AccessType.BLOCK:
        return
    gid = fsgroup.parse_gid(cap.volume_mount_group)
    if backend.mount_group_option:
        return
    real = ctx.view().resolve(path)
    if real is not None:
        fsgroup.apply(real, gid)
