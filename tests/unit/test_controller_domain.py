"""The controller domain (volumes.py, sizing.py, volume_sources.py, volume_requests.py) over
the test kind `fake`: plain files in a temporary state directory, no root, no mounts.

What a CSI client would see: the volume returned, the error class (the gRPC code, via
status.py) and its message, and the storage on disk.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi_hostpath_selinux import intents, recovery
from csi_hostpath_selinux.backends import Backend, BackendEnv, DirectoryBackend, FakeBackend
from csi_hostpath_selinux.backends._files import grow_file
from csi_hostpath_selinux.backends.base import remove_path
from csi_hostpath_selinux.config import DriverConfig
from csi_hostpath_selinux.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.locks import OperationLocks
from csi_hostpath_selinux.models import (
    AccessMode,
    AccessType,
    Capability,
    ContentSource,
    HealthStatus,
    Snapshot,
    SourceType,
    Volume,
    new_snapshot_id,
)
from csi_hostpath_selinux.mounting import NodeVolumes
from csi_hostpath_selinux.state import Catalog
from csi_hostpath_selinux.volumes import CapacityRange, VolumeManager
from tests.support.domain import fake_node
from tests.support.records import staging

MIB = 1024 * 1024
MOUNT = Capability(access_type=AccessType.MOUNT, access_mode=AccessMode.SINGLE_NODE_WRITER)
BLOCK = Capability(access_type=AccessType.BLOCK, access_mode=AccessMode.SINGLE_NODE_WRITER)
FAKE = {"kind": "fake"}


@dataclass
class Controller:
    config: DriverConfig
    catalog: Catalog
    backends: dict[str, Backend]
    volumes: VolumeManager

    @property
    def fake(self) -> FakeBackend:
        backend = self.backends["fake"]
        assert isinstance(backend, FakeBackend)
        return backend

    def create(
        self,
        name: str,
        required: int = MIB,
        limit: int = 0,
        source: ContentSource | None = None,
        parameters: dict[str, str] | None = None,
    ) -> Volume:
        return self.volumes.create(
            name, CapacityRange(required, limit), [MOUNT], parameters or FAKE, {}, source
        )

    def snapshot(self, vol: Volume) -> Snapshot:
        """What SnapshotManager.create does, through the backend's own snapshot path."""
        backend = self.backends[vol.kind]
        snap_id = new_snapshot_id()
        size = backend.snapshot(vol, backend.snapshot_path(snap_id), None)
        snap = Snapshot(
            id=snap_id,
            name=f"snap-{vol.name}",
            source_volume_id=vol.id,
            size_bytes=vol.capacity_bytes,
            created_at=1.0,
            ready=True,
            source_access_type="mount",
        )
        assert size >= 0
        self.catalog.add_snapshot(snap)
        stored = self.catalog.snapshot(snap_id)
        assert stored is not None
        return stored

    def data(self, vol: Volume) -> Path:
        return self.fake.data_path(vol.id)

    def node(self) -> NodeVolumes:
        """The node side over the same catalog and kinds (no SELinux, no real mounts)."""
        return fake_node(self.config, self.catalog, self.backends)


def make_controller(state_dir: Path, **config: int) -> Controller:
    cfg = DriverConfig(node_id="n1", state_dir=state_dir, default_volume_bytes=4 * MIB, **config)  # type: ignore[arg-type]
    state_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(cfg.catalog_path)
    env = BackendEnv(state_dir, FakeMounter())
    backends: dict[str, Backend] = {"fake": FakeBackend(env), "directory": DirectoryBackend(env)}
    return Controller(
        cfg, catalog, backends, VolumeManager(cfg, catalog, backends, OperationLocks())
    )


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    controller = make_controller(tmp_path / "state")
    yield controller
    controller.catalog.close()


# create and its idempotence


def test_create_makes_storage_of_the_chosen_size(ctl: Controller) -> None:
    vol = ctl.create("pvc-a", required=3 * MIB + 1)
    assert vol.kind == "fake" and vol.capacity_bytes == 4 * MIB  # rounded up to MiB
    assert ctl.data(vol).stat().st_size == 4 * MIB
    assert ctl.catalog.volume(vol.id) == vol


def test_create_again_with_the_same_request_returns_the_same_volume(ctl: Controller) -> None:
    vol = ctl.create("pvc-a", required=2 * MIB)
    assert ctl.create("pvc-a", required=2 * MIB) == vol
    assert ctl.create("pvc-a", required=MIB) == vol  # the existing volume satisfies it
    assert len(ctl.fake.stored_volume_ids()) == 1


def test_create_again_with_another_request_is_already_exists(ctl: Controller) -> None:
    ctl.create("pvc-a", required=2 * MIB)
    with pytest.raises(AlreadyExists, match="capacity"):
        ctl.create("pvc-a", required=8 * MIB)
    with pytest.raises(AlreadyExists, match="kind"):
        ctl.create("pvc-a", required=2 * MIB, parameters={"kind": "directory"})


def test_bad_requests_change_nothing_on_disk(ctl: Controller) -> None:
    with pytest.raises(InvalidArgument, match="unknown volume kind 'tape'"):
        ctl.create("pvc-a", parameters={"kind": "tape"})
    with pytest.raises(InvalidArgument, match="unknown parameter"):
        ctl.create("pvc-a", parameters={"kind": "fake", "colour": "blue"})
    with pytest.raises(InvalidArgument, match="block access"):
        ctl.volumes.create("pvc-a", CapacityRange(MIB), [BLOCK], FAKE, {}, None)
    with pytest.raises(InvalidArgument, match="name is required"):
        ctl.create("")
    assert ctl.fake.stored_volume_ids() == set() and ctl.catalog.volume_count() == 0


# capacity


def test_sizes_follow_the_capacity_range(ctl: Controller) -> None:
    assert ctl.create("default", required=0).capacity_bytes == 4 * MIB  # --default size
    assert ctl.create("limited", required=0, limit=2 * MIB).capacity_bytes == 2 * MIB
    with pytest.raises(InvalidArgument, match="larger than limit_bytes"):
        ctl.create("inverted", required=3 * MIB, limit=2 * MIB)
    with pytest.raises(OutOfRange, match="rounded to MiB"):
        ctl.create("too-tight", required=MIB + 1, limit=MIB + 2)
    with pytest.raises(OutOfRange, match="largest volume"):
        ctl.create("huge", required=2048 * 1024 * MIB)


def test_max_volumes_per_node_and_capacity_are_enforced(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path / "state", max_volumes_per_node=2, max_capacity_bytes=5 * MIB)
    try:
        ctl.create("a", required=2 * MIB)
        with pytest.raises(ResourceExhausted, match="--capacity"):
            ctl.create("b", required=4 * MIB)
        ctl.create("b", required=3 * MIB)
        with pytest.raises(ResourceExhausted, match="--max-volumes-per-node"):
            ctl.create("c")
        assert len(ctl.fake.stored_volume_ids()) == 2
    finally:
        ctl.catalog.close()


# delete


def test_delete_removes_the_storage_and_is_idempotent(ctl: Controller) -> None:
    vol = ctl.create("pvc-a")
    ctl.volumes.delete(vol.id, {})
    assert ctl.catalog.volume(vol.id) is None
    assert not ctl.fake.volume_path(vol.id).exists()
    ctl.volumes.delete(vol.id, {})  # already gone
    ctl.volumes.delete("vol-not-ours", {})  # never created by this driver
    with pytest.raises(InvalidArgument):
        ctl.volumes.delete("", {})


def test_delete_of_a_staged_volume_is_refused(ctl: Controller) -> None:
    vol = ctl.create("pvc-a")
    ctl.catalog.put_staging(staging(vol.id, "/s"))
    with pytest.raises(FailedPrecondition, match="still staged at /s"):
        ctl.volumes.delete(vol.id, {})
    assert ctl.data(vol).exists()


# snapshots and clones


def test_restore_copies_the_snapshot_and_grows_to_the_request(ctl: Controller) -> None:
    vol = ctl.create("pvc-a", required=2 * MIB)
    with open(ctl.data(vol), "r+b") as f:
        f.write(b"written before the snapshot")
    snap = ctl.snapshot(vol)
    assert snap.kind == "fake"  # recorded from the source volume
    restored = ctl.create(
        "pvc-b", required=3 * MIB, source=ContentSource(type=SourceType.SNAPSHOT, id=snap.id)
    )
    data = ctl.data(restored).read_bytes()
    assert data.startswith(b"written before the snapshot") and len(data) == 3 * MIB
    with pytest.raises(OutOfRange, match="smaller than snapshot"):
        ctl.create(
            "pvc-c",
            required=MIB,
            limit=MIB,
            source=ContentSource(type=SourceType.SNAPSHOT, id=snap.id),
        )
    with pytest.raises(NotFound):
        ctl.create("pvc-d", source=ContentSource(type=SourceType.SNAPSHOT, id=new_snapshot_id()))


def test_a_snapshot_restores_after_its_volume_is_deleted(ctl: Controller) -> None:
    """The catalog's kind of the snapshot tells which backend holds it: no file probing."""
    vol = ctl.create("pvc-a", required=2 * MIB)
    snap = ctl.snapshot(vol)
    ctl.volumes.delete(vol.id, {})
    restored = ctl.create(
        "pvc-b", required=2 * MIB, source=ContentSource(type=SourceType.SNAPSHOT, id=snap.id)
    )
    assert ctl.data(restored).stat().st_size == 2 * MIB


def test_restore_into_another_kind_is_refused(ctl: Controller) -> None:
    snap = ctl.snapshot(ctl.create("pvc-a"))
    with pytest.raises(InvalidArgument, match="'fake' volume; it cannot restore into"):
        ctl.create(
            "pvc-b",
            source=ContentSource(type=SourceType.SNAPSHOT, id=snap.id),
            parameters={"kind": "directory"},
        )
    assert ctl.catalog.volume_by_name("pvc-b") is None


def test_clone_copies_the_volume(ctl: Controller) -> None:
    vol = ctl.create("pvc-a", required=2 * MIB)
    ctl.data(vol).write_bytes(b"x" * (2 * MIB))
    clone = ctl.create(
        "pvc-b", required=2 * MIB, source=ContentSource(type=SourceType.VOLUME, id=vol.id)
    )
    assert ctl.data(clone).read_bytes() == b"x" * (2 * MIB)
    assert clone.content_source == ContentSource(type=SourceType.VOLUME, id=vol.id)
    with pytest.raises(OutOfRange, match="smaller than its source volume"):
        ctl.create(
            "pvc-c",
            required=MIB,
            limit=MIB,
            source=ContentSource(type=SourceType.VOLUME, id=vol.id),
        )
    with pytest.raises(InvalidArgument, match="cannot be cloned into kind 'directory'"):
        ctl.create(
            "pvc-d",
            source=ContentSource(type=SourceType.VOLUME, id=vol.id),
            parameters={"kind": "directory"},
        )


# expand


def test_expand_grows_the_storage_and_never_shrinks(ctl: Controller) -> None:
    vol = ctl.create("pvc-a", required=2 * MIB)
    assert ctl.volumes.expand(vol.id, CapacityRange(5 * MIB - 1)) == (5 * MIB, False)
    assert ctl.data(vol).stat().st_size == 5 * MIB
    assert ctl.volumes.expand(vol.id, CapacityRange(MIB)) == (5 * MIB, False)  # no shrink
    stored = ctl.catalog.volume(vol.id)
    assert stored is not None and stored.capacity_bytes == 5 * MIB
    with pytest.raises(InvalidArgument, match="capacity_range is required"):
        ctl.volumes.expand(vol.id, CapacityRange())
    with pytest.raises(OutOfRange):
        ctl.volumes.expand(vol.id, CapacityRange(2048 * 1024 * MIB))
    with pytest.raises(NotFound):
        ctl.volumes.expand("vol-" + "0" * 32, CapacityRange(MIB))


# start-up recovery of the fake kind's leftovers


def test_recovery_removes_an_unfinished_fake_volume_and_snapshot(ctl: Controller) -> None:
    """A kind's own orphan scan: storage of a create killed before its catalog row, and a
    snapshot file killed before its row, both proven unfinished by their intents."""
    vol = ctl.create("pvc-a")
    snap = ctl.snapshot(vol)
    orphan_vol = dataclasses.replace(vol, id="vol-" + "e" * 32, name="lost")
    ctl.fake.create(orphan_vol, {}, None)
    orphan_snap = new_snapshot_id()
    ctl.fake.snapshot(vol, ctl.fake.snapshot_path(orphan_snap), None)
    for ident in (orphan_vol.id, orphan_snap):
        (ctl.config.state_dir / intents.INTENTS_DIR).mkdir(exist_ok=True)
        (ctl.config.state_dir / intents.INTENTS_DIR / ident).touch()
    node = ctl.node()
    report = recovery.reconcile(ctl.catalog, ctl.backends, node)
    assert sorted(report.orphan_storage) == sorted([f"{orphan_vol.id}.fake", f"{orphan_snap}.fake"])
    assert ctl.fake.stored_volume_ids() == {vol.id}
    assert ctl.fake.stored_snapshot_ids() == {snap.id}


def test_recovery_records_the_kind_of_a_snapshot_from_before_the_column(ctl: Controller) -> None:
    vol = ctl.create("pvc-a")
    snap = ctl.snapshot(vol)
    ctl.volumes.delete(vol.id, {})
    with ctl.catalog.transaction() as db:  # as the migration leaves a row whose volume is gone
        db.execute("UPDATE snapshots SET kind='' WHERE id=?", (snap.id,))
    node = ctl.node()
    recovery.reconcile(ctl.catalog, ctl.backends, node)
    stored = ctl.catalog.snapshot(snap.id)
    assert stored is not None and stored.kind == "fake"


def test_remove_path_never_follows_a_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "f").write_text("kept")
    link = tmp_path / "link"
    link.symlink_to(target)
    remove_path(link)
    remove_path(link)  # a missing one is fine
    assert not os.path.lexists(link) and (target / "f").read_text() == "kept"


def test_remove_path_removes_empty_and_full_directories_but_not_what_links_reach(
    tmp_path: Path,
) -> None:
    empty_target = tmp_path / "empty-target"
    empty_target.mkdir()
    link_to_empty = tmp_path / "link-to-empty"  # rmdir on it fails ENOTDIR: the link goes
    link_to_empty.symlink_to(empty_target)
    empty = tmp_path / "empty"
    empty.mkdir()
    full = tmp_path / "full"
    (full / "sub").mkdir(parents=True)
    (full / "sub" / "f").write_text("gone")
    (full / "out").symlink_to(empty_target)
    for path in (link_to_empty, empty, full):
        remove_path(path)
        assert not os.path.lexists(path)
    assert empty_target.is_dir()


def test_a_fake_volume_whose_data_file_is_cut_short_or_replaced_by_a_link_reports_data_loss(
    ctl: Controller, tmp_path: Path
) -> None:
    vol = ctl.create("pvc-a")
    assert ctl.fake.health(vol) == []
    data = ctl.data(vol)
    os.truncate(data, MIB // 2)
    [cut] = ctl.fake.health(vol)
    assert (cut.status, cut.reason) == (HealthStatus.DATA_LOSS, "FakeDataTruncated")
    assert f"{MIB // 2} bytes, smaller than the volume's {MIB} bytes" in cut.message
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"\0" * (2 * MIB))
    data.unlink()
    data.symlink_to(elsewhere)  # big enough, but not the volume's file: never followed
    [linked] = ctl.fake.health(vol)
    assert (linked.status, linked.reason) == (HealthStatus.DATA_LOSS, "FakeDataMissing")


def test_grow_file_leaves_a_hole_allocates_only_when_asked_and_never_shrinks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "image"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        assert grow_file(fd, 4 * MIB, preallocate=False)
        st = os.fstat(fd)
        assert st.st_size == 4 * MIB and st.st_blocks * 512 < MIB  # a hole, not data
        assert not grow_file(fd, MIB, preallocate=False)  # smaller: left as it is
        assert os.fstat(fd).st_size == 4 * MIB
        assert not grow_file(fd, 4 * MIB, preallocate=True)
        assert os.fstat(fd).st_blocks * 512 >= 4 * MIB  # now allocated in full
    finally:
        os.close(fd)
