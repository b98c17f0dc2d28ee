"""Fixtures for tests that run the real driver on a unix socket as root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.driver import Clients, DriverProcess, cleanup_under, clients, running_driver


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[DriverProcess]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (loop devices and mounts)")
    with running_driver(
        tmp_path / "driver", extra_args=("--kubelet-dir", str(tmp_path / "kubelet"))
    ) as d:
        (tmp_path / "kubelet" / "pods").mkdir(parents=True)
        (tmp_path / "kubelet" / "plugins").mkdir(parents=True)
        try:
            yield d
        finally:
            # kubelet's paths lie outside the driver's root: a test that fails half-way leaves
            # its stage and publish mounts there, and they hold the loop devices.
            stray = cleanup_under(tmp_path)
    assert not d.leaked, f"the driver left these behind: {d.leaked}"
    assert not stray, f"the test left these behind: {stray}"


@pytest.fixture
def csi(driver: DriverProcess) -> Clients:
    return clients(driver.channel())
