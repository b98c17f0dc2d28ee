"""The gRPC status code a call to the driver ended with."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    """The code call() ended with: OK when it returned."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def refusal_code(call: Callable[[], object]) -> grpc.StatusCode:
    """The code of the error call() must raise (the test fails when it returns)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()
