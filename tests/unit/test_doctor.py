"""doctor's exit status: 1 exactly when something the node is expected to serve cannot work."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from csi_hostpath_selinux import cli, doctor
from csi_hostpath_selinux.selinux import SELinuxSupport

NO_SELINUX = SELinuxSupport(False, False, False, False, None)
SELINUX_VISIBLE = SELinuxSupport(True, True, True, True, True)
SELINUX_HIDDEN = SELinuxSupport(True, False, False, True, None)
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A node with no tools on PATH, loop devices present and SELinux off, unless a test says."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    loop = tmp_path / "loop-control"
    loop.touch()
    monkeypatch.setattr(doctor, "LOOP_CONTROL", str(loop))
    monkeypatch.setattr(doctor, "probe_support", lambda: NO_SELINUX)
    return empty


def tool(bin_dir: Path, name: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().out


def test_a_missing_tool_of_an_expected_feature_exits_1_naming_it(
    node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool(node, "mount")
    code, out = run(["doctor", "--expect", "ext4,nfs"], capsys)
    assert code == 1
    assert "NFS volumes are expected (--expect nfs) but need mount.nfs" in out
    assert "ext4 image volumes are expected (--expect ext4) but need mkfs.ext4" in out
    assert "CIFS" not in out.split("Problems:")[1], "cifs was not expected"


def test_without_expect_every_kind_the_driver_serves_counts(
    node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: a node with ext4 but no xfs, NFS or CIFS tools exited 0, although the driver
    offers those kinds to every StorageClass and their pods would fail to stage here."""
    tool(node, "mkfs.ext4")
    code, out = run(["doctor"], capsys)
    assert code == 1, out
    problems = out.split("Problems:")[1]
    assert "xfs image volumes are expected (--expect xfs) but need mkfs.xfs" in problems
    assert "NFS volumes are expected (--expect nfs) but need mount, mount.nfs" in problems
    assert "CIFS volumes are expected (--expect cifs) but need mount, mount.cifs" in problems
    assert "ext4" not in problems
    code, out = run(["doctor", "--expect", "ext4,block,directory"], capsys)
    assert code == 0, out
    assert "NFS volumes [nfs]: unavailable, missing mount, mount.nfs" in out, "still reported"


def test_tools_of_features_not_expected_do_not_count(
    node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(["doctor", "--expect", "directory"], capsys)
    assert code == 0, out
    assert "Problems:" not in out
    assert "xfs image volumes [xfs]: unavailable, missing mkfs.xfs" in out


def test_everything_present_exits_0(node: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("mkfs.ext4", "mkfs.xfs", "mount", "mount.nfs", "mount.cifs"):
        tool(node, name)
    code, out = run(["doctor", "--expect", ",".join(doctor.FEATURES)], capsys)
    assert code == 0, out


def test_missing_loop_devices_count_only_for_features_that_need_them(
    node: Path, tmp_path: Path
) -> None:
    tool(node, "mkfs.ext4")
    report = doctor.inspect(["ext4"], loop_control=str(tmp_path / "absent"))
    assert report.problems == [
        "ext4 image volumes are expected (--expect ext4) but need /dev/loop-control (mount "
        "the host's /dev into the container)"
    ]
    assert doctor.inspect(["directory"], loop_control=str(tmp_path / "absent")).problems == []


@pytest.mark.parametrize(("support", "code"), [(SELINUX_VISIBLE, 0), (SELINUX_HIDDEN, 1)])
def test_selinux_hidden_from_the_driver_always_counts(
    node: Path, support: SELinuxSupport, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor, "probe_support", lambda: support)
    out = io.StringIO()
    assert doctor.doctor(out, ["directory"]) == code
    problems = out.getvalue().partition("Problems:")[2]
    assert ("/sys/fs/selinux" in problems) is bool(code)


def test_unknown_feature_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["doctor", "--expect", "ext4,tape"])
    assert info.value.code == 2
    assert "unknown feature 'tape'" in capsys.readouterr().err


def test_help_and_readme_say_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["doctor", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exits 1 when something the node is expected to serve cannot work" in text
    assert f"(default: {','.join(doctor.FEATURES)})" in text, "every feature, by default"
    for name in doctor.FEATURES:
        assert name in text
    readme = " ".join(README.read_text().split())
    assert "csi-hostpath-selinux doctor --expect" in readme
    assert "exits 1 when something the node is expected to serve cannot work" in readme
    assert "by default every feature the driver serves" in readme
