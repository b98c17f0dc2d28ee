"""Verify that a mount really carries the label asked for: mountinfo's ``context=`` option and the
root's ``security.selinux`` xattr must both be it, compared in the kernel's canonical form.

A labelled mount can succeed without its label: util-linux drops SELinux options when it cannot see
selinuxfs read-write, and the kernel ignores ``context=`` on a bind mount of a filesystem that is
already mounted. Reading the label back is the only way to know.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import xattr
from .errors import LabelNotApplied
from .labels import SELinuxLabel, canonical_or_raw
from .probe import SELinuxSupport


def label_from_super_options(super_options: Sequence[str]) -> str | None:
    """The context= label of a mountinfo super-options list, without quotes; None without one."""
    for option in super_options:
        if option.startswith("context="):
            value = option[len("context=") :]
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def verify_mounted_label(
    mount_point: str,
    super_options: Sequence[str],
    expected: SELinuxLabel,
    support: SELinuxSupport,
) -> None:
    """Check that a mount really carries expected: mountinfo's context= option and the root's
    security.selinux xattr must both be it (compared whole, in the kernel's canonical form).
    Raises LabelNotApplied saying what was found and the likely cause."""
    want = expected.canonical()
    shown = label_from_super_options(super_options)

    def not_applied(message: str, found: str | None = None) -> LabelNotApplied:
        return LabelNotApplied(message, path=mount_point, expected=str(expected), found=found)

    if shown is None:
        if not support.kernel_enabled:
            cause = "SELinux is disabled in this node's kernel"
        elif not support.util_linux_keeps_options:
            cause = (
                "/sys/fs/selinux is not mounted read-write in the driver's container (or "
                "/etc/selinux/config is missing), so util-linux dropped the context option"
            )
        else:
            cause = (
                "the option was dropped on the way to the kernel, or the kernel ignored it "
                "(it does for a bind mount of a filesystem that is already mounted)"
            )
        raise not_applied(
            f'{mount_point} was mounted with context="{expected}", but the mount table shows '
            f"no context option (its options are {','.join(super_options) or 'empty'}): {cause}",
        )
    if canonical_or_raw(shown) != want:
        raise not_applied(
            f'{mount_point} was mounted with context="{expected}", but the mount table shows '
            f'context="{shown}": the filesystem was already mounted elsewhere with that label '
            "and the kernel kept it",
            found=shown,
        )
    try:
        actual = xattr.read_label(mount_point)
    except OSError as exc:
        raise not_applied(
            f'{mount_point} was mounted with context="{expected}", but its label cannot be '
            f"read: {exc.strerror or exc}",
        ) from exc
    if actual is None:
        raise not_applied(
            f'{mount_point} shows context="{shown}" in the mount table, but its root has no '
            "security.selinux label: the kernel is not applying SELinux labels to it",
        )
    if canonical_or_raw(actual) != want:
        raise not_applied(
            f'{mount_point} shows context="{shown}" in the mount table, but its root is '
            f"labelled {actual} instead of {expected}",
            found=actual,
        )
