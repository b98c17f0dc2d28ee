"""Hostile paths and ids over gRPC: refused with a defined code, and nothing outside is touched.

The driver runs with --kubelet-dir; a decoy directory beside kubelet's (never below it) stands in
for /etc: symlinks point there, and a mount or removal there is the bug these tests look for.
(Pointing the links at the real /etc would turn a failing test into a broken host.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux import paths
from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux.backends import BACKENDS, BackendEnv, StageRequest
from csi_hostpath_selinux.models import AccessType, Volume
from csi_hostpath_selinux.mounts import LinuxMounter
from csi_hostpath_selinux.selinux import parse_mount_flags
from tests.reliability.conftest import Node
from tests.reliability.crash import mount_count, mount_points_under
from tests.support.background import Background
from tests.support.codes import code_of
from tests.support.driver import cleanup_under
from tests.support.kubelet import stage
from tests.support.outside import outside_mounts as shared_outside_mounts
from tests.support.outside import tree
from tests.support.requests import block_cap, create, mount_cap

pytestmark = pytest.mark.integration

libc = ctypes.CDLL(None, use_errno=True)
FITHAW = 0xC0045878
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def outside_mounts(node: Node) -> set[str]:
    """Mounts the driver may have made outside kubelet's directory: anything below the test's
    root but not below kubelet's directory, and any mount of the driver's loop devices elsewhere.
    (Other mounts on the host belong to other tests running at the same time.)"""
    return shared_outside_mounts(node.kubelet.parent, [node.kubelet], node.driver.state_dir)


@pytest.fixture
def decoy(node: Node) -> Iterator[Path]:
    """A directory outside kubelet's, with content that must survive every test."""
    path = node.kubelet.parent / "decoy"
    (path / "mount").mkdir(parents=True)
    (path / "sentinel").write_text("keep me")
    (path / "mount" / "sentinel").write_text("keep me too")
    (path / "mount-file").write_text("a block target would be bind-mounted here")
    before = tree(path)
    mounts = outside_mounts(node)
    yield path
    assert outside_mounts(node) == mounts, "a mount appeared outside kubelet's directory"
    assert tree(path) == before, "the decoy directory outside kubelet's was changed"


@pytest.fixture
def staged(node: Node) -> Iterator[tuple[str, str, pb.VolumeCapability]]:
    """An ext4 volume, staged: (volume id, staging path, capability)."""
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-paths", cap)).volume
    staging = node.staging("paths")
    stage(node.csi, vol.volume_id, staging, cap)
    yield vol.volume_id, staging, cap
    node.csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=staging)
    )
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def bad_paths(node: Node, decoy: Path) -> list[str]:
    k = str(node.kubelet)
    return [
        "relative/mount",
        "mount",
        f"{k}/pods/../../decoy/mount",
        f"{k}/pods/p/../../../decoy/mount",
        f"{k}/pods/./p/mount",
        f"{k}/pods/p/mount/",
        f"{k}//pods/p/mount",
        f"{k}/pods/p\0/mount",
        f"{k}/pods/p/mount\0../../../decoy",
        str(decoy / "mount"),
        k,
        "/",
        "/etc",
        f"{k}-evil/pods/p/mount",
        f"{k}/" + "x" * 5000,
    ]


def test_bad_target_paths_are_invalid_argument(
    node: Node, decoy: Path, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    vol_id, staging, cap = staged
    answers = {}
    for path in bad_paths(node, decoy):
        answers[repr(path)[:80], "publish"] = code_of(
            partial(
                node.csi.node.NodePublishVolume,
                pb.NodePublishVolumeRequest(
                    volume_id=vol_id,
                    staging_target_path=staging,
                    target_path=path,
                    volume_capability=cap,
                ),
            )
        )
        answers[repr(path)[:80], "unpublish"] = code_of(
            partial(
                node.csi.node.NodeUnpublishVolume,
                pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=path),
            )
        )
        answers[repr(path)[:80], "publish with it as staging"] = code_of(
            partial(
                node.csi.node.NodePublishVolume,
                pb.NodePublishVolumeRequest(
                    volume_id=vol_id,
                    staging_target_path=path,
                    target_path=node.target("paths"),
                    volume_capability=cap,
                ),
            )
        )
    wrong = {k: v.name for k, v in answers.items() if v != INVALID}
    assert wrong == {}, f"bad target paths answered other than INVALID_ARGUMENT: {wrong}"


def test_bad_staging_paths_are_invalid_argument(node: Node, decoy: Path) -> None:
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-bad-staging", cap)).volume
    answers = {}
    for path in bad_paths(node, decoy):
        answers[repr(path)[:80], "stage"] = code_of(
            partial(
                node.csi.node.NodeStageVolume,
                pb.NodeStageVolumeRequest(
                    volume_id=vol.volume_id, staging_target_path=path, volume_capability=cap
                ),
            )
        )
        answers[repr(path)[:80], "unstage"] = code_of(
            partial(
                node.csi.node.NodeUnstageVolume,
                pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=path),
            )
        )
    wrong = {k: v.name for k, v in answers.items() if v != INVALID}
    assert wrong == {}, f"bad staging paths answered other than INVALID_ARGUMENT: {wrong}"
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_bad_volume_paths_of_stats_and_expand_touch_nothing(
    node: Node, decoy: Path, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    vol_id, _, _ = staged
    for path in bad_paths(node, decoy):
        stats = code_of(
            partial(
                node.csi.node.NodeGetVolumeStats,
                pb.NodeGetVolumeStatsRequest(volume_id=vol_id, volume_path=path),
            )
        )
        expand = code_of(
            partial(
                node.csi.node.NodeExpandVolume,
                pb.NodeExpandVolumeRequest(volume_id=vol_id, volume_path=path),
            )
        )
        assert stats in (INVALID, NOT_FOUND), (path, stats)
        assert expand in (INVALID, NOT_FOUND), (path, expand)


def test_symlink_planted_as_the_target_is_refused(
    node: Node, decoy: Path, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    vol_id, staging, cap = staged
    target = Path(node.target("planted"))
    target.symlink_to(decoy / "mount")
    code = code_of(
        lambda: node.csi.node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=vol_id,
                staging_target_path=staging,
                target_path=str(target),
                volume_capability=cap,
            )
        )
    )
    assert code == INVALID
    # An unpublish of the planted link must not unmount or remove what it points to (the decoy
    # fixture checks); refusing it or removing the link itself are both fine.
    code = code_of(
        lambda: node.csi.node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=str(target))
        )
    )
    assert code in (grpc.StatusCode.OK, INVALID)


def test_symlink_in_a_parent_of_the_target_is_refused(
    node: Node, decoy: Path, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    vol_id, staging, cap = staged
    pod = node.kubelet / "pods" / "evil-pod"
    pod.parent.mkdir(parents=True, exist_ok=True)
    pod.symlink_to(decoy)
    code = code_of(
        lambda: node.csi.node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=vol_id,
                staging_target_path=staging,
                target_path=str(pod / "mount"),
                volume_capability=cap,
            )
        )
    )
    assert code == INVALID


def test_symlink_planted_as_the_staging_path_is_refused(node: Node, decoy: Path) -> None:
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-staging-link", cap)).volume
    staging = Path(node.staging("staging-link"))
    staging.symlink_to(decoy / "mount")
    request = pb.NodeStageVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=str(staging), volume_capability=cap
    )
    assert code_of(lambda: node.csi.node.NodeStageVolume(request)) == INVALID
    parent = node.kubelet / "plugins" / "evil"
    parent.parent.mkdir(parents=True, exist_ok=True)
    parent.symlink_to(decoy)
    request.staging_target_path = str(parent / "mount")
    assert code_of(lambda: node.csi.node.NodeStageVolume(request)) == INVALID
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_unpublish_through_a_symlink_never_unmounts_outside(
    node: Node, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    """A mount outside kubelet's directory, reachable through a link planted as a target."""
    vol_id, _, _ = staged
    outside = node.kubelet.parent / "outside-mount"
    outside.mkdir()
    assert libc.mount(b"tmpfs", str(outside).encode(), b"tmpfs", 0, b"size=1m") == 0
    try:
        target = Path(node.target("outside-link"))
        target.symlink_to(outside)
        code = code_of(
            lambda: node.csi.node.NodeUnpublishVolume(
                pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=str(target))
            )
        )
        assert code in (grpc.StatusCode.OK, INVALID)
        assert str(outside.resolve()) in mount_points_under(str(outside.resolve())), (
            "NodeUnpublishVolume unmounted a mount outside kubelet's directory through a symlink"
        )
        assert outside.is_dir()
    finally:
        libc.umount2(str(outside).encode(), 0)


class Swapper(Background):
    """Swap a directory and a symlink to the decoy at one path, in a loop, until stopped."""

    def __init__(self, path: Path, decoy: Path) -> None:
        self.path = path
        self.decoy = decoy
        self.stash = path.with_name(path.name + ".real")
        self.is_file = path.is_file()
        self.swaps = 0
        self.moved_mounts = 0
        #: The driver mounted onto the directory while it was renamed away: the mount now pins
        #: the renamed directory, so no further swap is possible and the race has its outcome.
        self.pinned = False
        super().__init__()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                if not os.path.lexists(self.path):
                    # The driver removed it (unstage, unpublish): put it back as it was.
                    if self.is_file:
                        self.path.touch()
                    else:
                        os.mkdir(self.path)
                os.rename(self.path, self.stash)  # fails while the path is a mount point
                os.symlink(self.decoy, self.path)
                self.swaps += 1
                time.sleep(0.0005)
                os.unlink(self.path)
                try:
                    os.rename(self.stash, self.path)
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        self.pinned = True
                        return
                    raise

    def finish(self) -> None:
        if self.path.is_symlink():
            self.path.unlink()
        if self.stash.exists() and not self.path.exists():
            # The driver mounted onto the directory it had opened while this thread renamed it
            # (the mount stays below kubelet's directory, at the name the directory now has).
            real = str(self.stash.resolve())
            while real in mount_points_under(real):
                self.moved_mounts += 1
                libc.umount2(real.encode(), 0)
            os.rename(self.stash, self.path)


class OutsideWatch(Background):
    """Fails when a mount appears outside kubelet's directory at any moment of the race."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.before = outside_mounts(node)
        self.seen: set[str] = set()
        super().__init__()

    def run(self) -> None:
        while not self.stop.is_set():
            self.seen |= outside_mounts(self.node) - self.before

    def finish(self) -> None:
        self.seen |= outside_mounts(self.node) - self.before


RACE_SECONDS = 4.0
#: On a loaded machine the swapper thread may get few turns: keep racing until it has swapped
#: enough times, up to this long.
RACE_MAX_SECONDS = 40.0


def racing(deadline: float, give_up: float, swapper: Swapper) -> bool:
    if swapper.pinned:
        return False
    now = time.monotonic()
    return now < deadline or (swapper.swaps < 5 and now < give_up)


RACE_CODES = {
    grpc.StatusCode.OK,
    INVALID,
    NOT_FOUND,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,  # a mount busy for a moment: retried, as kubelet does
}


@pytest.mark.parametrize("swap", ["target", "parent"])
@pytest.mark.parametrize("flavour", ["ext4", "block"])
def test_symlink_race_on_the_target_never_mounts_outside(
    node: Node, decoy: Path, swap: str, flavour: str
) -> None:
    cap = block_cap() if flavour == "block" else mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create(f"pvc-race-{flavour}", cap)).volume
    staging = node.staging(f"race-{flavour}")
    if flavour == "block":
        os.makedirs(staging, exist_ok=True)
    stage(node.csi, vol.volume_id, staging, cap)
    target = Path(node.target(f"race-{flavour}", pod="race-pod"))
    if flavour == "block":
        target.touch()
    else:
        target.mkdir()
    swapped = target if swap == "target" else target.parent
    if flavour == "block" and swap == "target":
        decoy_target = decoy / "mount-file"
    else:
        decoy_target = decoy / "mount" if swap == "target" else decoy
    publish = pb.NodePublishVolumeRequest(
        volume_id=vol.volume_id,
        staging_target_path=staging,
        target_path=str(target),
        volume_capability=cap,
    )
    unpublish = pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=str(target))
    codes: set[grpc.StatusCode] = set()
    calls = 0
    with OutsideWatch(node) as watch, Swapper(swapped, decoy_target) as swapper:
        deadline = time.monotonic() + RACE_SECONDS
        give_up = deadline + RACE_MAX_SECONDS
        while racing(deadline, give_up, swapper):
            codes.add(code_of(lambda: node.csi.node.NodePublishVolume(publish)))
            codes.add(code_of(lambda: node.csi.node.NodeUnpublishVolume(unpublish)))
            calls += 2
    assert watch.seen == set(), f"mounted outside kubelet's directory: {watch.seen}"
    assert (swapper.swaps >= 5 and calls > 10) or swapper.pinned, (
        f"the race did not run ({swapper.swaps} swaps)"
    )
    depth = mount_count(str(target))
    assert depth <= 1, (
        f"{depth} mounts are stacked at the target: a publish that could not see the target "
        "for a moment forgot its mount and mounted again"
    )
    assert codes <= RACE_CODES, f"unexpected answers in the race: {codes}"
    node.csi.node.NodeUnpublishVolume(unpublish)
    node.csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=staging)
    )
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_symlink_race_on_the_staging_path_never_mounts_outside(node: Node, decoy: Path) -> None:
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-race-staging", cap)).volume
    staging = Path(node.staging("race-staging"))
    staging.mkdir()
    stage = pb.NodeStageVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=str(staging), volume_capability=cap
    )
    unstage = pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=str(staging))
    codes: set[grpc.StatusCode] = set()
    with OutsideWatch(node) as watch, Swapper(staging, decoy / "mount") as swapper:
        deadline = time.monotonic() + RACE_SECONDS
        give_up = deadline + RACE_MAX_SECONDS
        while racing(deadline, give_up, swapper):
            codes.add(code_of(lambda: node.csi.node.NodeStageVolume(stage)))
            codes.add(code_of(lambda: node.csi.node.NodeUnstageVolume(unstage)))
    assert watch.seen == set(), f"mounted outside kubelet's directory: {watch.seen}"
    assert swapper.swaps >= 5 or swapper.pinned, f"the race did not run ({swapper.swaps} swaps)"
    assert codes <= RACE_CODES, f"unexpected answers in the race: {codes}"
    node.csi.node.NodeUnstageVolume(unstage)
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


TRAVERSAL_IDS = [
    "../../etc",
    "vol-../x",
    "vol-../../../sentinel",
    "snap-../../../sentinel",
    "../../../sentinel",
    "vol-" + "0" * 32 + "/../../../sentinel",
    "/etc/passwd",
    "vol-\0",
    "vol-" + "A" * 32,
    "." * 300,
]


def test_traversal_ids_are_refused_and_touch_nothing(node: Node) -> None:
    """Ids reach file names only in the driver's fixed format; state/volumes/<id> with these ids
    would reach the sentinel beside the driver's root."""
    sentinel_root = node.driver.root.parent
    files = ("sentinel", "sentinel.img", "sentinel.tar")
    for name in files:
        (sentinel_root / name).write_text("keep")
    (sentinel_root / "sentinel-dir").mkdir()

    def sentinels() -> dict[str, tuple[int, int]]:
        return tree(sentinel_root / "sentinel-dir") | {
            str(sentinel_root / f): (os.lstat(sentinel_root / f).st_ino, 4) for f in files
        }

    before = sentinels()
    mounts = outside_mounts(node)
    cap = mount_cap("ext4")
    c, n = node.csi.controller, node.csi.node
    staging, target = node.staging("ids"), node.target("ids")
    wrong = {}
    for bad in TRAVERSAL_IDS:
        src = pb.VolumeContentSource()
        src.snapshot.snapshot_id = bad
        vsrc = pb.VolumeContentSource()
        vsrc.volume.volume_id = bad
        calls: dict[str, Callable[[], object]] = {
            "DeleteVolume": partial(c.DeleteVolume, pb.DeleteVolumeRequest(volume_id=bad)),
            "DeleteSnapshot": partial(c.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=bad)),
            "ControllerGetVolume": partial(
                c.ControllerGetVolume, pb.ControllerGetVolumeRequest(volume_id=bad)
            ),
            "ControllerExpandVolume": partial(
                c.ControllerExpandVolume,
                pb.ControllerExpandVolumeRequest(
                    volume_id=bad, capacity_range=pb.CapacityRange(required_bytes=1 << 30)
                ),
            ),
            "ValidateVolumeCapabilities": partial(
                c.ValidateVolumeCapabilities,
                pb.ValidateVolumeCapabilitiesRequest(volume_id=bad, volume_capabilities=[cap]),
            ),
            "CreateSnapshot": partial(
                c.CreateSnapshot,
                pb.CreateSnapshotRequest(name=f"s-{abs(hash(bad))}", source_volume_id=bad),
            ),
            "GetSnapshot": partial(c.GetSnapshot, pb.GetSnapshotRequest(snapshot_id=bad)),
            "CreateVolume from snapshot": partial(
                c.CreateVolume,
                pb.CreateVolumeRequest(
                    name=f"v-{abs(hash(bad))}",
                    volume_capabilities=[cap],
                    volume_content_source=src,
                ),
            ),
            "CreateVolume from volume": partial(
                c.CreateVolume,
                pb.CreateVolumeRequest(
                    name=f"c-{abs(hash(bad))}",
                    volume_capabilities=[cap],
                    volume_content_source=vsrc,
                ),
            ),
            "NodeStageVolume": partial(
                n.NodeStageVolume,
                pb.NodeStageVolumeRequest(
                    volume_id=bad, staging_target_path=staging, volume_capability=cap
                ),
            ),
            "NodePublishVolume": partial(
                n.NodePublishVolume,
                pb.NodePublishVolumeRequest(
                    volume_id=bad,
                    staging_target_path=staging,
                    target_path=target,
                    volume_capability=cap,
                ),
            ),
            "NodeUnpublishVolume": partial(
                n.NodeUnpublishVolume,
                pb.NodeUnpublishVolumeRequest(volume_id=bad, target_path=target),
            ),
            "NodeUnstageVolume": partial(
                n.NodeUnstageVolume,
                pb.NodeUnstageVolumeRequest(volume_id=bad, staging_target_path=staging),
            ),
            "NodeGetVolumeStats": partial(
                n.NodeGetVolumeStats,
                pb.NodeGetVolumeStatsRequest(volume_id=bad, volume_path=target),
            ),
            "NodeExpandVolume": partial(
                n.NodeExpandVolume, pb.NodeExpandVolumeRequest(volume_id=bad, volume_path=target)
            ),
        }
        for name, call in calls.items():
            code = code_of(call)
            # Deleting what does not exist is OK by the spec; everything else must refuse.
            allowed = {NOT_FOUND, INVALID}
            if name in ("DeleteVolume", "DeleteSnapshot"):
                allowed.add(grpc.StatusCode.OK)
            if code not in allowed:
                wrong[name, bad[:40]] = code.name
    assert wrong == {}, f"traversal ids answered with other codes: {wrong}"
    assert sentinels() == before
    assert outside_mounts(node) == mounts
    volumes = node.driver.state_dir / "volumes"
    assert not volumes.is_dir() or os.listdir(volumes) == [], "a traversal id created storage"


def test_unpublish_of_a_non_empty_directory_is_a_defined_error_and_keeps_it(
    node: Node, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    """Found by the fuzz run: an unpublish whose target is a directory with content (not a mount,
    not a publication) failed with an unhandled OSError (ENOTEMPTY), answered as INTERNAL."""
    vol_id, _, _ = staged
    directory = node.kubelet / "pods" / "other-pod" / "volumes"
    directory.mkdir(parents=True)
    (directory / "data").write_text("a pod's data")
    code = code_of(
        lambda: node.csi.node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=str(directory))
        )
    )
    assert (directory / "data").read_text() == "a pod's data"
    assert code != grpc.StatusCode.INTERNAL, "an unhandled error (ENOTEMPTY) answered INTERNAL"


def test_unpublish_never_removes_a_file_that_is_not_its_publication(
    node: Node, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    """NodeUnpublishVolume of an existing volume with any file below kubelet's directory as its
    target unlinks that file (the driver removes block targets, which are files). It must only
    remove a target it published, or an empty directory/file left by its own publish."""
    vol_id, _, _ = staged
    victim = node.kubelet / "pods" / "other-pod" / "etc-hosts"
    victim.parent.mkdir(parents=True)
    victim.write_text("127.0.0.1 localhost\n")
    code_of(
        lambda: node.csi.node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=str(victim))
        )
    )
    assert victim.exists(), "NodeUnpublishVolume deleted a file it never published"


@contextlib.contextmanager
def outside_filesystem(directory: Path, name: str, fs: str = "tmpfs") -> Iterator[Path]:
    """A filesystem mounted at directory/name, outside kubelet's directory: what a race must
    never unmount or freeze. fs is "tmpfs", or "ext4" (on a loop device; ext4 can be frozen)."""
    point = directory / name
    point.mkdir(parents=True)
    device = None
    try:
        if fs == "tmpfs":
            assert libc.mount(b"tmpfs", str(point).encode(), b"tmpfs", 0, b"size=1m") == 0
        else:
            image = directory / f"{name}.img"
            with open(image, "wb") as f:
                f.truncate(16 << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
            device = subprocess.run(
                ["losetup", "--find", "--show", str(image)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            subprocess.run(["mount", "-t", "ext4", device, str(point)], check=True)
        yield point
    finally:
        while str(point.resolve()) in mount_points_under(str(point.resolve())):
            if libc.umount2(str(point).encode(), 0) != 0:
                break
        if device:
            subprocess.run(["losetup", "-d", device], check=False)


def test_unpublish_race_never_unmounts_outside_kubelets_directory(node: Node) -> None:
    """NodeUnpublishVolume checked the target on an opened directory, then unmounted the path
    string again (UMOUNT_NOFOLLOW guards only the last component): a parent swapped for a
    symlink in between made it unmount a filesystem outside --kubelet-dir, and answer OK."""
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-unpub-race", cap)).volume
    staging = node.staging("unpub-race")
    stage(node.csi, vol.volume_id, staging, cap)
    target = Path(node.target("unpub-race", pod="unpub-pod"))
    publish = pb.NodePublishVolumeRequest(
        volume_id=vol.volume_id,
        staging_target_path=staging,
        target_path=str(target),
        volume_capability=cap,
    )
    unpublish = pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=str(target))
    outside_dir = node.kubelet.parent / "outside-unpub"
    with outside_filesystem(outside_dir, target.name) as outside:
        real = str(outside.resolve())
        codes: set[grpc.StatusCode] = set()
        calls = 0
        lost = False
        with Swapper(target.parent, outside_dir) as swapper:
            deadline = time.monotonic() + RACE_SECONDS
            give_up = deadline + RACE_MAX_SECONDS
            while racing(deadline, give_up, swapper) and not lost:
                codes.add(code_of(lambda: node.csi.node.NodePublishVolume(publish)))
                codes.add(code_of(lambda: node.csi.node.NodeUnpublishVolume(unpublish)))
                calls += 2
                lost = real not in mount_points_under(real)
        assert not lost, f"NodeUnpublishVolume unmounted {real}, outside kubelet's directory"
        assert (swapper.swaps >= 5 and calls > 10) or swapper.pinned, (
            f"the race did not run ({swapper.swaps} swaps)"
        )
        assert codes <= RACE_CODES, f"unexpected answers in the race: {codes}"
    node.csi.node.NodeUnpublishVolume(unpublish)
    node.csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=staging)
    )
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


class FreezeWatch(Background):
    """Fails when the filesystem at point is frozen at any moment: FITHAW on it succeeds only
    then (and thaws it at once, so a lost race cannot hang the test)."""

    def __init__(self, point: Path) -> None:
        self.fd = os.open(point, os.O_RDONLY | os.O_DIRECTORY)
        self.frozen = 0
        super().__init__()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                fcntl.ioctl(self.fd, FITHAW, 0)
                self.frozen += 1
            except OSError:
                pass  # EINVAL: not frozen
            time.sleep(0.0002)

    def finish(self) -> None:
        os.close(self.fd)


def test_snapshot_race_never_freezes_another_filesystem(node: Node) -> None:
    """CreateSnapshot found the staging mount by its path string, then opened that path with
    O_NOFOLLOW (last component only) and FIFREEZE'd what it got: a parent swapped for a symlink
    made it freeze an unrelated filesystem (on the host's root, a hung node), and copy the
    volume unfrozen. Now only a descriptor proven to be the volume's mount root is frozen."""
    cap = mount_cap("ext4")
    vol = node.csi.controller.CreateVolume(create("pvc-freeze-race", cap)).volume
    staging = Path(node.staging("freeze-race"))
    stage(node.csi, vol.volume_id, str(staging), cap)
    outside_dir = node.kubelet.parent / "outside-freeze"
    with outside_filesystem(outside_dir, staging.name, "ext4") as outside:
        codes: set[grpc.StatusCode] = set()
        calls = 0
        with FreezeWatch(outside) as watch, Swapper(staging.parent, outside_dir) as swapper:
            deadline = time.monotonic() + RACE_SECONDS
            give_up = deadline + RACE_MAX_SECONDS
            while racing(deadline, give_up, swapper) and not watch.frozen:
                calls += 1
                try:
                    snap = node.csi.controller.CreateSnapshot(
                        pb.CreateSnapshotRequest(
                            name=f"race-{calls}", source_volume_id=vol.volume_id
                        )
                    ).snapshot
                except grpc.RpcError as exc:
                    codes.add(exc.code())
                    continue
                codes.add(grpc.StatusCode.OK)
                node.csi.controller.DeleteSnapshot(
                    pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id)
                )
        assert watch.frozen == 0, f"CreateSnapshot froze {outside}, outside the volume"
        assert swapper.swaps >= 5 or swapper.pinned, f"the race did not run ({swapper.swaps})"
        assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}, codes
    node.csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=str(staging))
    )
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))


class PathFollowingHelper(LinuxMounter):
    """A stand-in for mount.nfs/mount.cifs (no NFS or CIFS server on this machine; the SELinux
    VM suite runs the real helpers): like mount(8) it resolves the target path string again,
    following symlinks, and mounts there. A 1 MiB tmpfs stands in for the share."""

    def mount_helper(
        self,
        source: str,
        target: str,
        fs_type: str,
        options: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        assert libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", 0, b"size=1m") == 0


#: What a CIFS NodeStageVolume carries (the stand-in helper ignores them).
CREDENTIALS = {"username": "u", "password": "p"}


@pytest.mark.parametrize("kind", ["nfs", "cifs"])
def test_network_stage_mounts_on_the_checked_directory_not_the_path(
    tmp_path: Path, kind: str
) -> None:
    """NFS/CIFS NodeStageVolume handed the staging path string to mount(8), which follows
    symlinks: with a parent swapped after the check, the share was mounted outside kubelet's
    directory while the catalog recorded the kubelet path. The swap here is placed exactly in
    that window (after the node layer opened the directory, before the backend mounts)."""
    kubelet = tmp_path / "kubelet"
    parent = kubelet / "plugins" / "pv"
    (parent / "globalmount").mkdir(parents=True)
    decoy = tmp_path / "decoy"
    (decoy / "globalmount").mkdir(parents=True)
    env = BackendEnv(tmp_path / "state", PathFollowingHelper())
    backend = BACKENDS[kind](env)
    params = {"server": "192.0.2.1", "share": "/exports"} if kind == "nfs" else {"source": "//h/s"}
    vol = Volume(
        id="vol-" + "1" * 32,
        name="pvc",
        kind=kind,
        capacity_bytes=1 << 30,
        access_type=AccessType.MOUNT,
        fs_type=kind,
        parameters={"kind": kind, **params},
    )
    staging = str(parent / "globalmount")
    try:
        with paths.opened(staging, str(kubelet)) as target:
            os.rename(parent, parent.with_name("pv.real"))
            os.symlink(decoy, parent)
            backend.stage(
                StageRequest(vol, staging, target, parse_mount_flags(()), CREDENTIALS, False)
            )
        assert mount_points_under(str(decoy.resolve())) == [], "the share was mounted outside"
        held = str((kubelet / "plugins" / "pv.real" / "globalmount").resolve())
        assert mount_points_under(held) == [held], "the share is not on the checked directory"
        assert mount_points_under(str((tmp_path / "state").resolve())) == []
    finally:
        cleanup_under(tmp_path)


def test_stage_never_stacks_over_a_pods_mount(
    node: Node, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    """NodeStageVolume accepted a staging path that was another volume's live pod mount and
    mounted a second filesystem over the pod's volume."""
    vol_id, staging, cap = staged
    target = node.target("stacked", pod="victim-pod")
    node.csi.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=vol_id, staging_target_path=staging, target_path=target, volume_capability=cap
        )
    )
    Path(target, "pod-data").write_text("the pod's")
    other = node.csi.controller.CreateVolume(create("pvc-stacker", cap)).volume
    for path in (target, str(Path(target) / "inside"), staging):
        code = code_of(
            partial(
                node.csi.node.NodeStageVolume,
                pb.NodeStageVolumeRequest(
                    volume_id=other.volume_id, staging_target_path=path, volume_capability=cap
                ),
            )
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION, (path, code)
    assert mount_count(target) == 1, "a filesystem was stacked over the pod's volume"
    assert Path(target, "pod-data").read_text() == "the pod's"
    node.csi.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=target)
    )
    node.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=other.volume_id))


def test_publish_at_the_staging_path_is_refused_and_keeps_the_staging(
    node: Node, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    """target_path == staging_target_path was accepted (the existing mount adopted as the
    publication), and the later unpublish unmounted the staging mount the catalog still called
    staged."""
    vol_id, staging, cap = staged
    code = code_of(
        lambda: node.csi.node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=vol_id,
                staging_target_path=staging,
                target_path=staging,
                volume_capability=cap,
            )
        )
    )
    assert code == INVALID
    node.csi.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=staging)
    )
    assert mount_count(staging) == 1, "the staging mount was unmounted"


def test_stats_expand_and_health_only_read_the_volumes_own_paths(
    node: Node, staged: tuple[str, str, pb.VolumeCapability]
) -> None:
    """NodeGetVolumeStats, NodeExpandVolume and NodeGetVolumeHealth took any host path: stats
    of /proc were readable, and NodeExpandVolume at /proc grew the image."""
    vol_id, _, _ = staged
    image = node.driver.state_dir / "volumes" / f"{vol_id}.img"
    size = image.stat().st_size
    elsewhere = node.kubelet / "pods" / "other" / "mount"
    elsewhere.mkdir(parents=True)
    for path in ("/proc", "/", str(elsewhere), "relative/path"):
        stats = code_of(
            partial(
                node.csi.node.NodeGetVolumeStats,
                pb.NodeGetVolumeStatsRequest(volume_id=vol_id, volume_path=path),
            )
        )
        expand = code_of(
            partial(
                node.csi.node.NodeExpandVolume,
                pb.NodeExpandVolumeRequest(
                    volume_id=vol_id,
                    volume_path=path,
                    capacity_range=pb.CapacityRange(required_bytes=size * 2),
                ),
            )
        )
        assert (stats, expand) == (NOT_FOUND, NOT_FOUND), path
    health = code_of(
        lambda: node.csi.node.NodeGetVolumeHealth(
            pb.NodeGetVolumeHealthRequest(volume_id=vol_id, staging_target_path="/proc")
        )
    )
    assert health == INVALID
    assert image.stat().st_size == size, "NodeExpandVolume grew the image"
