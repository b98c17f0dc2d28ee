"""Package fixtures: one cluster for all tests of tests/cluster (stopped when the last of them
ends, not at the end of a whole-repository session), the driver deployed once on it.

The cluster is started by the first test that needs it and stopped after the last one, also
when tests fail; the teardown then asserts that nothing is left on the host (processes, mounts,
loop devices, cgroups, directories, sysctl values).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator

import pytest

from tests.cluster import manifest
from tests.cluster.cluster import Cluster
from tests.cluster.deploy import Deployment, deploy_driver


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the cluster tests need root (namespaces, mounts, cgroups)")
    try:
        components = manifest.load(allow_partial=os.environ.get("CSI_CLUSTER_PARTIAL") == "1")
    except manifest.ManifestMissing as e:
        pytest.fail(str(e), pytrace=False)
    # One cluster on the machine at a time, whatever its cache directory: clusters share the
    # host's mount points (a missing one is made for the run and removed after; removing it
    # detaches another cluster's bind mount on it), loop devices and cgroup tree. The lock is
    # taken on /var/lib itself, so it leaves no file behind.
    lock = os.open("/var/lib", os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = manifest.cache_dir() / "harness-state.json"
    stale = Cluster.recover(components, state)
    assert not stale, f"a killed earlier session left these, and they could not be removed: {stale}"
    c = Cluster(components, keep_logs=manifest.cache_dir() / "last-run-logs", state_file=state)
    t0 = time.monotonic()
    try:
        c.start()
        print(f"\ncluster up in {time.monotonic() - t0:.1f} s: {c.timings}", file=sys.stderr)
        yield c
    finally:
        t1 = time.monotonic()
        c.stop()
        stops = {k: round(v, 1) for k, v in c.timings.items() if k.startswith("stop")}
        print(f"\ncluster stopped in {time.monotonic() - t1:.1f} s {stops}", file=sys.stderr)
        left = c.leftovers()
        os.close(lock)
        assert not left, f"the cluster left these on the host: {left}"


@pytest.fixture(scope="package")
def deployed(cluster: Cluster) -> Deployment:
    d = deploy_driver(cluster)
    print(f"\ndriver deployed: {d.timings}", file=sys.stderr)
    return d
