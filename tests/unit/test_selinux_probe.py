"""csi_hostpath_selinux.selinux.probe and .xattr: the node probe on fake trees, and label reads."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from csi_hostpath_selinux.selinux import xattr
from csi_hostpath_selinux.selinux.probe import SELinuxSupport, probe_support

L1 = "system_u:object_r:container_file_t:s0:c15,c25"
L2 = "system_u:object_r:container_file_t:s0:c1,c2"


def test_read_label_strips_the_nul(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str, bool]] = []

    def fake(path: str, name: str, *, follow_symlinks: bool = True) -> bytes:
        seen.append((path, name, follow_symlinks))
        return (L1 + "\0").encode()

    monkeypatch.setattr("csi_hostpath_selinux.selinux.xattr.os.getxattr", fake)
    assert xattr.read_label("/x") == L1
    assert seen == [("/x", "security.selinux", False)]


@pytest.mark.parametrize("code", [errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP])
def test_read_label_is_none_without_a_label(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def fake(path: str, name: str, *, follow_symlinks: bool = True) -> bytes:
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr("csi_hostpath_selinux.selinux.xattr.os.getxattr", fake)
    assert xattr.read_label("/x") is None


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EACCES])
def test_read_label_raises_for_a_wrong_path(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def fake(path: str, name: str, *, follow_symlinks: bool = True) -> bytes:
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr("csi_hostpath_selinux.selinux.xattr.os.getxattr", fake)
    with pytest.raises(OSError) as info:
        xattr.read_label("/x")
    assert info.value.errno == code


def test_read_label_does_not_follow_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    try:
        os.setxattr(target, "security.selinux", (L1 + "\0").encode())
    except OSError as exc:
        pytest.skip(f"cannot set security.selinux here: {exc}")
    assert xattr.read_label(str(target)) == L1
    assert xattr.read_label(str(link)) != L1


# ---------------------------------------------------------------------------------------------
# probe_support on fake trees

SELINUXFS_RW = (
    "40 22 0:21 / /sys/fs/selinux rw,nosuid,noexec,relatime shared:12 - selinuxfs selinuxfs rw"
)
SELINUXFS_RO = "40 22 0:21 / /sys/fs/selinux ro,nosuid,noexec,relatime - selinuxfs selinuxfs rw"
SELINUXFS_SB_RO = "40 22 0:21 / /sys/fs/selinux rw,relatime - selinuxfs selinuxfs ro"
OTHER_MOUNTS = [
    "22 1 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
    "1 0 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw",
    "23 1 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw",
]


def _tree(
    root: Path,
    *,
    mounts: list[str] | None = None,
    lsm: str | None = None,
    attr_current: str | None = None,
    enforce: str | None = None,
    config: bool = False,
) -> str:
    (root / "proc/self/attr").mkdir(parents=True)
    (root / "sys/fs/selinux").mkdir(parents=True)
    (root / "sys/kernel/security").mkdir(parents=True)
    (root / "etc/selinux").mkdir(parents=True)
    (root / "proc/self/mountinfo").write_text("\n".join([*OTHER_MOUNTS, *(mounts or [])]) + "\n")
    if lsm is not None:
        (root / "sys/kernel/security/lsm").write_text(lsm)
    if attr_current is not None:
        (root / "proc/self/attr/current").write_text(attr_current)
    if enforce is not None:
        (root / "sys/fs/selinux/enforce").write_text(enforce)
    if config:
        (root / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    return str(root)


def test_probe_selinux_off(tmp_path: Path) -> None:
    root = _tree(
        tmp_path, lsm="lockdown,capability,landlock,yama,apparmor,bpf", attr_current="unconfined\n"
    )
    support = probe_support(root)
    assert support == SELinuxSupport(False, False, False, False, None, support.evidence)
    assert "lsm" in support.evidence
    assert not support.util_linux_keeps_options
    assert support.problems() == []
    assert "disabled" in support.describe()[0]


def test_probe_enabled_and_visible_read_write(tmp_path: Path) -> None:
    root = _tree(
        tmp_path, mounts=[SELINUXFS_RW], lsm="capability,selinux,bpf", enforce="1", config=True
    )
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.selinuxfs_mounted
    assert support.selinuxfs_writable
    assert support.config_present
    assert support.enforcing is True
    assert support.util_linux_keeps_options
    assert support.problems() == []
    lines = support.describe()
    assert "enabled" in lines[0]
    assert "enforcing" in lines[0]
    assert any("read-write" in line for line in lines)
    assert any("keep SELinux mount options" in line for line in lines)


def test_probe_permissive_mode(tmp_path: Path) -> None:
    root = _tree(tmp_path, mounts=[SELINUXFS_RW], enforce="0", config=True)
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.evidence.startswith("selinuxfs")
    assert support.enforcing is False
    assert "permissive" in support.describe()[0]


def test_probe_enabled_but_selinuxfs_hidden(tmp_path: Path) -> None:
    root = _tree(tmp_path, attr_current="system_u:system_r:container_t:s0:c1,c2\0", config=True)
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.evidence == "/proc/self/attr/current"
    assert not support.selinuxfs_mounted
    assert not support.selinuxfs_writable
    assert support.enforcing is None
    assert not support.util_linux_keeps_options
    problems = support.problems()
    assert len(problems) == 1
    assert "/sys/fs/selinux is not visible to the driver" in problems[0]
    assert "read-write" in problems[0]
    assert "mode unknown" in support.describe()[0]


def test_probe_hidden_selinuxfs_found_through_the_selinux_attr_dir(tmp_path: Path) -> None:
    root = _tree(tmp_path, attr_current="unconfined")  # AppArmor speaking first (LSM stacking)
    (tmp_path / "proc/self/attr/selinux").mkdir()
    (tmp_path / "proc/self/attr/selinux/current").write_text("system_u:system_r:spc_t:s0\0")
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.evidence == "/proc/self/attr/selinux/current"


def test_probe_hidden_selinuxfs_found_through_the_proc_label(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    try:
        os.setxattr(tmp_path / "proc", "security.selinux", b"system_u:object_r:proc_t:s0\0")
    except OSError as exc:
        pytest.skip(f"cannot set security.selinux here: {exc}")
    support = probe_support(root)
    assert support.kernel_enabled
    assert "xattr" in support.evidence


def test_probe_ignores_a_stale_label_on_the_root(tmp_path: Path) -> None:
    root = _tree(tmp_path, attr_current="unconfined")
    try:
        os.setxattr(tmp_path, "security.selinux", b"system_u:object_r:root_t:s0\0")
    except OSError as exc:
        pytest.skip(f"cannot set security.selinux here: {exc}")
    assert not probe_support(root).kernel_enabled


def test_probe_lsm_list_decides_over_other_signals(tmp_path: Path) -> None:
    root = _tree(
        tmp_path, lsm="capability,apparmor\n", attr_current="system_u:system_r:container_t:s0"
    )
    assert not probe_support(root).kernel_enabled
    (tmp_path / "sys/kernel/security/lsm").write_text("capability,selinux\n")
    assert probe_support(root).kernel_enabled


@pytest.mark.parametrize("line", [SELINUXFS_RO, SELINUXFS_SB_RO])
def test_probe_selinuxfs_read_only(tmp_path: Path, line: str) -> None:
    root = _tree(tmp_path, mounts=[line], enforce="1", config=True)
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.selinuxfs_mounted
    assert not support.selinuxfs_writable
    assert not support.util_linux_keeps_options
    assert support.enforcing is True
    problems = support.problems()
    assert len(problems) == 1
    assert "read-only" in problems[0]
    assert any("read-only" in line for line in support.describe())


def test_probe_config_missing(tmp_path: Path) -> None:
    root = _tree(tmp_path, mounts=[SELINUXFS_RW], lsm="selinux", enforce="1")
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.selinuxfs_writable
    assert not support.config_present
    assert not support.util_linux_keeps_options
    problems = support.problems()
    assert len(problems) == 1
    assert "/etc/selinux/config is missing" in problems[0]
    assert any("drop SELinux mount options" in line for line in support.describe())


def test_probe_later_mount_covers_selinuxfs(tmp_path: Path) -> None:
    covered = "41 40 0:30 / /sys/fs/selinux rw,relatime - tmpfs tmpfs rw"
    root = _tree(tmp_path, mounts=[SELINUXFS_RW, covered], lsm="selinux", config=True)
    support = probe_support(root)
    assert support.kernel_enabled
    assert not support.selinuxfs_mounted
    assert not support.util_linux_keeps_options


def test_probe_selinuxfs_elsewhere_does_not_count(tmp_path: Path) -> None:
    elsewhere = "40 22 0:21 / /host/sys/fs/selinux rw - selinuxfs selinuxfs rw"
    root = _tree(tmp_path, mounts=[elsewhere], lsm="selinux", config=True)
    assert not probe_support(root).selinuxfs_mounted


@pytest.mark.parametrize("value", ["", "2", "enforcing", "\0"])
def test_probe_odd_enforce_file_is_unknown(tmp_path: Path, value: str) -> None:
    root = _tree(tmp_path, mounts=[SELINUXFS_RW], enforce=value, config=True)
    assert probe_support(root).enforcing is None


def test_probe_survives_garbage(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        mounts=["garbage", "", "1 2 3 4 /sys/fs/selinux rw - ", "\\777 \xff x", " - - - - -"],
        attr_current="\xff\xfe not a context",
    )
    (tmp_path / "sys/kernel/security/lsm").mkdir()  # unreadable as a file
    support = probe_support(root)
    assert support == SELinuxSupport(False, False, False, False, None, support.evidence)


def test_probe_of_a_missing_root_is_all_false(tmp_path: Path) -> None:
    support = probe_support(str(tmp_path / "nowhere"))
    assert not support.kernel_enabled
    assert not support.selinuxfs_mounted
    assert not support.config_present
    assert support.enforcing is None
