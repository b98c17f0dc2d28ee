"""One SELinux VM node for the whole tests/cluster/selinux package: it joins the harness's
cluster (the `cluster` and `deployed` session fixtures of tests/cluster/conftest.py) before the
first test of the package and leaves it after the last, so the harness's own tests, which expect
one node, never see it."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator

import pytest

from tests.cluster import manifest
from tests.cluster.cluster import Cluster
from tests.cluster.deploy import Deployment
from tests.cluster.selinux.node import SelinuxNode
from tests.cluster.selinux.node_vm import NodeVM


@pytest.fixture(scope="package")
def selinux_node(cluster: Cluster, deployed: Deployment) -> Iterator[SelinuxNode]:
    node = SelinuxNode(cluster, NodeVM(cluster, cluster.root / "selinux-node"))
    t0 = time.monotonic()
    problems: list[str] = []
    try:
        node.join()
        yield node
    finally:
        problems = node.leave()
        keep = manifest.cache_dir() / "last-selinux-node-logs"
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
        for name in ("console.log", "image.log"):
            if (node.vm.work / name).exists():
                shutil.copy2(node.vm.work / name, keep / name)
        if (node.vm.work / "guest-logs").is_dir():
            shutil.copytree(node.vm.work / "guest-logs", keep / "guest-logs")
        shutil.rmtree(node.vm.work, ignore_errors=True)
        print(
            f"\nSELinux VM node: {time.monotonic() - t0:.0f} s from boot to power-off; "
            f"logs in {keep}",
            file=sys.stderr,
        )
    assert not problems, problems
