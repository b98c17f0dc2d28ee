"""Intent files are made without fsync and removed only after the catalog's sync that covers the
commit: a power cut before that sync leaves the intent beside the storage the catalog lost, and
start-up reconciliation removes that storage instead of refusing to start.

A power cut is simulated by what it leaves on disk: the catalog as of its last sync, and the
state directory's entries as the filesystem's journal committed them in order (here: all of
them, the intent included, as on ext4 or xfs once the storage's creation reached the disk).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi_hostpath_selinux import catalog_guard, catalog_sync, intents
from csi_hostpath_selinux.backends import BACKENDS, Backend, BackendEnv
from csi_hostpath_selinux.catalog_guard import StateDirError
from csi_hostpath_selinux.config import DriverConfig
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.locks import OperationLocks
from csi_hostpath_selinux.models import AccessMode, AccessType, Capability, Volume
from csi_hostpath_selinux.recovery import reconcile
from csi_hostpath_selinux.state import Catalog
from csi_hostpath_selinux.volumes import CapacityRange, VolumeManager
from tests.support.domain import fake_node

CATALOG_FILES = ("catalog.sqlite", "catalog.sqlite-wal")


@dataclass
class Node:
    config: DriverConfig
    catalog: Catalog
    backends: dict[str, Backend]
    volumes: VolumeManager

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    def create(self, name: str) -> Volume:
        cap = Capability(access_type=AccessType.MOUNT, access_mode=AccessMode.SINGLE_NODE_WRITER)
        return self.volumes.create(
            name, CapacityRange(1 << 20), [cap], {"kind": "directory"}, {}, None
        )

    def reconcile(self) -> list[str]:
        node = fake_node(self.config, self.catalog, self.backends)
        return reconcile(self.catalog, self.backends, node).orphan_storage


def start(state_dir: Path) -> Node:
    """What the driver does at start, up to reconciliation (which the test calls)."""
    config = DriverConfig(node_id="n1", state_dir=state_dir)
    catalog = Catalog(config.catalog_path, sync_dirs=intents.sync_dirs(state_dir))
    catalog_guard.check(catalog, state_dir)
    backends: dict[str, Backend] = {
        k: cls(BackendEnv(state_dir, FakeMounter())) for k, cls in BACKENDS.items()
    }
    return Node(
        config, catalog, backends, VolumeManager(config, catalog, backends, OperationLocks())
    )


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.setattr(catalog_sync.WalSync, "DELAY", 3600.0)  # only the test's sync() syncs
    (tmp_path / "state").mkdir()
    node = start(tmp_path / "state")
    yield node
    node.catalog.close()


def synced_catalog(node: Node, into: Path) -> None:
    """Keep a copy of the catalog as it is on disk right after a sync."""
    node.catalog.sync()
    into.mkdir()
    for name in CATALOG_FILES:
        shutil.copy2(node.state_dir / name, into / name)


def after_power_cut(node: Node, disk_catalog: Path, into: Path) -> Path:
    """The state directory a power cut leaves: every entry, the catalog of the last sync."""
    shutil.copytree(node.state_dir, into, ignore=shutil.ignore_patterns("catalog.sqlite*"))
    for name in CATALOG_FILES:
        shutil.copy2(disk_catalog / name, into / name)
    return into


def test_an_intent_stays_until_the_sync_that_covers_the_create(node: Node) -> None:
    vol = node.create("pvc-a")
    mark = node.state_dir / intents.INTENTS_DIR / vol.id
    assert mark.exists(), "the intent went before the volume's row was on disk"
    node.catalog.sync()
    assert not mark.exists(), "the sync that covers the create did not remove its intent"


def test_an_intent_stays_until_the_sync_that_covers_the_delete(node: Node) -> None:
    vol = node.create("pvc-a")
    node.catalog.sync()
    node.volumes.delete(vol.id, {})
    mark = node.state_dir / intents.INTENTS_DIR / vol.id
    assert mark.exists(), "the intent went before the row's removal was on disk"
    node.catalog.sync()
    assert not mark.exists()


def test_a_power_cut_before_the_sync_leaves_the_intent_and_start_removes_the_storage(
    node: Node, tmp_path: Path
) -> None:
    synced_catalog(node, tmp_path / "disk")
    vol = node.create("pvc-a")
    storage = node.backends["directory"].env.volumes_dir / vol.id
    assert storage.is_dir()

    rebooted = start(after_power_cut(node, tmp_path / "disk", tmp_path / "rebooted"))
    try:
        assert rebooted.catalog.volume(vol.id) is None, "the power cut took the row back"
        assert rebooted.reconcile() == [vol.id]
        assert not (rebooted.state_dir / "volumes" / vol.id).exists()
        assert intents.intents(rebooted.state_dir) == set()
    finally:
        rebooted.catalog.close()


def test_a_kill_before_the_sync_keeps_the_volume(node: Node, tmp_path: Path) -> None:
    vol = node.create("pvc-a")
    # kill -9: the commit is in the WAL (the page cache), the intent is there too.
    killed = tmp_path / "killed"
    shutil.copytree(node.state_dir, killed)
    (killed / "catalog.sqlite-shm").unlink(missing_ok=True)
    restarted = start(killed)
    try:
        assert restarted.reconcile() == []
        assert restarted.catalog.volume(vol.id) == vol
        assert (killed / "volumes" / vol.id).is_dir()
        assert intents.intents(killed) == set()
    finally:
        restarted.catalog.close()


def test_without_the_intent_the_same_power_cut_refuses_to_start(node: Node, tmp_path: Path) -> None:
    """Why the intent must outlive the commit until the sync: the storage alone is unproven."""
    synced_catalog(node, tmp_path / "disk")
    vol = node.create("pvc-a")
    lost = after_power_cut(node, tmp_path / "disk", tmp_path / "rebooted")
    (lost / intents.INTENTS_DIR / vol.id).unlink(missing_ok=True)
    with pytest.raises(StateDirError, match="does not list 1 volume"):
        start(lost).catalog.close()


def test_a_refused_create_leaves_no_intent_behind(node: Node) -> None:
    """Found by the VM suite: a CreateVolume refused inside the block (a CIFS volume without
    credentials) left its intent until the next start."""
    ident = "vol-" + "1" * 32
    with (
        pytest.raises(RuntimeError, match="refused"),
        intents.intent(node.catalog, node.state_dir, ident),
    ):
        raise RuntimeError("refused before making any storage")
    node.catalog.sync()
    assert intents.intents(node.state_dir) == set()


def test_a_failure_that_leaves_storage_keeps_its_intent(node: Node) -> None:
    ident = "vol-" + "2" * 32
    storage = node.state_dir / "volumes" / ident
    with pytest.raises(RuntimeError), intents.intent(node.catalog, node.state_dir, ident):
        storage.mkdir(parents=True)
        raise RuntimeError("killed half-way, storage left")
    node.catalog.sync()
    assert intents.intents(node.state_dir) == {ident}, "the next start needs the mark"
    # A later operation of the same id that succeeds still removes it.
    storage.rmdir()
    with intents.intent(node.catalog, node.state_dir, ident):
        pass
    node.catalog.sync()
    assert intents.intents(node.state_dir) == set()
