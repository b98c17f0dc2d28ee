"""The SELinux package's own errors. Each carries its data and a ``message`` written for the pod
author (kubelet copies it into the pod's events).

The package imports nothing from the driver around it; the driver maps these classes to gRPC
codes (csi_hostpath_selinux/status.py): InvalidMountFlags is INVALID_ARGUMENT, LabelNotApplied
INTERNAL. A label conflict is the node's to decide (it knows the stagings): policy.conflict_message
writes its words.
"""

from __future__ import annotations


class SELinuxError(Exception):
    """Base of the package's errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidMountFlags(SELinuxError):
    """Mount options the driver refuses: a bad label, a forbidden option, contradicting labels.

    ``option`` is the offending flag or option as given (None when the flags as a whole are
    wrong, e.g. too long together); ``reason`` says what is wrong with it in plain words."""

    def __init__(self, message: str, *, option: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.option = option
        self.reason = reason or message


class LabelNotApplied(SELinuxError):
    """A labelled mount succeeded but the label is not on it (dropped by util-linux or ignored by
    the kernel). ``path`` is the mount point, ``expected`` the label asked for and ``found`` what
    was read back (None for no label), when known."""

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.found = found
