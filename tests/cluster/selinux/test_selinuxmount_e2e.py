"""Kubernetes' own `selinuxmount` External Storage suite (e2e.test v1.37.2) against the driver on the
enforcing VM node. Upstream's CI cannot run it: its reference hostpath driver ignores context=.

The test driver is tests/cluster/e2e/testdriver.yaml (seLinuxMount: true) with ClientNodeName set to
the VM node, so every pod of the suite runs there. [Disruptive] specs are skipped (they restart
kubelet over SSH, which this node does not offer); [Serial] ones run, in a single process.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from tests.cluster import test_upstream_e2e as storage_e2e
from tests.cluster.cluster import Cluster
from tests.cluster.selinux.node import SelinuxNode
from tests.cluster.selinux.node_vm import NODE_NAME

SKIP = r"\[Disruptive\]"


def test_selinuxmount_suite(cluster: Cluster, selinux_node: SelinuxNode) -> None:
    bins = cluster.components.bin
    if "e2e.test" not in bins:
        pytest.fail("e2e.test is not built: run scripts/bootstrap", pytrace=False)
    report = cluster.root / "e2e-selinuxmount"
    report.mkdir(exist_ok=True)
    driver = yaml.safe_load(storage_e2e.TESTDRIVER.read_text())
    driver["ClientNodeName"] = NODE_NAME
    testdriver = report / "testdriver.yaml"
    testdriver.write_text(yaml.safe_dump(driver))
    cmd = [
        str(bins["e2e.test"]),
        r"-ginkgo.focus=External.Storage.*\] seLinuxMount ",
        f"-ginkgo.skip={SKIP}",
        "-ginkgo.no-color",
        "-ginkgo.timeout=1h",
        f"-ginkgo.junit-report={report / 'junit.xml'}",
        f"-kubeconfig={cluster.admin_kubeconfig}",
        f"-storage.testdriver={testdriver}",
        f"-kubectl-path={bins['kubectl']}",
        "-provider=local",
        "-node-os-distro=debian",
        f"-report-dir={report}",
        "-disable-log-dump",
    ]
    log = cluster.logs / "e2e-selinuxmount.log"
    proc, elapsed, results = storage_e2e.run_e2e(cluster, cmd, log, report, 3600)
    # The suite's name in the spec text (test/e2e/storage/testsuites/selinuxmount.go).
    suite = results.get("seLinuxMount", storage_e2e.SuiteResult())
    summary = {
        "seconds": round(elapsed),
        "exit_code": proc.returncode,
        "passed": suite.passed,
        "failed": suite.failed,
        "skipped": suite.skipped,
        "skip_reasons": dict(suite.skip_reasons),
        "failures": suite.failures,
    }
    (cluster.logs / "e2e-selinuxmount-summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\nselinuxmount suite on {NODE_NAME} ({elapsed:.0f} s): {suite.passed} passed, "
        f"{suite.failed} failed, {suite.skipped} skipped\n{json.dumps(summary, indent=2)}",
        file=sys.stderr,
    )
    assert suite.failures == [], "\n".join(suite.failures)
    assert proc.returncode == 0, "\n".join(log.read_text().splitlines()[-60:])
    assert suite.passed > 0, f"no selinuxmount spec passed: {summary}"
