"""The driver's error hierarchy: domain code raises these; `status.py` alone maps them to gRPC codes.

This module imports no gRPC: the domain stays usable (and testable) without it. Messages are written
for the pod author: kubelet copies them into pod events.
"""

from __future__ import annotations

from .selinux.errors import LabelNotApplied


class DriverError(Exception):
    """Base of every error the driver reports to a CSI client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DriverError):
    """The request itself is wrong: a missing field, a bad name, an option the driver refuses."""


class NotFound(DriverError):
    """The volume, snapshot or path the request names does not exist."""


class AlreadyExists(DriverError):
    """A thing of that name exists already with other properties than the request asks for."""


class FailedPrecondition(DriverError):
    """The request is well formed but the current state forbids it (staged elsewhere, in use)."""


class Aborted(DriverError):
    """Another operation on the same volume is in progress; the caller retries."""


class OutOfRange(DriverError):
    """A size is outside what the volume or kind supports."""


class ResourceExhausted(DriverError):
    """No space or capacity left for the request."""


class Unavailable(DriverError):
    """The node cannot serve the request right now (state directory full, service starting)."""


class Unimplemented(DriverError):
    """The driver does not offer this operation for this volume kind."""


class Internal(DriverError):
    """The driver failed in a way the caller cannot fix."""


#: A labelled mount succeeded but the label is not on it (dropped by util-linux or the kernel): the
#: SELinux package's own class (status.py maps it to INTERNAL), so a handler that catches it also
#: catches what the package's verify_mounted_label raises.
LabelVerificationError = LabelNotApplied
