"""mounttable.MountView over the fake table: paths resolved as paths.py walks them (a symlinked
kubelet directory is followed once, a planted link never), and the one check "this volume is
mounted at this path" (same device and root as its staging mount; a block bind of its device)."""

from __future__ import annotations

from pathlib import Path

import pytest

from csi_hostpath_selinux import paths
from csi_hostpath_selinux.errors import InvalidArgument
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.models import AccessType, Staging
from csi_hostpath_selinux.mounttable import MountView
from tests.support import records


@pytest.fixture
def kubelet(tmp_path: Path) -> Path:
    """kubelet's directory as the operator configured it: a symlink to the real one."""
    real = tmp_path / "var-lib-kubelet"
    (real / "plugins").mkdir(parents=True)
    (real / "pods").mkdir()
    link = tmp_path / "kubelet"
    link.symlink_to(real)
    return link


def view_of(fake: FakeMounter, kubelet: Path) -> MountView:
    return MountView.read(fake, lambda path: paths.trusted_prefix(path, str(kubelet), "/none"))


def staged(kubelet: Path, fake: FakeMounter, name: str) -> Staging:
    """A filesystem volume mounted at its staging path, named through the symlinked directory."""
    staging = kubelet / "plugins" / name
    staging.mkdir()
    fake.mount(f"/dev/{name}", str(staging.resolve()), "ext4", [])
    return records.staging(f"vol-{name}", str(staging))


def test_a_mount_below_a_symlinked_kubelet_dir_is_found(kubelet: Path) -> None:
    fake = FakeMounter()
    st = staged(kubelet, fake, "a")
    view = view_of(fake, kubelet)
    entry = view.at(st.staging_path)
    assert entry is not None and entry.source == "/dev/a"
    assert view.staging_mount(st) == entry
    assert view.volume_at(st, st.staging_path) == entry


def test_a_planted_symlink_is_not_followed_to_a_mount(kubelet: Path, tmp_path: Path) -> None:
    fake = FakeMounter()
    st = staged(kubelet, fake, "a")
    planted = kubelet / "pods" / "planted"
    planted.symlink_to(Path(st.staging_path).resolve())
    view = view_of(fake, kubelet)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        view.at(str(planted))
    assert view.volume_at(st, str(planted)) is None


def test_another_volumes_mount_is_not_this_volume(kubelet: Path) -> None:
    fake = FakeMounter()
    a = staged(kubelet, fake, "a")
    b = staged(kubelet, fake, "b")
    target = kubelet / "pods" / "t"
    target.mkdir()
    fake.bind(str(Path(b.staging_path).resolve()), str(target.resolve()))
    view = view_of(fake, kubelet)
    assert view.at(str(target)) is not None, "something is mounted there"
    assert view.volume_at(b, str(target)) is not None, "it is b"
    assert view.volume_at(a, str(target)) is None, "it is not a"


def test_a_block_volume_is_the_bind_of_its_device(kubelet: Path) -> None:
    fake = FakeMounter()
    staging = kubelet / "plugins" / "blk"
    staging.mkdir()
    st = Staging(
        volume_id="vol-blk",
        staging_path=str(staging),
        label=None,
        flags=(),
        device="/dev/loop7",
        access_type=AccessType.BLOCK,
    )
    other = staged(kubelet, fake, "fs")
    target = kubelet / "pods" / "dev"
    target.touch()
    view = view_of(fake, kubelet)
    assert view.volume_at(st, str(target)) is None, "nothing mounted"
    fake.bind("/dev/loop7", str(target.resolve()))
    assert view_of(fake, kubelet).volume_at(st, str(target)) is not None
    # Another volume's mount on the block volume's staging directory is not the block volume.
    fake.bind(str(Path(other.staging_path).resolve()), str(staging.resolve()))
    view = view_of(fake, kubelet)
    assert view.at(str(staging)) is not None
    assert view.volume_at(st, str(staging)) is None
    assert view.staging_mount(st) is None, "a block staging has no mount of its own"
