"""The sqlite catalog: round trips, pagination, persistence across reopen."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from csi_hostpath_selinux.models import (
    AccessMode,
    AccessType,
    ContentSource,
    GroupMember,
    GroupSnapshot,
    Snapshot,
    SourceType,
    Staging,
    StagingState,
    Volume,
    new_snapshot_id,
)
from csi_hostpath_selinux.state import Catalog, CatalogError
from tests.support.records import publication, staging, volume


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
        volume_id=vol.id,
        staging_path="/s",
        label="u:r:t:s0:c1,c2",
        flags=('context="u:r:t:s0:c1,c2"',),
        device="/dev/loop3",
        access_type=AccessType.MOUNT,
        state=StagingState.PENDING,
    )
    cat.put_staging(st)
    assert cat.stagings(vol.id) == [st]
    cat.put_staging(replace(st, state=StagingState.READY))
    assert cat.stagings()[0].state is StagingState.READY
    pub = publication(vol.id, "/t", "/s", AccessMode.SINGLE_NODE_MULTI_WRITER, read_only=True)
    cat.put_publication(pub)
    assert cat.publications(vol.id) == [pub]
    cat.remove_publication(vol.id, "/t")
    cat.remove_staging(vol.id, "/s")
    assert cat.publications() == [] and cat.stagings() == []
    snap = Snapshot(
        id=new_snapshot_id(),
        name="snap-a",
        source_volume_id=vol.id,
        size_bytes=123,
        created_at=2.0,
        ready=True,
        kind=vol.kind,
    )
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
        new = Snapshot(
            id=new_snapshot_id(),
            name="new",
            source_volume_id="vol-y",
            size_bytes=2,
            created_at=2.0,
            ready=True,
            source_access_type="block",
        )
        catalog.add_snapshot(new)
        assert catalog.snapshot(new.id) == new
    finally:
        catalog.close()


def test_claims_are_the_path_and_its_parents_by_whole_components(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite")
    try:
        catalog.put_staging(staging("vol-a", "/k/plugins/a"))
        catalog.put_publication(publication("vol-b", "/k/pods/p/mount", "/k/plugins/b"))
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
        new = Snapshot(
            id=new_snapshot_id(),
            name="new",
            source_volume_id=vol.id,
            size_bytes=2,
            created_at=2.0,
            ready=True,
            source_access_type="mount",
        )
        catalog.add_snapshot(new)
        assert catalog.snapshot(new.id) == replace(new, kind="image")
    finally:
        catalog.close()


# group snapshots

#: The group snapshots table of schema version 1 (main before the members table): members a
#: JSON list of [volume_id, snapshot_id] pairs.
V1_GROUPS = (
    "CREATE TABLE volume_group_snapshots (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,"
    " members TEXT NOT NULL)"
)


def member_snapshot(vol: Volume, snapshot_id: str) -> Snapshot:
    return Snapshot(
        id=snapshot_id,
        name=f"member-{snapshot_id}",
        source_volume_id=vol.id,
        size_bytes=1,
        created_at=1.0,
        kind=vol.kind,
    )


def test_a_catalog_with_json_group_members_opens_and_keeps_its_groups(tmp_path: Path) -> None:
    """A version 1 catalog (members as JSON text) gets its members as rows, in their order: the
    group is found by each member's snapshot id, and deleting it removes the members."""
    path = tmp_path / "old.sqlite"
    vols = [volume("v1"), volume("v2"), volume("v3")]
    catalog = Catalog(path)
    for vol in vols:
        catalog.add_volume(vol)
    # not sorted, so the test sees that the group's order (not the ids') is kept
    snaps = [f"snap-{c * 32}" for c in "cab"]
    for vol, snap in zip(vols, snaps, strict=True):
        catalog.add_snapshot(member_snapshot(vol, snap))
    catalog.close()
    group_id = f"group-{'d' * 32}"
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE volume_group_snapshots; DROP TABLE group_snapshot_members;"
        f"{V1_GROUPS}; PRAGMA user_version=1;"
    )
    members = json.dumps([[v.id, s] for v, s in zip(vols, snaps, strict=True)])
    db.execute(
        "INSERT INTO volume_group_snapshots (id, name, created_at, members) VALUES (?,?,?,?)",
        (group_id, "old-group", 3.0, members),
    )
    db.commit()
    db.close()

    catalog = Catalog(path)
    try:
        assert not catalog.created
        assert [catalog.group_of_snapshot(s) for s in snaps] == [group_id] * 3
        group = catalog.group_snapshot(group_id)
        assert group == GroupSnapshot(
            id=group_id,
            name="old-group",
            created_at=3.0,
            members=tuple(
                GroupMember(volume_id=v.id, snapshot_id=s) for v, s in zip(vols, snaps, strict=True)
            ),
        )
        assert catalog.group_snapshot_by_name("old-group") == group
        catalog.remove_group_snapshot(group_id)
        assert catalog.group_snapshot(group_id) is None
        assert [catalog.group_of_snapshot(s) for s in snaps] == [None] * 3
        assert catalog.all_snapshots() == []
    finally:
        catalog.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM group_snapshot_members").fetchone()[0] == 0


@pytest.mark.parametrize(
    "asked",
    [
        "snap-" + "a" * 31,  # a prefix of a member's id
        "a" * 32,  # a suffix
        'snap-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]',  # a member's id and a piece of JSON
        "snap-" + "a" * 32 + "snap-" + "b" * 32,  # two members' ids run together
        "",
    ],
)
def test_group_of_snapshot_matches_whole_member_ids_only(tmp_path: Path, asked: str) -> None:
    catalog = Catalog(tmp_path / "c.sqlite")
    try:
        vols = [volume("v1"), volume("v2")]
        snaps = [member_snapshot(v, f"snap-{c * 32}") for v, c in zip(vols, "ab", strict=True)]
        for vol in vols:
            catalog.add_volume(vol)
        group = GroupSnapshot(
            id=f"group-{'e' * 32}",
            name="g",
            created_at=1.0,
            members=tuple(
                GroupMember(volume_id=s.source_volume_id, snapshot_id=s.id) for s in snaps
            ),
        )
        catalog.add_group_snapshot(group, snaps)
        assert catalog.group_of_snapshot(snaps[0].id) == group.id
        assert catalog.group_of_snapshot(asked) is None
    finally:
        catalog.close()


def test_content_sources_and_access_modes_are_typed_and_stored_as_before(tmp_path: Path) -> None:
    """The catalog keeps storing "snapshot:<id>", "volume:<id>" or "" and the mode's number;
    readers get a ContentSource and an AccessMode."""
    path = tmp_path / "c.sqlite"
    catalog = Catalog(path)
    try:
        snap_id = new_snapshot_id()
        restored = replace(
            volume("r"), content_source=ContentSource(type=SourceType.SNAPSHOT, id=snap_id)
        )
        clone = replace(
            volume("c"), content_source=ContentSource(type=SourceType.VOLUME, id=restored.id)
        )
        plain = volume("p")
        for vol in (restored, clone, plain):
            catalog.add_volume(vol)
        catalog.put_publication(
            publication(plain.id, "/t", "/s", AccessMode.SINGLE_NODE_SINGLE_WRITER)
        )
        assert [catalog.volume(v.id) for v in (restored, clone, plain)] == [restored, clone, plain]
        (read,) = catalog.publications()
        assert read.access_mode is AccessMode.SINGLE_NODE_SINGLE_WRITER
    finally:
        catalog.close()
    with sqlite3.connect(path) as db:
        stored = dict(db.execute("SELECT name, content_source FROM volumes").fetchall())
        assert stored == {"r": f"snapshot:{snap_id}", "c": f"volume:{restored.id}", "p": ""}
        assert db.execute("SELECT access_mode FROM publications").fetchone()[0] == 6
