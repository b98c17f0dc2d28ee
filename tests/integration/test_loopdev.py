"""Loop devices through csi_hostpath_selinux.loopdev, on the real kernel (root only).

Every test registers what it attaches and mounts with a Cleanup, whose finalizer unmounts and
detaches even when the test fails; a last sweep detaches anything still bound to the test's images.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi_hostpath_selinux import loopdev, syscalls
from csi_hostpath_selinux.mountinfo import find_mount, read_mountinfo
from csi_hostpath_selinux.mounts import LinuxMounter

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
IMAGE_BYTES = 64 * MIB


class Cleanup:
    """Mounts and loop devices a test made, undone in reverse order by the fixture."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.images: list[str] = []
        self.devices: list[loopdev.LoopDevice] = []

    def mounted(self, target: str | Path) -> str:
        self.targets.append(str(target))
        return str(target)

    def attached(self, device: loopdev.LoopDevice) -> loopdev.LoopDevice:
        self.devices.append(device)
        return device

    def image(self, path: Path, size: int = IMAGE_BYTES, mkfs: bool = True) -> str:
        with open(path, "wb") as f:
            f.truncate(size)
        if mkfs:
            subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True)
        self.images.append(str(path))
        return str(path)

    def run(self) -> None:
        for target in reversed(self.targets):
            real = os.path.realpath(target)
            for _ in range(8):
                if find_mount(real, read_mountinfo()) is None:
                    break
                try:
                    syscalls.umount2(real, syscalls.UMOUNT_NOFOLLOW)
                except OSError:
                    # Last resort in test cleanup only (the driver never unmounts lazily).
                    syscalls.umount2(real, syscalls.MNT_DETACH | syscalls.UMOUNT_NOFOLLOW)
        for dev in self.devices:
            loopdev.release(dev)
        for image in self.images:
            for dev in loopdev.find_by_backing_file(image):
                loopdev.detach(dev.path)


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    if os.geteuid() != 0:
        pytest.fail("loop device and mount tests need root")
    c = Cleanup()
    try:
        yield c
    finally:
        c.run()


def bound(number: int) -> bool:
    return os.path.exists(f"/sys/block/loop{number}/loop/backing_file")


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_attach_find_size_detach(cleanup: Cleanup, tmp_path: Path) -> None:
    image = cleanup.image(tmp_path / "a.img", mkfs=False)
    dev = cleanup.attached(loopdev.attach(image))
    assert dev.path == f"/dev/loop{dev.number}"
    assert stat.S_ISBLK(os.stat(dev.path).st_mode)
    assert dev.backing_file == os.path.realpath(image)
    assert bound(dev.number)
    assert loopdev.size_bytes(dev.path) == IMAGE_BYTES
    assert Path(f"/sys/block/loop{dev.number}/ro").read_text().strip() == "0"
    assert [d.path for d in loopdev.find_by_backing_file(image)] == [dev.path]
    assert dev.path in [d.path for d in loopdev.list_attached()]
    # the device is usable: write through it, read back from the image
    fd = os.open(dev.path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"hello loop", MIB)
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(image, "rb") as f:
        f.seek(MIB)
        assert f.read(10) == b"hello loop"
    loopdev.detach(dev.path)
    assert not bound(dev.number)
    assert loopdev.find_by_backing_file(image) == []
    loopdev.detach(dev.path)  # already free: still fine


def test_find_by_backing_file_matches_whole_paths_and_symlinked_names(
    cleanup: Cleanup, tmp_path: Path
) -> None:
    img1 = cleanup.image(tmp_path / "vol-1.img", mkfs=False)
    img10 = cleanup.image(tmp_path / "vol-1.img0", mkfs=False)
    dev1 = cleanup.attached(loopdev.attach(img1))
    dev10 = cleanup.attached(loopdev.attach(img10))
    assert [d.path for d in loopdev.find_by_backing_file(img1)] == [dev1.path]
    assert [d.path for d in loopdev.find_by_backing_file(img10)] == [dev10.path]
    link_dir = tmp_path / "link"
    link_dir.symlink_to(tmp_path)
    assert [d.path for d in loopdev.find_by_backing_file(str(link_dir / "vol-1.img"))] == [
        dev1.path
    ]


def test_deleted_backing_file_is_still_found(cleanup: Cleanup, tmp_path: Path) -> None:
    image = cleanup.image(tmp_path / "gone.img", mkfs=False)
    dev = cleanup.attached(loopdev.attach(image))
    os.unlink(image)
    found = loopdev.find_by_backing_file(image)
    assert [(d.path, d.deleted) for d in found] == [(dev.path, True)]
    loopdev.detach(dev.path)
    assert not bound(dev.number)


def test_read_only_attach(cleanup: Cleanup, tmp_path: Path) -> None:
    image = cleanup.image(tmp_path / "ro.img", mkfs=False)
    dev = cleanup.attached(loopdev.attach(image, read_only=True))
    assert Path(f"/sys/block/loop{dev.number}/ro").read_text().strip() == "1"
    fd = os.open(dev.path, os.O_WRONLY)
    try:
        # the block layer refuses writes to a read-only disk with EPERM (EROFS on open in
        # older kernels)
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"x" * 4096, 0)
        assert info.value.errno in (errno.EPERM, errno.EROFS)
    finally:
        os.close(fd)


def test_backing_file_symlink_is_refused(cleanup: Cleanup, tmp_path: Path) -> None:
    image = cleanup.image(tmp_path / "real.img", mkfs=False)
    link = tmp_path / "link.img"
    link.symlink_to(image)
    with pytest.raises(OSError) as info:
        loopdev.attach(str(link))
    assert info.value.errno == errno.ELOOP
    assert loopdev.find_by_backing_file(image) == []


def test_refresh_capacity_after_growing_the_image(cleanup: Cleanup, tmp_path: Path) -> None:
    image = cleanup.image(tmp_path / "grow.img", mkfs=False)
    dev = cleanup.attached(loopdev.attach(image))
    assert loopdev.size_bytes(dev.path) == IMAGE_BYTES
    os.truncate(image, IMAGE_BYTES + 32 * MIB)
    assert loopdev.size_bytes(dev.path) == IMAGE_BYTES  # not seen until refreshed
    loopdev.refresh_capacity(dev.path)
    assert loopdev.size_bytes(dev.path) == IMAGE_BYTES + 32 * MIB


def test_autoclear_device_goes_away_with_its_mount(cleanup: Cleanup, tmp_path: Path) -> None:
    image = cleanup.image(tmp_path / "auto.img")
    target = tmp_path / "mnt"
    target.mkdir()
    dev = cleanup.attached(loopdev.attach(image, autoclear=True))
    assert dev.holder is not None
    assert dev.holder.fd is not None
    mounter = LinuxMounter()
    mounter.mount(dev.path, cleanup.mounted(target), "ext4", [])
    loopdev.release(dev)
    # the mount keeps the device alive after the holder is gone
    time.sleep(0.1)
    assert bound(dev.number)
    assert Path(f"/sys/block/loop{dev.number}/loop/autoclear").read_text().strip() == "1"
    mounter.unmount(str(target))
    assert wait_until(lambda: not bound(dev.number)), "autoclear device was not released"
    assert loopdev.find_by_backing_file(image) == []


def test_legacy_ioctls_when_loop_configure_is_missing(
    cleanup: Cleanup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_legacy = loopdev._configure_legacy

    def legacy(dev_fd: int, backing_fd: int, backing_file: str, flags: int) -> None:
        calls.append("legacy")
        real_legacy(dev_fd, backing_fd, backing_file, flags)

    # An ioctl number the loop driver does not know answers like a pre-5.8 kernel.
    monkeypatch.setattr(loopdev, "LOOP_CONFIGURE", 0x4C7F)
    monkeypatch.setattr(loopdev, "_configure_legacy", legacy)
    image = cleanup.image(tmp_path / "legacy.img", mkfs=False)
    dev = cleanup.attached(loopdev.attach(image, autoclear=True))
    assert calls == ["legacy"]
    assert loopdev.size_bytes(dev.path) == IMAGE_BYTES
    assert Path(f"/sys/block/loop{dev.number}/loop/autoclear").read_text().strip() == "1"
    assert [d.path for d in loopdev.find_by_backing_file(image)] == [dev.path]
    loopdev.release(dev)
    assert wait_until(lambda: not bound(dev.number))


def test_concurrent_attachers_get_distinct_devices(cleanup: Cleanup, tmp_path: Path) -> None:
    images = [cleanup.image(tmp_path / f"c{i}.img", size=MIB, mkfs=False) for i in range(6)]
    results: list[loopdev.LoopDevice] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(images))

    def work(image: str) -> None:
        start.wait()
        try:
            dev = loopdev.attach(image)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(cleanup.attached(dev))

    threads = [threading.Thread(target=work, args=(img,)) for img in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({d.path for d in results}) == len(images)
    for dev in results:
        assert [d.path for d in loopdev.find_by_backing_file(dev.backing_file)] == [dev.path]


def test_missing_device_node_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.fail("mknod needs root")
    monkeypatch.setattr(loopdev, "_device_path", lambda n: str(tmp_path / f"loop{n}"))
    monkeypatch.setattr(loopdev, "SYS_BLOCK", str(tmp_path / "no-sysfs"))
    path = loopdev.ensure_node(3)
    st = os.stat(path)
    assert stat.S_ISBLK(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (7, 3)
    assert loopdev.ensure_node(3) == path  # existing node is kept


def test_a_non_block_node_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loopdev, "_device_path", lambda n: str(tmp_path / f"loop{n}"))
    (tmp_path / "loop4").write_text("not a device")
    with pytest.raises(OSError) as info:
        loopdev.ensure_node(4)
    assert info.value.errno == errno.ENOTBLK


def attach_in_a_dead_mount_namespace(real_dir: Path, name: str) -> str:
    """Attach real_dir/name through a bind mount of real_dir that exists only in a mount
    namespace which is gone when this returns, as a killed driver container leaves it: sysfs then
    shows the backing file relative to that mount (`/volumes/<name>`)."""
    alias = real_dir.parent / "alias"
    alias.mkdir()
    script = (
        "import os\n"
        "from csi_hostpath_selinux import loopdev, syscalls\n"
        f"syscalls.mount({str(real_dir)!r}, {str(alias)!r}, None, syscalls.MS_BIND, None)\n"
        f"print(loopdev.attach(os.path.join({str(alias)!r}, {name!r})).path)\n"
    )
    out = subprocess.run(
        # unshare makes every mount private first: the bind mount never reaches the host.
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    ).stdout.strip()
    alias.rmdir()
    return out


def test_a_device_attached_from_a_gone_mount_namespace_is_found(
    cleanup: Cleanup, tmp_path: Path
) -> None:
    """Found in the SELinux VM node: after the driver's container was killed, its successor
    could not find (so never detached) the loop devices the old container had attached."""
    volumes = tmp_path / "state" / "volumes"
    volumes.mkdir(parents=True)
    image = cleanup.image(volumes / "vol-1.img", mkfs=False)
    twin_dir = tmp_path / "other" / "volumes"
    twin_dir.mkdir(parents=True)
    twin = cleanup.image(twin_dir / "vol-1.img", mkfs=False)  # same tail, another file
    device = attach_in_a_dead_mount_namespace(volumes.parent, "volumes/vol-1.img")
    try:
        number = int(device.removeprefix("/dev/loop"))
        shown = Path(f"/sys/block/loop{number}/loop/backing_file").read_text().strip()
        assert shown == "/volumes/vol-1.img", "the kernel's view this test is about"
        assert [d.path for d in loopdev.find_by_backing_file(image)] == [device]
        assert loopdev.find_by_backing_file(twin) == []
        [dev] = [d for d in loopdev.list_attached() if d.path == device]
        assert loopdev.is_backed_in(dev, str(volumes))
        assert not loopdev.is_backed_in(dev, str(twin_dir))
        os.unlink(image)
        assert [(d.path, d.deleted) for d in loopdev.find_by_backing_file(image)] == [
            (device, True)
        ]
    finally:
        if bound(int(device.removeprefix("/dev/loop"))):
            loopdev.detach(device)
