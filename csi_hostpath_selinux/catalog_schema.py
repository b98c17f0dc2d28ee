"""The catalog's tables, its schema version, and the migrations of catalogs older drivers wrote.

Version 1 kept a group snapshot's members as a JSON list in volume_group_snapshots.members,
found by a text search. Version 2 keeps them as rows of group_snapshot_members (one per member
snapshot, position keeping their order, an index by snapshot id); opening a version 1 catalog
copies the JSON members into that table and drops the old column (sqlite >= 3.35), all in the
open's transaction. A driver of version 1 refuses a version 2 catalog (it would not see the
members) rather than lose them: a downgrade needs the catalog from before the upgrade.
"""

from __future__ import annotations

import json
import sqlite3

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    capacity_bytes INTEGER NOT NULL,
    access_type TEXT NOT NULL,
    fs_type TEXT NOT NULL,
    parameters TEXT NOT NULL,
    content_source TEXT NOT NULL,  -- "snapshot:<id>", "volume:<id>" or ""
    ephemeral INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    source_volume_id TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    ready INTEGER NOT NULL,
    source_access_type TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS snapshots_by_source ON snapshots(source_volume_id);
CREATE TABLE IF NOT EXISTS stagings (
    volume_id TEXT NOT NULL,
    staging_path TEXT NOT NULL,
    label TEXT,
    flags TEXT NOT NULL,
    device TEXT NOT NULL,
    access_type TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (volume_id, staging_path)
);
CREATE TABLE IF NOT EXISTS publications (
    volume_id TEXT NOT NULL,
    target_path TEXT NOT NULL,
    staging_path TEXT NOT NULL,
    read_only INTEGER NOT NULL,
    label TEXT,
    flags TEXT NOT NULL,
    access_mode INTEGER NOT NULL,
    device TEXT NOT NULL,
    PRIMARY KEY (volume_id, target_path)
);
-- group snapshots: each member is a row of group_snapshot_members (in the group's order) and
-- also a row of snapshots (so CreateVolume, GetSnapshot and ListSnapshots see it).
CREATE TABLE IF NOT EXISTS volume_group_snapshots (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS group_snapshot_members (
    group_id TEXT NOT NULL,
    snapshot_id TEXT NOT NULL UNIQUE,
    volume_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (group_id, position)
);
-- facts about the catalog itself: its identity (see catalog_guard.py)
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})").fetchall()}


def migrate(db: sqlite3.Connection) -> int:
    """Create what is missing and bring an older catalog up to SCHEMA_VERSION, inside the
    caller's transaction; return the version the file had (0: it held no catalog)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    snapshot_columns = columns(db, "snapshots")
    if "source_access_type" not in snapshot_columns:  # catalogs written before it existed
        db.execute("ALTER TABLE snapshots ADD COLUMN source_access_type TEXT NOT NULL DEFAULT ''")
    if "kind" not in snapshot_columns:  # catalogs written before snapshots recorded their kind
        db.execute("ALTER TABLE snapshots ADD COLUMN kind TEXT NOT NULL DEFAULT ''")
        # The source volume tells, while it exists; recovery fills in the rest.
        db.execute(
            "UPDATE snapshots SET kind = (SELECT kind FROM volumes"
            " WHERE volumes.id = snapshots.source_volume_id)"
            " WHERE source_volume_id IN (SELECT id FROM volumes)"
        )
    if "members" in columns(db, "volume_group_snapshots"):  # version 1: members as JSON
        _members_to_rows(db)
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version < SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return version


def _members_to_rows(db: sqlite3.Connection) -> None:
    groups = db.execute("SELECT id, members FROM volume_group_snapshots").fetchall()
    for group_id, members in groups:
        db.executemany(
            "INSERT INTO group_snapshot_members (group_id, snapshot_id, volume_id, position)"
            " VALUES (?,?,?,?)",
            [
                (str(group_id), str(snap), str(vol), position)
                for position, (vol, snap) in enumerate(json.loads(str(members)))
            ],
        )
    db.execute("ALTER TABLE volume_group_snapshots DROP COLUMN members")
