"""Kubernetes' own External Storage e2e suites (e2e.test v1.37.2) against the deployed driver.

The driver is described by tests/cluster/e2e/testdriver.yaml. The run's JUnit report is parsed into
passed/failed/skipped per suite (the word after the test pattern, e.g. `provisioning`); the test
fails on any failed spec and when a focused suite ran nothing at all. The summary, with the reason
of every skip, is printed and written next to the cluster's logs (e2e-summary.json).
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cluster.cluster import Cluster
from tests.cluster.deploy import Deployment

HERE = Path(__file__).resolve().parent
TESTDRIVER = HERE / "e2e" / "testdriver.yaml"
SUITES = ("provisioning", "volumes", "volumeMode", "volumeIO", "snapshottable", "ephemeral")
#: Specs left out, each for a reason that is not a defect of the driver:
#: - [Disruptive]: they restart kubelet over SSH; [Serial]: they need the whole cluster;
#: - selinuxmount: needs an SELinux node (the SELinux-node issue builds on this harness);
#: - Pre-provisioned Snapshot: with distributed snapshotting (csi-snapshotter per node, which a
#:   node-local driver needs) a VolumeSnapshotContent is handled only by the snapshotter of the node
#:   its `snapshot.storage.kubernetes.io/managed-by` label names; snapshot-controller sets it for
#:   dynamic snapshots, the suite's hand-made contents lack it, so no snapshotter ever picks them up
#:   (measured: "VolumeSnapshot pre-provisioned-snapshot-... is not ready within 5m0s").
SKIP = r"\[Disruptive\]|\[Serial\]|selinuxmount|Pre-provisioned Snapshot"
PROCS = int(os.environ.get("CSI_CLUSTER_E2E_PROCS", "3"))


@dataclass
class SuiteResult:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    skip_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)


def suite_of(name: str) -> str | None:
    m = re.search(r"\[Testpattern: [^\]]*\] (\S+)", name)
    return m.group(1) if m else None


def short_reason(message: str) -> str:
    """The skip message without the per-test details (sizes, namespaces)."""
    text = " ".join(message.split())
    text = re.sub(r"^skipped\s*", "", text)
    return text[:200]


def run_e2e(
    cluster: Cluster, cmd: list[str], log: Path, report_dir: Path, timeout: float
) -> tuple[subprocess.CompletedProcess[bytes], float, dict[str, SuiteResult]]:
    """Run e2e.test (cmd, writing junit.xml into report_dir) in the cluster's network namespace,
    its output into log; return the process, its seconds and its results per suite. Fails the
    test with the log's tail when no report was written."""
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [*cluster.nsenter(mount=False), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=report_dir,
            timeout=timeout,
            check=False,
        )
    elapsed = time.monotonic() - t0
    junit = report_dir / "junit.xml"
    assert junit.is_file(), f"e2e.test wrote no report (exit {proc.returncode}):\n" + "\n".join(
        log.read_text().splitlines()[-60:]
    )
    return proc, elapsed, parse_junit(junit)


def parse_junit(path: Path) -> dict[str, SuiteResult]:
    results: dict[str, SuiteResult] = collections.defaultdict(SuiteResult)
    root = ET.parse(path).getroot()  # noqa: S314 - written by e2e.test in this run
    for case in root.iter("testcase"):
        suite = suite_of(case.get("name", ""))
        if suite is None:
            continue  # BeforeSuite/AfterSuite and the like
        r = results[suite]
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            r.failed += 1
            r.failures.append(f"{case.get('name')}: {(failure.get('message') or '')[:500]}")
        elif skipped is not None:
            reason = short_reason(skipped.get("message") or "")
            if not reason:
                continue  # not selected by --focus/--skip: ginkgo lists it without a reason
            r.skipped += 1
            r.skip_reasons[reason] += 1
        else:
            r.passed += 1
    return dict(results)


def test_external_storage_suites(cluster: Cluster, deployed: Deployment) -> None:
    bins = cluster.components.bin
    if "e2e.test" not in bins:
        pytest.fail("e2e.test is not built: run scripts/bootstrap", pytrace=False)
    cluster.wait_images()
    report_dir = cluster.root / "e2e"
    report_dir.mkdir(exist_ok=True)
    focus = rf"External.Storage.*\] ({'|'.join(SUITES)}) "
    e2e_args = [
        f"-kubeconfig={cluster.admin_kubeconfig}",
        f"-storage.testdriver={TESTDRIVER}",
        f"-kubectl-path={bins['kubectl']}",
        "-provider=local",
        "-node-os-distro=debian",
        f"-report-dir={report_dir}",
        "-disable-log-dump",
    ]
    ginkgo_args = [
        f"--focus={focus}",
        f"--skip={SKIP}",
        "--no-color",
        "--timeout=2h",
        f"--junit-report={report_dir / 'junit.xml'}",
    ]
    if "ginkgo" in bins and PROCS > 1:
        cmd = [
            str(bins["ginkgo"]),
            f"--procs={PROCS}",
            *ginkgo_args,
            str(bins["e2e.test"]),
            "--",
            *e2e_args,
        ]
    else:
        cmd = [
            str(bins["e2e.test"]),
            *[a.replace("--", "-ginkgo.", 1) for a in ginkgo_args],
            *e2e_args,
        ]
    log = cluster.logs / "e2e.log"
    proc, elapsed, results = run_e2e(cluster, cmd, log, report_dir, 7200)
    summary = {
        "seconds": round(elapsed),
        "exit_code": proc.returncode,
        "suites": {
            name: {
                "passed": r.passed,
                "failed": r.failed,
                "skipped": r.skipped,
                "skip_reasons": dict(r.skip_reasons),
                "failures": r.failures,
            }
            for name, r in sorted(results.items())
        },
    }
    text = json.dumps(summary, indent=2)
    (cluster.logs / "e2e-summary.json").write_text(text)
    keep = os.environ.get("CSI_CLUSTER_E2E_SUMMARY")
    if keep:
        Path(keep).write_text(text)
    print(f"\nExternal Storage suites ({elapsed:.0f} s):", file=sys.stderr)
    for name, r in sorted(results.items()):
        print(
            f"  {name}: {r.passed} passed, {r.failed} failed, {r.skipped} skipped", file=sys.stderr
        )
    failures = [f for r in results.values() for f in r.failures]
    assert not failures, "\n".join(failures)
    assert proc.returncode == 0, "e2e.test failed:\n" + "\n".join(
        log.read_text().splitlines()[-60:]
    )
    ran_nothing = [s for s in SUITES if results.get(s, SuiteResult()).passed == 0]
    assert not ran_nothing, f"no spec passed in {ran_nothing}"
