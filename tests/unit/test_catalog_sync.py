"""When the catalog's commits reach the disk: volume rows soon after the reply, and always before
a mount record of a later commit returns (so before a volume is first mounted)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from csi_hostpath_selinux import catalog_sync
from csi_hostpath_selinux.models import StagingState
from csi_hostpath_selinux.state import Catalog
from tests.support.records import staging, volume


class Syncs:
    """Records every fsync of the catalog's WAL (the real one is done too)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.wal: list[str] = []
        self.lock = threading.Lock()
        real = catalog_sync.fsync_path

        def recording(path: Path, data_only: bool = False) -> None:
            real(path, data_only)
            if path.name.endswith("-wal"):
                with self.lock:
                    self.wal.append(threading.current_thread().name)

        monkeypatch.setattr(catalog_sync, "fsync_path", recording)

    def count(self) -> int:
        with self.lock:
            return len(self.wal)


def test_a_volume_row_is_synced_before_a_mount_record_commit_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        catalog_sync.WalSync, "DELAY", 3600.0
    )  # the background thread never gets to it
    syncs = Syncs(monkeypatch)
    cat = Catalog(tmp_path / "c.sqlite")
    start = syncs.count()
    vol = volume("pvc-1")
    cat.add_volume(vol)
    assert syncs.count() == start, "CreateVolume's commit waited for the disk"
    cat.put_staging(staging(vol.id, "/staging", StagingState.PENDING))
    assert syncs.count() == start + 1, (
        "the staging record returned before the volume's row was synced"
    )
    assert syncs.wal[-1] == threading.current_thread().name
    cat.remove_staging(vol.id, "/staging")
    assert syncs.count() == start + 1, "a mount record with nothing to sync before it fsynced"
    cat.close()


def test_the_background_thread_syncs_a_volume_row_within_the_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_sync.WalSync, "DELAY", 0.05)
    syncs = Syncs(monkeypatch)
    cat = Catalog(tmp_path / "c.sqlite")
    start = syncs.count()
    for i in range(5):
        cat.add_volume(volume(f"pvc-{i}"))
    deadline = time.monotonic() + 5
    while syncs.count() == start and time.monotonic() < deadline:
        time.sleep(0.01)
    assert syncs.count() == start + 1, "five commits in a burst should share one fsync"
    assert syncs.wal[-1] == "catalog-sync"
    cat.close()


def test_close_syncs_what_is_pending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_sync.WalSync, "DELAY", 3600.0)
    syncs = Syncs(monkeypatch)
    path = tmp_path / "c.sqlite"
    cat = Catalog(path)
    start = syncs.count()
    vol = volume("pvc-1")
    cat.remove_volume(vol.id)  # a delete is a durable commit too
    cat.add_volume(vol)
    cat.close()
    assert syncs.count() == start + 1
    assert Catalog(path).volume(vol.id) == vol


def test_a_sync_fsyncs_the_sync_dirs_before_the_wal_and_then_runs_what_waited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intents made before a commit are on disk before the commit is (a WAL rewritten in
    place reaches the disk with fdatasync alone, which commits no filesystem journal)."""
    monkeypatch.setattr(catalog_sync.WalSync, "DELAY", 3600.0)
    order: list[str] = []
    real = catalog_sync.fsync_path

    def recording(path: Path, data_only: bool = False) -> None:
        real(path, data_only)
        order.append(path.name)

    intents = tmp_path / "intents"
    intents.mkdir()
    cat = Catalog(tmp_path / "c.sqlite", sync_dirs=[intents, tmp_path / "not-made-yet"])
    monkeypatch.setattr(catalog_sync, "fsync_path", recording)
    cat.add_volume(volume("pvc-1"))
    cat.after_sync(lambda: order.append("after"))
    assert order == [], "after_sync ran before the sync that covers the commit"
    cat.sync()
    assert order == ["intents", "c.sqlite-wal", "after"]
    cat.after_sync(lambda: order.append("at once"))
    assert order[-1] == "at once", "with nothing left to sync, the action runs at once"
    cat.close()
