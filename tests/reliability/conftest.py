"""Fixtures for the reliability tests: the real driver, confined to a fake kubelet directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.driver import Clients, DriverProcess, cleanup_under, clients, running_driver


@dataclass
class Node:
    """A running driver with its fake kubelet directory and clients."""

    driver: DriverProcess
    csi: Clients
    kubelet: Path

    def staging(self, name: str) -> str:
        path = self.kubelet / "plugins" / "kubernetes.io" / "csi" / "pv" / name / "globalmount"
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)

    def target(self, name: str, pod: str = "pod") -> str:
        path = self.kubelet / "pods" / pod / "volumes" / "kubernetes.io~csi" / name / "mount"
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)


NodeFactory = Callable[..., Node]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("reliability tests need root (loop devices and mounts)")


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    """Start a driver with extra flags, e.g. node_factory("--max-volumes-per-node", "2")."""
    require_root()
    kubelet = tmp_path / "kubelet"
    kubelet.mkdir()
    with contextlib.ExitStack() as stack:
        stack.callback(cleanup_under, tmp_path)
        count = 0

        def start(*extra: str) -> Node:
            nonlocal count
            count += 1
            root = tmp_path / f"driver{count}"
            driver = stack.enter_context(
                running_driver(root, extra_args=("--kubelet-dir", str(kubelet), *extra))
            )
            return Node(driver, clients(driver.channel()), kubelet)

        yield start


@pytest.fixture
def node(node_factory: NodeFactory) -> Node:
    return node_factory()
