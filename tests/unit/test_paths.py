"""Request path validation and symlink-free walking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from csi_hostpath_selinux import paths
from csi_hostpath_selinux.errors import InvalidArgument, NotFound


@pytest.mark.parametrize(
    ("path", "kubelet", "message"),
    [
        ("", None, "is required"),
        ("relative/path", None, "absolute"),
        ("/a/../b", None, "normalized"),
        ("/a/./b", None, "normalized"),
        ("/a//b", None, "normalized"),
        ("//a", None, "normalized"),
        ("/a/b/", None, "normalized"),
        ("/a\x00b", None, "NUL"),
        ("/", None, "root"),
        ("/" + "a" * 5000, None, "longer"),
        ("/var/lib/kubelet-evil/pods/x", "/var/lib/kubelet", "not below"),
        ("/var/lib/kubelet", "/var/lib/kubelet", "not below"),
        ("/etc/passwd", "/var/lib/kubelet", "not below"),
    ],
)
def test_bad_paths_are_refused(path: str, kubelet: str | None, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        paths.validate(path, "target_path", kubelet)


@pytest.mark.parametrize(
    ("path", "kubelet"),
    [
        ("/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pv/mount", "/var/lib/kubelet"),
        ("/tmp/csi-mount", None),
        ("/with space/and:colon", None),
    ],
)
def test_good_paths_pass(path: str, kubelet: str | None) -> None:
    assert paths.validate(path, "target_path", kubelet) == path


def test_is_below_uses_whole_components() -> None:
    assert paths.is_below("/a/vol-10", "/a")
    assert not paths.is_below("/a/vol-10", "/a/vol-1")
    assert paths.is_below("/a/vol-1/x", "/a/vol-1")
    assert not paths.is_below("/a", "/a")


def test_symlink_anywhere_in_the_path_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        paths.open_path(str(tmp_path / "link" / "x"))
    with pytest.raises(InvalidArgument, match="symbolic link"):
        paths.make_dir(str(tmp_path / "link" / "target"))
    assert not (real / "target").exists()
    # The final component too: a planted symlink where the target should be.
    (tmp_path / "target").symlink_to("/etc")
    with pytest.raises(InvalidArgument):
        paths.make_dir(str(tmp_path / "target"))
    with pytest.raises(InvalidArgument):
        paths.make_file(str(tmp_path / "target"))


def test_trusted_prefix_may_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "kubelet-real"
    (real / "pods").mkdir(parents=True)
    (tmp_path / "kubelet").symlink_to(real)
    target = str(tmp_path / "kubelet" / "pods" / "mnt")
    paths.make_dir(target, trusted_prefix=str(tmp_path / "kubelet"))
    assert (real / "pods" / "mnt").is_dir()
    with pytest.raises(InvalidArgument):
        paths.make_dir(target + "/x", trusted_prefix=None)


def test_make_and_remove(tmp_path: Path) -> None:
    d = str(tmp_path / "d")
    paths.make_dir(d)
    paths.make_dir(d)  # idempotent
    f = str(tmp_path / "f")
    paths.make_file(f)
    paths.make_file(f)
    with pytest.raises(InvalidArgument, match="not a directory"):
        paths.make_dir(f)
    with pytest.raises(NotFound):
        paths.make_dir(str(tmp_path / "missing" / "d"))
    paths.remove_mount_point(d)
    paths.remove_mount_point(f)
    paths.remove_mount_point(str(tmp_path / "never-existed"))
    assert not os.path.exists(d) and not os.path.exists(f)


def test_only_empty_mount_points_are_removed(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "data").write_text("keep me")
    assert not paths.remove_mount_point(str(d)), "never recursive"
    assert not paths.remove_mount_point(str(d / "data")), "a file with data is not a mount point"
    (tmp_path / "link").symlink_to(d)
    assert not paths.remove_mount_point(str(tmp_path / "link"))
    assert (d / "data").read_text() == "keep me" and (tmp_path / "link").is_symlink()
