"""The one mapping from domain errors to gRPC status codes, used by unary and streaming RPCs alike.

Domain modules raise `errors.DriverError` subclasses (or the SELinux package's own errors, which
are registered here) and never choose a gRPC code. A condition has one code everywhere; where the
CSI spec names another code for one RPC, `_PER_RPC` says so, next to the spec's words.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from . import errors
from . import selinux as sel

#: The code of each error class; a subclass inherits its nearest listed ancestor's code.
_CODES: dict[type[Exception], grpc.StatusCode] = {
    errors.DriverError: grpc.StatusCode.INTERNAL,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
    # The SELinux package's own errors (it imports nothing of the driver, so no DriverError).
    sel.SELinuxError: grpc.StatusCode.INTERNAL,
    sel.InvalidMountFlags: grpc.StatusCode.INVALID_ARGUMENT,
    sel.LabelNotApplied: grpc.StatusCode.INTERNAL,
}

#: (RPC method, error class) pairs whose code the CSI spec sets differently for that one RPC.
_PER_RPC: dict[tuple[str, type[Exception]], grpc.StatusCode] = {}

#: Every exception type that carries a message meant for the caller.
DOMAIN_ERRORS: tuple[type[Exception], ...] = (errors.DriverError, sel.SELinuxError)


@dataclass(frozen=True, slots=True)
class Status:
    code: grpc.StatusCode
    message: str


def status_of(method: str, error: Exception) -> Status:
    """The gRPC status that `method` answers for a domain error."""
    for cls in type(error).__mro__:
        override = _PER_RPC.get((method, cls))
        if override is not None:
            return Status(override, _message(error))
        code = _CODES.get(cls)
        if code is not None:
            return Status(code, _message(error))
    return Status(grpc.StatusCode.INTERNAL, _message(error))


def _message(error: Exception) -> str:
    message = getattr(error, "message", None)
    return message if isinstance(message, str) else str(error)
