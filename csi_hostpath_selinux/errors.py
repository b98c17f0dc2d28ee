"""The driver's error hierarchy: domain code raises these, one interceptor maps them to gRPC codes.

Messages are written for the pod author: kubelet copies them into pod events.
"""

from __future__ import annotations

import grpc


class DriverError(Exception):
    """Base of every error the driver reports to a CSI client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DriverError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DriverError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DriverError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DriverError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DriverError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(DriverError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(DriverError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DriverError):
    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(DriverError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(DriverError):
    code = grpc.StatusCode.INTERNAL


class LabelVerificationError(Internal):
    """A labelled mount succeeded but the label is not on it (dropped by util-linux or the kernel)."""
