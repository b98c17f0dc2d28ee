"""The SELinux probes on the real host. This CI host runs a kernel with SELinux off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from csi_hostpath_selinux.errors import LabelVerificationError
from csi_hostpath_selinux.selinux import (
    SELinuxLabel,
    SELinuxSupport,
    probe_support,
    read_label,
    verify_mounted_label,
)

pytestmark = pytest.mark.integration

LABEL = "system_u:object_r:container_file_t:s0:c1,c2"


def _host_has_selinux() -> bool:
    try:
        lsm = Path("/sys/kernel/security/lsm").read_text()
    except OSError:
        return os.path.exists("/sys/fs/selinux/enforce")
    return "selinux" in lsm.split(",")


needs_selinux_off = pytest.mark.skipif(_host_has_selinux(), reason="this host runs SELinux")


@needs_selinux_off
def test_probe_reports_selinux_off() -> None:
    support = probe_support("/")
    assert not support.kernel_enabled
    assert not support.selinuxfs_mounted
    assert not support.util_linux_keeps_options
    assert support.enforcing is None
    assert support.problems() == []
    assert "SELinux is disabled" in support.describe()[0]


def test_probe_default_root_is_the_host() -> None:
    assert probe_support() == probe_support("/")


@needs_selinux_off
def test_read_label_of_a_new_file_is_none(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    assert read_label(str(path)) is None
    link = tmp_path / "link"
    link.symlink_to(path)
    assert read_label(str(link)) is None


@needs_selinux_off
def test_read_label_of_procfs_is_none() -> None:
    # procfs stores no xattrs: without SELinux the kernel answers EOPNOTSUPP, read as None.
    assert read_label("/proc") is None


def test_read_label_of_a_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_label(str(tmp_path / "missing"))


@needs_selinux_off
def test_verify_against_a_real_xattr(tmp_path: Path) -> None:
    """With SELinux off, root may store any security.selinux value: check both outcomes."""
    try:
        os.setxattr(tmp_path, "security.selinux", (LABEL + "\0").encode())
    except OSError as exc:
        pytest.skip(f"this filesystem does not store security.selinux: {exc}")
    assert read_label(str(tmp_path)) == LABEL
    support = SELinuxSupport(True, True, True, True, True)
    options = ["rw", f'context="{LABEL}"', "seclabel"]
    verify_mounted_label(str(tmp_path), options, SELinuxLabel.parse(LABEL), support)
    other = SELinuxLabel.parse("system_u:object_r:container_file_t:s0:c3,c4")
    with pytest.raises(LabelVerificationError):
        verify_mounted_label(str(tmp_path), [f'context="{other}"'], other, support)
