"""LinuxMounter on the real kernel (root only): mount(2), bind mounts, helpers, unmount.

The Cleanup fixture (shared with test_loopdev) unmounts and detaches in its finalizer even when a
test fails.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from csi_hostpath_selinux import loopdev, mounts, syscalls
from csi_hostpath_selinux.mount_options import MountError
from csi_hostpath_selinux.mountinfo import find_mount, read_mountinfo
from csi_hostpath_selinux.mounts import LinuxMounter
from tests.integration.test_loopdev import Cleanup, cleanup

__all__ = ["cleanup"]  # the fixture, re-exported so pytest finds it here

pytestmark = pytest.mark.integration

L1 = "system_u:object_r:container_file_t:s0:c1,c2"


@pytest.fixture
def mounter() -> LinuxMounter:
    return LinuxMounter(helper_timeout=30)


@pytest.fixture
def ext4(cleanup: Cleanup, tmp_path: Path) -> loopdev.LoopDevice:
    """A 64 MiB ext4 image attached to a loop device."""
    image = cleanup.image(tmp_path / "vol.img")
    return cleanup.attached(loopdev.attach(image))


def make_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


@contextmanager
def opened(path: Path) -> Iterator[str]:
    """Like paths.opened in the driver: a /proc/self/fd/N name for an O_PATH descriptor."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def assert_write_fails_erofs(directory: Path) -> None:
    with pytest.raises(OSError) as info:
        (directory / "new-file").write_text("x")
    assert info.value.errno == errno.EROFS


def test_mount_bind_read_only_unmount_detach(
    cleanup: Cleanup, mounter: LinuxMounter, ext4: loopdev.LoopDevice, tmp_path: Path
) -> None:
    stage = make_dir(tmp_path, "stage")
    publish = make_dir(tmp_path, "publish")
    mounter.mount(ext4.path, cleanup.mounted(stage), "ext4", ["noatime"])
    entry = find_mount(str(stage))
    assert entry is not None
    assert (entry.fs_type, entry.source) == ("ext4", ext4.path)
    assert "noatime" in entry.mount_options
    assert not entry.read_only
    assert find_mount(str(stage)) is not None
    (stage / "data").write_text("payload")

    mounter.bind(str(stage), cleanup.mounted(publish), read_only=True)
    bind = find_mount(str(publish))
    assert bind is not None
    assert bind.read_only
    assert (bind.major, bind.minor) == (entry.major, entry.minor)
    assert (publish / "data").read_text() == "payload"
    assert_write_fails_erofs(publish)
    (stage / "still-writable").write_text("y")  # the staging mount itself stays read-write

    mounter.unmount(str(publish))
    mounter.unmount(str(stage))
    assert find_mount(str(publish)) is None
    assert find_mount(str(stage)) is None
    loopdev.detach(ext4.path)
    assert loopdev.find_by_backing_file(ext4.backing_file) == []


def test_bind_through_descriptors_with_flags(
    cleanup: Cleanup, mounter: LinuxMounter, ext4: loopdev.LoopDevice, tmp_path: Path
) -> None:
    """The driver binds /proc/self/fd/N names (paths opened without following symlinks)."""
    stage = make_dir(tmp_path, "stage")
    publish = make_dir(tmp_path, "publish")
    mounter.mount(ext4.path, cleanup.mounted(stage), "ext4", [])
    cleanup.mounted(publish)
    with opened(stage) as src, opened(publish) as dst:
        mounter.bind(src, dst, read_only=True, extra_flags=["nosuid", "nodev", "noexec"])
        assert find_mount(os.readlink(dst)) is not None
    bind = find_mount(str(publish))
    assert bind is not None
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(bind.mount_options)
    assert_write_fails_erofs(publish)
    # A descriptor opened on the mount pins it (EBUSY): unmount by path, as the driver does.
    mounter.unmount(str(publish))
    assert find_mount(str(publish)) is None


def test_bind_a_device_node_onto_a_file(
    cleanup: Cleanup, mounter: LinuxMounter, ext4: loopdev.LoopDevice, tmp_path: Path
) -> None:
    """Block volumes are published as a bind mount of the device node onto a regular file."""
    target = tmp_path / "block"
    target.touch()
    cleanup.mounted(target)
    fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mounter.bind(ext4.path, f"/proc/self/fd/{fd}", read_only=True)
    finally:
        os.close(fd)
    assert find_mount(str(target)) is not None
    assert os.stat(target).st_rdev == os.stat(ext4.path).st_rdev
    assert loopdev.size_bytes(str(target)) == loopdev.size_bytes(ext4.path)
    bind = find_mount(str(target))
    assert bind is not None
    assert bind.read_only
    mounter.unmount(str(target))
    assert os.stat(target).st_rdev == 0


@pytest.mark.parametrize("through_fd", [False, True], ids=["path", "proc-fd"])
def test_legacy_bind_keeps_source_flags(
    cleanup: Cleanup,
    mounter: LinuxMounter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    through_fd: bool,
) -> None:
    """Without the new mount API: MS_BIND, then a remount that adds ro and keeps nosuid."""

    def no_open_tree(path: str, flags: int, dirfd: int = syscalls.AT_FDCWD) -> int:
        raise OSError(errno.ENOSYS, "open_tree")

    real_mount = syscalls.mount
    seen: list[int] = []

    def spy(source: str | None, target: str, fs: str | None, flags: int, data: str | None) -> None:
        seen.append(flags)
        real_mount(source, target, fs, flags, data)

    monkeypatch.setattr(syscalls, "mount", spy)

    monkeypatch.setattr(syscalls, "open_tree", no_open_tree)
    src = make_dir(tmp_path, "src")
    publish = make_dir(tmp_path, "publish")
    mounter.mount("tmpfs", cleanup.mounted(src), "tmpfs", ["nosuid", "size=1m"])
    cleanup.mounted(publish)
    if through_fd:
        with opened(src) as s, opened(publish) as d:
            mounter.bind(s, d, read_only=True)
    else:
        mounter.bind(str(src), str(publish), read_only=True)
    remount = syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY | syscalls.MS_NOSUID
    assert seen[-2] == syscalls.MS_BIND
    assert seen[-1] & remount == remount  # ro added, the source's nosuid kept
    bind = find_mount(str(publish))
    assert bind is not None
    assert {"ro", "nosuid"} <= set(bind.mount_options)
    assert_write_fails_erofs(publish)


def test_bind_errors_carry_errno(mounter: LinuxMounter, tmp_path: Path, cleanup: Cleanup) -> None:
    target = make_dir(tmp_path, "t")
    cleanup.mounted(target)
    with pytest.raises(MountError) as info:
        mounter.bind(str(tmp_path / "missing"), str(target))
    assert info.value.errno == errno.ENOENT
    assert find_mount(str(target)) is None


def test_context_option_reaches_the_kernel_whole(
    cleanup: Cleanup,
    mounter: LinuxMounter,
    ext4: loopdev.LoopDevice,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The data string mount(2) receives is the option as kubelet wrote it, quotes and comma.

    This kernel has SELinux off, so ext4 itself sees context= and refuses it with EINVAL; the same
    options without it mount fine, so the EINVAL is about context= and nothing else.
    """
    if os.path.exists("/sys/fs/selinux/enforce"):
        pytest.skip("this kernel has SELinux: the e2e suite checks labelled mounts there")
    seen: list[tuple[int, str | None]] = []
    real_mount = syscalls.mount

    def spy(source: str | None, target: str, fs: str | None, flags: int, data: str | None) -> None:
        seen.append((flags, data))
        real_mount(source, target, fs, flags, data)

    monkeypatch.setattr(syscalls, "mount", spy)
    target = make_dir(tmp_path, "stage")
    cleanup.mounted(target)
    with pytest.raises(MountError) as info:
        mounter.mount(ext4.path, str(target), "ext4", ["noatime", f'context="{L1}"'])
    assert info.value.errno == errno.EINVAL
    assert seen == [(syscalls.MS_NOATIME, f'context="{L1}"')]
    assert find_mount(str(target)) is None

    mounter.mount(ext4.path, str(target), "ext4", ["noatime"])
    assert seen[-1] == (syscalls.MS_NOATIME, None)
    entry = find_mount(str(target))
    assert entry is not None
    assert "noatime" in entry.mount_options


def test_mount_errors_carry_errno(
    cleanup: Cleanup, mounter: LinuxMounter, ext4: loopdev.LoopDevice, tmp_path: Path
) -> None:
    target = make_dir(tmp_path, "stage")
    cleanup.mounted(target)
    with pytest.raises(MountError) as info:
        mounter.mount(ext4.path, str(target), "xfs", [])
    assert info.value.errno == errno.EINVAL  # not an xfs filesystem
    assert ext4.path in info.value.message
    with pytest.raises(MountError) as info:
        mounter.mount(ext4.path, str(tmp_path / "missing"), "ext4", [])
    assert info.value.errno == errno.ENOENT


def test_unmount_of_a_non_mount_point_is_a_no_op(mounter: LinuxMounter, tmp_path: Path) -> None:
    plain = make_dir(tmp_path, "plain")
    mounter.unmount(str(plain))
    mounter.unmount(str(tmp_path / "missing"))
    assert plain.is_dir()


def test_unmount_never_detaches_lazily(
    cleanup: Cleanup, mounter: LinuxMounter, tmp_path: Path
) -> None:
    target = make_dir(tmp_path, "busy")
    mounter.mount("tmpfs", cleanup.mounted(target), "tmpfs", ["size=1m"])
    with open(target / "open-file", "w") as f:
        with pytest.raises(MountError) as info:
            mounter.unmount(str(target))
        assert info.value.errno == errno.EBUSY
        assert find_mount(str(target)) is not None  # still there: not detached lazily
        f.write("x")
    mounter.unmount(str(target))
    assert find_mount(str(target)) is None


def test_unmount_does_not_follow_symlinks(
    cleanup: Cleanup, mounter: LinuxMounter, tmp_path: Path
) -> None:
    target = make_dir(tmp_path, "real")
    mounter.mount("tmpfs", cleanup.mounted(target), "tmpfs", ["size=1m"])
    link = tmp_path / "link"
    link.symlink_to(target)
    mounter.unmount(str(link))  # the link itself is not a mount point: nothing happens
    assert find_mount(str(target)) is not None


def test_stacked_mounts_are_removed_one_at_a_time(
    cleanup: Cleanup, mounter: LinuxMounter, tmp_path: Path
) -> None:
    target = make_dir(tmp_path, "stack")
    cleanup.mounted(target)
    mounter.mount("tmpfs", str(target), "tmpfs", ["size=1m"])
    mounter.mount("tmpfs", str(target), "tmpfs", ["size=2m"])
    assert len([e for e in read_mountinfo() if e.mount_point == str(target)]) == 2
    top = find_mount(str(target))
    assert top is not None
    assert "size=2048k" in top.super_options
    mounter.unmount(str(target))
    rest = find_mount(str(target))
    assert rest is not None
    assert "size=1024k" in rest.super_options
    mounter.unmount(str(target))
    assert find_mount(str(target)) is None


def test_mount_helper_runs_mount_with_argv(
    cleanup: Cleanup, mounter: LinuxMounter, tmp_path: Path
) -> None:
    target = make_dir(tmp_path, "helper dir")  # a space: argv, not a shell
    mounter.mount_helper("csi-test", cleanup.mounted(target), "tmpfs", ["size=1m", "mode=0750"])
    entry = find_mount(str(target))
    assert entry is not None
    assert (entry.fs_type, entry.source) == ("tmpfs", "csi-test")
    assert "size=1024k" in entry.super_options
    assert "mode=750" in entry.super_options
    mounter.unmount(str(target))
    assert find_mount(str(target)) is None


def test_failing_helper_reports_stderr_without_secrets(
    cleanup: Cleanup, mounter: LinuxMounter, tmp_path: Path
) -> None:
    target = make_dir(tmp_path, "t")
    cleanup.mounted(target)
    secret = "hunter2-" + "value"
    source = str(tmp_path / f"no-such-device-{secret}")
    with pytest.raises(MountError) as info:
        mounter.mount_helper(source, str(target), "ext4", ["ro"], env={"PASSWD": secret})
    message = info.value.message
    assert info.value.errno is None
    assert "failed (exit 32)" in message
    assert "no-such-device-***" in message  # util-linux's stderr names the source
    assert secret not in message
    assert secret not in str(info.value)
    assert find_mount(str(target)) is None


def test_helper_env_reaches_the_helper(
    cleanup: Cleanup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env is added to the helper's environment (how mount.cifs gets USER and PASSWD)."""
    bin_dir = make_dir(tmp_path, "bin")
    out = tmp_path / "env.txt"
    fake_mount = bin_dir / "mount"
    fake_mount.write_text(f'#!/bin/sh\nprintf "%s|%s|%s" "$PASSWD" "$*" "$PATH" > "{out}"\n')
    fake_mount.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    mounts.LinuxMounter().mount_helper(
        "//srv/share", "/mnt/x", "cifs", ["vers=3.0"], env={"PASSWD": "pw"}
    )
    from_env, args, path = out.read_text().split("|")
    assert from_env == "pw"
    assert args == "-t cifs -o vers=3.0 //srv/share /mnt/x"
    assert path.startswith(str(bin_dir))
