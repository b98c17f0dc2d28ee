"""csi-sanity against the real driver, once per volume kind, with real loop devices and mounts.

Each kind gets a fresh driver, state directory, mount and staging directories. The run's JUnit
report is parsed and its counts printed; any failed spec fails the test with the spec's name and
message. Afterwards nothing may be left mounted or attached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi_hostpath_selinux.backends.image import has_sys_resource
from tests.support.driver import cleanup_under, running_driver

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Kind:
    name: str
    params: str
    access_type: str


KINDS = [
    Kind("ext4", "ext4.yaml", "mount"),
    Kind("xfs", "xfs.yaml", "mount"),
    Kind("block", "block.yaml", "block"),
    Kind("directory", "directory.yaml", "mount"),
]


def csi_sanity() -> str:
    found = shutil.which("csi-sanity")
    if found:
        return found
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, check=True)
    candidate = Path(gopath.stdout.strip()) / "bin" / "csi-sanity"
    if not candidate.exists():
        pytest.fail("csi-sanity is not installed: run scripts/bootstrap")
    return str(candidate)


@dataclass
class Result:
    passed: int
    failed: list[tuple[str, str]]
    skipped: list[str]


def parse_junit(path: Path) -> Result:
    root = ET.parse(path).getroot()
    passed, failed, skipped = 0, [], []
    for case in root.iter("testcase"):
        name = case.get("name", "")
        if case.find("failure") is not None or case.find("error") is not None:
            node = case.find("failure")
            if node is None:
                node = case.find("error")
            assert node is not None
            failed.append((name, (node.get("message") or node.text or "")[:2000]))
        elif case.find("skipped") is not None or case.get("status") == "skipped":
            skipped.append(name)
        else:
            passed += 1
    return Result(passed, failed, skipped)


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_csi_sanity(kind: Kind, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("csi-sanity needs root (real loop devices and mounts)")
    junit = tmp_path / "junit.xml"
    with running_driver(tmp_path / "driver", node_id=f"sanity-{kind.name}") as driver:
        argv = [
            csi_sanity(),
            f"--csi.endpoint={driver.endpoint}",
            f"--csi.mountdir={tmp_path / 'mount'}",
            f"--csi.stagingdir={tmp_path / 'staging'}",
            f"--csi.testvolumeparameters={HERE / 'params' / kind.params}",
            f"--csi.testvolumeaccesstype={kind.access_type}",
            f"--csi.junitfile={junit}",
            "--ginkgo.no-color",
        ]
        if kind.name == "ext4" and not has_sys_resource():
            # ext4's online resize ioctl demands CAP_SYS_RESOURCE; a privileged driver container
            # has it, this machine's root does not. The driver answers FAILED_PRECONDITION saying
            # so (tested in tests/integration), and the VM e2e suite grows a mounted ext4 volume.
            print("\nskipping the online ext4 NodeExpandVolume spec: no CAP_SYS_RESOURCE here")
            argv.append(
                "--ginkgo.skip=NodeExpandVolume should work if node-expand is called after node-publish"
            )
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        log_tail = driver.log()[-4000:]
    leaked = driver.leaked + cleanup_under(tmp_path)
    assert junit.exists(), (
        f"csi-sanity wrote no report (exit {proc.returncode}):\n{tail}\n{proc.stderr}"
    )
    result = parse_junit(junit)
    print(
        f"\ncsi-sanity {kind.name}: {result.passed} passed, {len(result.failed)} failed, "
        f"{len(result.skipped)} skipped"
    )
    for name in result.skipped:
        print(f"  skipped: {name}")
    failures = "\n".join(f"- {name}: {msg}" for name, msg in result.failed)
    assert not result.failed, (
        f"csi-sanity {kind.name} failures:\n{failures}\n\ndriver log tail:\n{log_tail}"
    )
    assert proc.returncode == 0, f"csi-sanity exited {proc.returncode}:\n{tail}"
    assert result.passed > 0, "csi-sanity ran no spec"
    assert not leaked, f"left behind after csi-sanity {kind.name}: {leaked}"
