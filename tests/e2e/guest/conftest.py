"""Fixtures of the guest suite (runs inside the VM as PID 1's child, in enforcing mode)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_lib import Driver, Kubelet


@pytest.fixture(scope="session")
def driver() -> Iterator[Driver]:
    """The driver started as a real process with its flags, as the DaemonSet runs it."""
    instance = Driver()
    yield instance
    instance.stop()


@pytest.fixture
def kubelet(driver: Driver) -> Iterator[Kubelet]:
    """kubelet's side of the calls; every volume a test made is torn down after it."""
    fake = Kubelet(driver)
    yield fake
    errors = list(fake.cleanup())
    for line in errors:
        print(line)
    assert not errors, "tearing the test's volumes down failed:\n" + "\n".join(errors)
