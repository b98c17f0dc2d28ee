"""The sqlite catalog: round trips, pagination, persistence across reopen."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from csi_hostpath_selinux.models import (
    AccessType,
    Publication,
    Snapshot,
    Staging,
    StagingState,
    Volume,
    new_snapshot_id,
    new_volume_id,
)
from csi_hostpath_selinux.state import Catalog, CatalogError


def volume(name: str) -> Volume:
    return Volume(
        new_volume_id(),
        name,
        "image",
        1 << 30,
        AccessType.MOUNT,
        "ext4",
        {"kind": "image"},
        "",
        False,
        1.5,
    )


def test_volume_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cat = Catalog(path)
    vol = volume("pvc-1")
    cat.add_volume(vol)
    cat.close()
    again = Catalog(path)
    assert again.volume(vol.id) == vol
    assert again.volume_by_name("pvc-1") == vol
    assert again.volume("vol-" + "0" * 32) is None


def test_names_are_unique(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    cat.add_volume(volume("same"))
    with pytest.raises(sqlite3.IntegrityError):
        cat.add_volume(volume("same"))


def test_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    vol = volume("a")
    with pytest.raises(RuntimeError), cat.transaction() as db:
        db.execute("DELETE FROM volumes")
        cat.add_volume  # noqa: B018 - the transaction is what is under test
        raise RuntimeError("boom")
    cat.add_volume(vol)
    assert cat.volume_count() == 1


def test_pagination_is_stable_across_deletes(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    vols = [volume(f"v{i}") for i in range(5)]
    for v in vols:
        cat.add_volume(v)
    page, token = cat.volumes_page(0, 2)
    assert [v.name for v in page] == ["v0", "v1"]
    assert token is not None
    cat.remove_volume(vols[2].id)
    page, token2 = cat.volumes_page(token, 2)
    assert [v.name for v in page] == ["v3", "v4"]
    assert token2 is None
    everything, none = cat.volumes_page(0, 0)
    assert len(everything) == 4 and none is None


def test_stagings_publications_snapshots(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    vol = volume("a")
    cat.add_volume(vol)
    st = Staging(
        vol.id,
        "/s",
        "u:r:t:s0:c1,c2",
        ('context="u:r:t:s0:c1,c2"',),
        "/dev/loop3",
        AccessType.MOUNT,
        StagingState.PENDING,
    )
    cat.put_staging(st)
    assert cat.stagings(vol.id) == [st]
    cat.put_staging(Staging(**{**st.__dict__, "state": StagingState.READY}))
    assert cat.stagings()[0].state is StagingState.READY
    pub = Publication(vol.id, "/t", "/s", True, None, (), 7)
    cat.put_publication(pub)
    assert cat.publications(vol.id) == [pub]
    cat.remove_publication(vol.id, "/t")
    cat.remove_staging(vol.id, "/s")
    assert cat.publications() == [] and cat.stagings() == []
    snap = Snapshot(new_snapshot_id(), "snap-a", vol.id, 123, 2.0, True, kind=vol.kind)
    cat.add_snapshot(snap)
    assert cat.snapshot(snap.id) == snap
    assert cat.snapshot_by_name("snap-a") == snap
    assert cat.snapshots_of(vol.id) == [snap]
    page, token = cat.snapshots_page(0, 0, source_volume_id=vol.id)
    assert page == [snap] and token is None


def test_refuses_a_catalog_from_another_schema(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    Catalog(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="schema version 99"):
        Catalog(path)


def test_a_catalog_from_before_snapshot_modes_opens_and_records_them(tmp_path: Path) -> None:
    """Catalogs written before snapshots recorded their source's mode get the column added."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE snapshots (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " name TEXT NOT NULL UNIQUE, source_volume_id TEXT NOT NULL, size_bytes INTEGER NOT NULL,"
        " created_at REAL NOT NULL, ready INTEGER NOT NULL);"
        "INSERT INTO snapshots (id, name, source_volume_id, size_bytes, created_at, ready)"
        " VALUES ('snap-" + "a" * 32 + "', 'old', 'vol-x', 1, 1.0, 1);"
        "PRAGMA user_version=1;"
    )
    db.close()
    catalog = Catalog(path)
    try:
        (old,) = catalog.all_snapshots()
        assert old.source_access_type == ""
        new = Snapshot(new_snapshot_id(), "new", "vol-y", 2, 2.0, True, "block")
        catalog.add_snapshot(new)
        assert catalog.snapshot(new.id) == new
    finally:
        catalog.close()


def test_claims_are_the_path_and_its_parents_by_whole_components(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite")
    try:
        st = Staging("vol-a", "/k/plugins/a", None, (), "", AccessType.MOUNT, StagingState.READY)
        catalog.put_staging(st)
        pub = Publication("vol-b", "/k/pods/p/mount", "/k/plugins/b", False, None, (), 1, "")
        catalog.put_publication(pub)
        assert catalog.claims("/k/plugins/a") == [("vol-a", "/k/plugins/a")]
        assert catalog.claims("/k/plugins/a/inner") == [("vol-a", "/k/plugins/a")]
        assert catalog.claims("/k/plugins/ab") == []
        assert catalog.claims("/k/pods/p/mount/x") == [("vol-b", "/k/pods/p/mount")]
        assert catalog.claims("/k/pods/p") == []
    finally:
        catalog.close()


def test_a_catalog_from_before_snapshot_kinds_opens_and_records_them(tmp_path: Path) -> None:
    """Catalogs written before snapshots recorded their kind get the column, filled in from the
    source volume while it exists (recovery records the rest); a new snapshot recorded without a
    kind takes its volume's."""
    path = tmp_path / "old.sqlite"
    vol = volume("v1")
    catalog = Catalog(path)
    catalog.add_volume(vol)
    catalog.close()
    live, gone = f"snap-{'a' * 32}", f"snap-{'b' * 32}"
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE snapshots;"
        "CREATE TABLE snapshots (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " name TEXT NOT NULL UNIQUE, source_volume_id TEXT NOT NULL, size_bytes INTEGER NOT NULL,"
        " created_at REAL NOT NULL, ready INTEGER NOT NULL,"
        " source_access_type TEXT NOT NULL DEFAULT '');"
    )
    db.executemany(
        "INSERT INTO snapshots (id, name, source_volume_id, size_bytes, created_at, ready)"
        " VALUES (?, ?, ?, 1, 1.0, 1)",
        [(live, "of-a-live-volume", vol.id), (gone, "of-a-gone-volume", f"vol-{'c' * 32}")],
    )
    db.commit()
    db.close()
    catalog = Catalog(path)
    try:
        assert [(s.id, s.kind) for s in catalog.all_snapshots()] == [(live, "image"), (gone, "")]
        catalog.set_snapshot_kind(gone, "directory")
        catalog.set_snapshot_kind(live, "directory")  # a recorded kind is never overwritten
        assert [s.kind for s in catalog.all_snapshots()] == ["image", "directory"]
        new = Snapshot(new_snapshot_id(), "new", vol.id, 2, 2.0, True, "mount")
        catalog.add_snapshot(new)
        assert catalog.snapshot(new.id) == replace(new, kind="image")
    finally:
        catalog.close()
