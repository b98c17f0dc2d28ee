"""The one error-to-status mapping, and the interceptor recording what the caller really got."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from csi_hostpath_selinux import errors
from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux.interceptor import DriverInterceptor
from csi_hostpath_selinux.metrics import Metrics
from csi_hostpath_selinux.status import status_of


class _Aborted(Exception):
    pass


class _Context:
    """Just enough of grpc.ServicerContext: abort records the code and raises, as grpcio does."""

    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self.details = details
        raise _Aborted(details)

    def code(self) -> grpc.StatusCode | None:
        return self._code


def test_each_error_class_has_its_code() -> None:
    assert status_of("NodeStageVolume", errors.InvalidArgument("x")).code is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert status_of("CreateVolume", errors.ResourceExhausted("x")).code is (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


def test_a_subclass_inherits_its_ancestors_code() -> None:
    class StillInUse(errors.FailedPrecondition):
        pass

    status = status_of("DeleteVolume", StillInUse("volume v is published at /p"))
    assert status.code is grpc.StatusCode.FAILED_PRECONDITION
    assert status.message == "volume v is published at /p"


def _count(metrics: Metrics, method: str, code: str) -> int:
    line = f'csi_hostpath_selinux_rpc_duration_seconds_count{{method="{method}",code="{code}"}}'
    for row in metrics.render().splitlines():
        if row.startswith(line):
            return int(float(row.split()[-1]))
    return 0


def test_stream_records_the_code_a_handler_aborted_with() -> None:
    """A streaming handler that aborts itself must not be counted as OK."""
    metrics = Metrics()
    interceptor = DriverInterceptor(metrics)
    context = _Context()

    def handler(request: Any, ctx: Any) -> Iterator[Any]:
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such snapshot")
        yield from ()

    with pytest.raises(_Aborted):
        request = pb.GetCapacityRequest()
        # _Context stands in for grpc.ServicerContext with the two methods stream() calls.
        list(interceptor.stream("GetMetadataAllocated", handler, request, context))  # type: ignore[arg-type]
    assert _count(metrics, "GetMetadataAllocated", "NOT_FOUND") == 1
    assert _count(metrics, "GetMetadataAllocated", "OK") == 0


def test_stream_maps_domain_errors_like_unary_calls() -> None:
    metrics = Metrics()
    interceptor = DriverInterceptor(metrics)
    context = _Context()

    def handler(request: Any, ctx: Any) -> Iterator[Any]:
        raise errors.NotFound("snapshot s does not exist")
        yield

    with pytest.raises(_Aborted):
        request = pb.GetCapacityRequest()
        # _Context stands in for grpc.ServicerContext with the two methods stream() calls.
        list(interceptor.stream("GetMetadataDelta", handler, request, context))  # type: ignore[arg-type]
    assert context.code() is grpc.StatusCode.NOT_FOUND
    assert context.details == "snapshot s does not exist"
    assert _count(metrics, "GetMetadataDelta", "NOT_FOUND") == 1
