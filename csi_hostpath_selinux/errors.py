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


# Node conditions (issue #16): each named condition carries its data and has one class.


class NotStaged(FailedPrecondition):
    """A publish or expansion needs the volume staged (at staging_path, or anywhere on the node
    when staging_path is empty), and it is not."""

    def __init__(self, volume_id: str, staging_path: str, message: str) -> None:
        super().__init__(message)
        self.volume_id = volume_id
        self.staging_path = staging_path


class StagedElsewhere(FailedPrecondition):
    """The volume is staged on this node at another path; a volume is staged at one path."""

    def __init__(self, volume_id: str, staged_at: str, requested: str) -> None:
        super().__init__(
            f"volume {volume_id} is already staged on this node at {staged_at}; "
            "a volume is staged at one path per node"
        )
        self.volume_id = volume_id
        self.staged_at = staged_at
        self.requested = requested


class StagedIncompatibly(AlreadyExists):
    """The volume is staged at this very path, with another capability (SELinux label or mount
    flags) than the request's: the spec's "Volume published but is incompatible"."""

    def __init__(self, volume_id: str, staging_path: str, message: str) -> None:
        super().__init__(message)
        self.volume_id = volume_id
        self.staging_path = staging_path


class PublishedIncompatibly(AlreadyExists):
    """The volume is published at this very target, with another access (read-only flag, access
    mode or label) than the request's: the spec's "Volume published but is incompatible"."""

    def __init__(self, volume_id: str, target_path: str, message: str) -> None:
        super().__init__(message)
        self.volume_id = volume_id
        self.target_path = target_path


class LabelInUse(FailedPrecondition):
    """The volume is in use on this node with another SELinux label than the request asks for
    (staged elsewhere with it, or its filesystem mounted with it: the kernel's EBUSY). One
    volume has one label per node; the request can succeed once the other users are gone."""

    def __init__(
        self, volume_id: str, in_use: str | None, requested: str | None, message: str
    ) -> None:
        super().__init__(message)
        self.volume_id = volume_id
        self.in_use = in_use
        self.requested = requested


class StillPublished(FailedPrecondition):
    """An unstage while the volume is still published from that staging path."""

    def __init__(self, volume_id: str, target_path: str) -> None:
        super().__init__(
            f"volume {volume_id} is still published at {target_path}; "
            "unpublish it before unstaging it"
        )
        self.volume_id = volume_id
        self.target_path = target_path


class SingleWriterInUse(FailedPrecondition):
    """A ReadWriteOncePod (SINGLE_NODE_SINGLE_WRITER) volume is published for another pod."""

    def __init__(self, volume_id: str, published_at: str) -> None:
        super().__init__(
            f"volume {volume_id} is ReadWriteOncePod (SINGLE_NODE_SINGLE_WRITER) and already "
            f"published at {published_at}; only one pod may use it"
        )
        self.volume_id = volume_id
        self.published_at = published_at


class PathInUse(FailedPrecondition):
    """A staging path that carries a mount, or lies in or over another volume's staging or
    publication: mounting there would hide a pod's data."""

    def __init__(self, volume_id: str, path: str, message: str) -> None:
        super().__init__(message)
        self.volume_id = volume_id
        self.path = path


class NotMountedAt(NotFound):
    """The volume is not staged or published at the path a request names (stats, expansion):
    nothing of it is mounted there, whatever else may be."""

    def __init__(self, volume_id: str, path: str, message: str) -> None:
        super().__init__(message)
        self.volume_id = volume_id
        self.path = path


class StillInUse(Unavailable):
    """An unmount refused with EBUSY: a process still has files open on the volume. A state that
    passes, so the caller retries."""

    def __init__(self, volume_id: str, path: str) -> None:
        super().__init__(
            f"volume {volume_id} is still in use at {path} (a process has files open on it); "
            "the request will be retried"
        )
        self.volume_id = volume_id
        self.path = path
