"""The durable catalog of volumes, snapshots, stagings and publications (sqlite, WAL, transactions).

Every change is one transaction, so a kill -9 leaves either the old or the new row, never half of
one. Readers get frozen dataclass copies; nothing outside this module sees a cursor or a row.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import AccessType, Publication, Snapshot, Staging, StagingState, Volume

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    capacity_bytes INTEGER NOT NULL,
    access_type TEXT NOT NULL,
    fs_type TEXT NOT NULL,
    parameters TEXT NOT NULL,
    content_source TEXT NOT NULL,
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
-- group snapshots: members is a JSON list of [volume_id, snapshot_id] pairs, and each member is
-- also a row of snapshots (so CreateVolume, GetSnapshot and ListSnapshots see it).
CREATE TABLE IF NOT EXISTS volume_group_snapshots (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    members TEXT NOT NULL
);
-- facts about the catalog itself: its identity (see statedir.py)
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


log = logging.getLogger(__name__)


class CatalogError(Exception):
    """The catalog cannot be opened or is from an incompatible version."""


def disk_full(exc: BaseException) -> bool:
    """True when exc is sqlite's "database or disk is full"."""
    return (
        isinstance(exc, sqlite3.OperationalError)
        and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    )


@contextmanager
def tolerate_full_disk(what: str) -> Iterator[None]:
    """Run a write that only drops a record whose mount is already gone; on a full disk, keep
    the record and go on. A kept record is harmless: every reader re-checks a staging's or a
    publication's mount before trusting it (and drops the record once it can)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if not disk_full(exc):
            raise
        log.warning("the state directory is full: %s stays in the catalog for now", what)


class Catalog:
    """Thread-safe access to the sqlite catalog in the state directory."""

    def __init__(
        self,
        path: Path,
        before_write: Callable[[], None] | None = None,
        sync_dirs: Sequence[Path] = (),
    ) -> None:
        """sync_dirs: directories fsynced before each sync of the WAL (statedir.sync_dirs), so
        that what was created or removed in them before a commit is on disk with the commit."""
        self.path = path
        #: Called before every write transaction (statedir.Reserve frees space on a full disk).
        self._before_write = before_write
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Commits are appended to the WAL without waiting for the disk; _WalSync makes them
        # durable (see transaction()). Checkpoints still sync the WAL and the database file.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._wal_sync = _WalSync(path, sync_dirs)
        self._db.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            columns = {r[1] for r in db.execute("PRAGMA table_info(snapshots)").fetchall()}
            if "source_access_type" not in columns:  # catalogs written before it existed
                db.execute(
                    "ALTER TABLE snapshots ADD COLUMN source_access_type TEXT NOT NULL DEFAULT ''"
                )
            if "kind" not in columns:  # catalogs written before snapshots recorded their kind
                db.execute("ALTER TABLE snapshots ADD COLUMN kind TEXT NOT NULL DEFAULT ''")
                # The source volume tells, while it exists; recovery fills in the rest.
                db.execute(
                    "UPDATE snapshots SET kind = (SELECT kind FROM volumes"
                    " WHERE volumes.id = snapshots.source_volume_id)"
                    " WHERE source_volume_id IN (SELECT id FROM volumes)"
                )
            version = db.execute("PRAGMA user_version").fetchone()[0]
            #: The file held no catalog before this open (missing, 0 bytes, or emptied).
            self.created = version == 0
            if version == 0:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {path} has schema version {version}; this driver needs {SCHEMA_VERSION}"
                )

        # The schema, the WAL and their directory entries are on disk before the first RPC.
        self._wal_sync.sync()
        _fsync_path(path)
        _fsync_path(path.parent)

    def close(self) -> None:
        with self._lock:
            self._wal_sync.close()
            self._db.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One serialized write transaction: committed on success, rolled back on any error.

        Every commit survives kill -9: it is in the WAL (the kernel's page cache) when COMMIT
        returns. What reaches the disk, and so survives a power cut:
        - durable=True (volumes, snapshots): a background thread syncs at most _WalSync.DELAY
          (0.25 s) after the commit, one sync for every commit of that window, and in any case
          before any later durable=False commit is made. A sync fsyncs the sync_dirs (the
          intents and the storage's directory entries made before the commit) and then
          fdatasyncs the WAL; after_sync() runs what must wait for it (removing intents);
        - durable=False (stagings, publications): no fsync of their own. After a power cut
          their mounts are gone anyway and start-up reconciliation drops the records. But
          before they are committed, every earlier durable=True commit is on disk, so a
          volume's row is on disk before the volume is first mounted: no pod can write into a
          volume whose row a power cut could still take back.
        """
        if not durable:
            self._wal_sync.sync()
        with self._lock:
            if self._before_write is not None:
                self._before_write()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if durable:
                self._wal_sync.committed()

    def after_sync(self, action: Callable[[], None]) -> None:
        """Run action once every commit made so far is on disk: at once (in this thread) when
        it already is, else in the syncing thread right after the sync that covers it."""
        self._wal_sync.after_sync(action)

    def sync(self) -> None:
        """Return once every commit made so far is on disk."""
        self._wal_sync.sync()

    def check(self) -> None:
        """Raise sqlite3.Error when the catalog cannot be read (used by Probe)."""
        with self._lock:
            self._db.execute("SELECT count(*) FROM volumes").fetchone()

    def identity(self) -> str | None:
        """The catalog's identity (written once, when the state directory was first used)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
        return str(row[0]) if row else None

    def set_identity(self, identity: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('identity', ?)", (identity,)
            )

    # volumes

    def add_volume(self, vol: Volume) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO volumes (id, name, kind, capacity_bytes, access_type, fs_type, parameters,"
                " content_source, ephemeral, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    vol.id,
                    vol.name,
                    vol.kind,
                    vol.capacity_bytes,
                    vol.access_type.value,
                    vol.fs_type,
                    json.dumps(vol.parameters, sort_keys=True),
                    vol.content_source,
                    int(vol.ephemeral),
                    vol.created_at,
                ),
            )

    def update_capacity(self, volume_id: str, capacity_bytes: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE volumes SET capacity_bytes=? WHERE id=?", (capacity_bytes, volume_id)
            )

    def remove_volume(self, volume_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM volumes WHERE id=?", (volume_id,))

    def volume(self, volume_id: str) -> Volume | None:
        with self._lock:
            row = self._db.execute(_VOLUME_SELECT + " WHERE id=?", (volume_id,)).fetchone()
        return _volume(row) if row else None

    def volume_by_name(self, name: str) -> Volume | None:
        with self._lock:
            row = self._db.execute(_VOLUME_SELECT + " WHERE name=?", (name,)).fetchone()
        return _volume(row) if row else None

    def volumes_page(self, after_seq: int, limit: int) -> tuple[list[Volume], int | None]:
        """Volumes in creation order after sequence number after_seq; also the next token or None."""
        query = _VOLUME_SELECT.replace(" FROM volumes", ", seq FROM volumes")
        query += " WHERE seq > ? ORDER BY seq LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (after_seq, limit + 1 if limit else -1)).fetchall()
        more = bool(limit) and len(rows) > limit
        rows = rows[:limit] if limit else rows
        next_seq = rows[-1][-1] if more and rows else None
        return [_volume(r[:-1]) for r in rows], next_seq

    def volume_count(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT count(*) FROM volumes").fetchone()[0]
        return count

    def provisioned_bytes(self) -> int:
        """The sum of every volume's capacity (what GetCapacity's configured maximum limits)."""
        with self._lock:
            total: int = self._db.execute(
                "SELECT coalesce(sum(capacity_bytes), 0) FROM volumes"
            ).fetchone()[0]
        return total

    def all_volumes(self) -> list[Volume]:
        with self._lock:
            rows = self._db.execute(_VOLUME_SELECT + " ORDER BY seq").fetchall()
        return [_volume(r) for r in rows]

    # snapshots

    def add_snapshot(self, snap: Snapshot) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO snapshots (id, name, source_volume_id, size_bytes, created_at, ready,"
                " source_access_type, kind) VALUES (?,?,?,?,?,?,?,"
                # a record without a kind takes its source volume's
                " COALESCE(NULLIF(?, ''), (SELECT kind FROM volumes WHERE id=?), ''))",
                (
                    snap.id,
                    snap.name,
                    snap.source_volume_id,
                    snap.size_bytes,
                    snap.created_at,
                    int(snap.ready),
                    snap.source_access_type,
                    snap.kind,
                    snap.source_volume_id,
                ),
            )

    def set_snapshot_kind(self, snapshot_id: str, kind: str) -> None:
        """Record the kind of a snapshot whose row predates the kind column."""
        with self.transaction() as db:
            db.execute("UPDATE snapshots SET kind=? WHERE id=? AND kind=''", (kind, snapshot_id))

    def remove_snapshot(self, snapshot_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM snapshots WHERE id=?", (snapshot_id,))

    def snapshot(self, snapshot_id: str) -> Snapshot | None:
        with self._lock:
            row = self._db.execute(_SNAPSHOT_SELECT + " WHERE id=?", (snapshot_id,)).fetchone()
        return _snapshot(row) if row else None

    def snapshot_by_name(self, name: str) -> Snapshot | None:
        with self._lock:
            row = self._db.execute(_SNAPSHOT_SELECT + " WHERE name=?", (name,)).fetchone()
        return _snapshot(row) if row else None

    def snapshots_page(
        self, after_seq: int, limit: int, source_volume_id: str = ""
    ) -> tuple[list[Snapshot], int | None]:
        if source_volume_id:
            query = _SNAPSHOT_PAGE + " AND source_volume_id = ? ORDER BY seq LIMIT ?"
            args: tuple[object, ...] = (after_seq, source_volume_id)
        else:
            query = _SNAPSHOT_PAGE + " ORDER BY seq LIMIT ?"
            args = (after_seq,)
        with self._lock:
            rows = self._db.execute(query, (*args, limit + 1 if limit else -1)).fetchall()
        more = bool(limit) and len(rows) > limit
        rows = rows[:limit] if limit else rows
        next_seq = rows[-1][-1] if more and rows else None
        return [_snapshot(r[:-1]) for r in rows], next_seq

    def snapshots_of(self, volume_id: str) -> list[Snapshot]:
        with self._lock:
            rows = self._db.execute(
                _SNAPSHOT_SELECT + " WHERE source_volume_id=? ORDER BY seq", (volume_id,)
            ).fetchall()
        return [_snapshot(r) for r in rows]

    def all_snapshots(self) -> list[Snapshot]:
        with self._lock:
            rows = self._db.execute(_SNAPSHOT_SELECT + " ORDER BY seq").fetchall()
        return [_snapshot(r) for r in rows]

    def _rows(self, query: str, volume_id: str | None) -> list[Any]:
        """Every row of query, or only the volume's when volume_id is given."""
        with self._lock:
            if volume_id is None:
                return self._db.execute(query).fetchall()
            return self._db.execute(query + " WHERE volume_id=?", (volume_id,)).fetchall()

    # stagings

    def put_staging(self, st: Staging) -> None:
        with self.transaction(durable=False) as db:
            db.execute(
                "INSERT OR REPLACE INTO stagings (volume_id, staging_path, label, flags, device,"
                " access_type, state) VALUES (?,?,?,?,?,?,?)",
                (
                    st.volume_id,
                    st.staging_path,
                    st.label,
                    json.dumps(list(st.flags)),
                    st.device,
                    st.access_type.value,
                    st.state.value,
                ),
            )

    def remove_staging(self, volume_id: str, staging_path: str) -> None:
        with self.transaction(durable=False) as db:
            db.execute(
                "DELETE FROM stagings WHERE volume_id=? AND staging_path=?",
                (volume_id, staging_path),
            )

    def stagings(self, volume_id: str | None = None) -> list[Staging]:
        rows = self._rows(
            "SELECT volume_id, staging_path, label, flags, device, access_type, state FROM stagings",
            volume_id,
        )
        return [
            Staging(
                r[0],
                r[1],
                r[2],
                tuple(json.loads(r[3])),
                r[4],
                AccessType(r[5]),
                StagingState(r[6]),
            )
            for r in rows
        ]

    # publications

    def put_publication(self, pub: Publication) -> None:
        with self.transaction(durable=False) as db:
            db.execute(
                "INSERT OR REPLACE INTO publications (volume_id, target_path, staging_path,"
                " read_only, label, flags, access_mode, device) VALUES (?,?,?,?,?,?,?,?)",
                (
                    pub.volume_id,
                    pub.target_path,
                    pub.staging_path,
                    int(pub.read_only),
                    pub.label,
                    json.dumps(list(pub.flags)),
                    pub.access_mode,
                    pub.device,
                ),
            )

    def remove_publication(self, volume_id: str, target_path: str) -> None:
        with self.transaction(durable=False) as db:
            db.execute(
                "DELETE FROM publications WHERE volume_id=? AND target_path=?",
                (volume_id, target_path),
            )

    def publications(self, volume_id: str | None = None) -> list[Publication]:
        rows = self._rows(
            "SELECT volume_id, target_path, staging_path, read_only, label, flags, access_mode,"
            " device FROM publications",
            volume_id,
        )
        return [
            Publication(r[0], r[1], r[2], bool(r[3]), r[4], tuple(json.loads(r[5])), r[6], r[7])
            for r in rows
        ]

    def claims(self, path: str) -> list[tuple[str, str]]:
        """(volume id, path) of every staging and publication at path or at a parent of it."""
        query = (
            "SELECT volume_id, staging_path FROM stagings WHERE staging_path = :p"
            " OR substr(:p, 1, length(staging_path) + 1) = staging_path || '/'"
            " UNION ALL SELECT volume_id, target_path FROM publications WHERE target_path = :p"
            " OR substr(:p, 1, length(target_path) + 1) = target_path || '/'"
        )
        with self._lock:
            rows = self._db.execute(query, {"p": path}).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    # group snapshots

    def add_group_snapshot(self, group: GroupSnapshot, members: Sequence[Snapshot]) -> None:
        """Record a group and its member snapshots in one transaction: all of them or none."""
        with self.transaction() as db:
            for snap in members:
                db.execute(
                    "INSERT INTO snapshots (id, name, source_volume_id, size_bytes, created_at,"
                    " ready, source_access_type, kind) VALUES (?,?,?,?,?,?,?,"
                    " COALESCE(NULLIF(?, ''), (SELECT kind FROM volumes WHERE id=?), ''))",
                    (
                        snap.id,
                        snap.name,
                        snap.source_volume_id,
                        snap.size_bytes,
                        snap.created_at,
                        int(snap.ready),
                        snap.source_access_type,
                        snap.kind,
                        snap.source_volume_id,
                    ),
                )
            db.execute(
                "INSERT INTO volume_group_snapshots (id, name, created_at, members)"
                " VALUES (?,?,?,?)",
                (
                    group.id,
                    group.name,
                    group.created_at,
                    json.dumps([[m.volume_id, m.snapshot_id] for m in group.members]),
                ),
            )

    def remove_group_snapshot(self, group_id: str) -> None:
        """Forget a group and its member snapshots in one transaction."""
        with self.transaction() as db:
            row = db.execute(
                _GROUP_SELECT + " WHERE id=?",
                (group_id,),
            ).fetchone()
            if row is None:
                return
            for member in _group_snapshot(row).members:
                db.execute("DELETE FROM snapshots WHERE id=?", (member.snapshot_id,))
            db.execute("DELETE FROM volume_group_snapshots WHERE id=?", (group_id,))

    def group_snapshot(self, group_id: str) -> GroupSnapshot | None:
        with self._lock:
            row = self._db.execute(_GROUP_SELECT + " WHERE id=?", (group_id,)).fetchone()
        return _group_snapshot(row) if row else None

    def group_snapshot_by_name(self, name: str) -> GroupSnapshot | None:
        with self._lock:
            row = self._db.execute(_GROUP_SELECT + " WHERE name=?", (name,)).fetchone()
        return _group_snapshot(row) if row else None

    def group_of_snapshot(self, snapshot_id: str) -> str | None:
        """The id of the group snapshot that snapshot_id is a member of, or None."""
        with self._lock:
            rows = self._db.execute(
                _GROUP_SELECT + " WHERE instr(members, ?) > 0", (json.dumps(snapshot_id),)
            ).fetchall()
        for row in rows:
            group = _group_snapshot(row)
            if snapshot_id in group.snapshot_ids:
                return group.id
        return None


class _WalSync:
    """Makes the catalog's commits durable by fsyncing its WAL, off the caller's path.

    committed() notes a commit that must reach the disk; the syncing thread fsyncs at most
    DELAY seconds later, once for every commit noted by then. sync() returns once every commit
    noted before the call is on disk (fsyncing itself when needed). after_sync(action) runs
    action once every commit noted before the call is on disk.

    A sync first fsyncs dirs (statedir.sync_dirs: the intents and the storage's parents), then
    fdatasyncs the WAL. The first makes the filesystem commit its journal up to the entries
    made in dirs before the commits (intents, new storage); without it, a WAL that sqlite
    rewrites in place after a checkpoint reaches the disk with fdatasync alone, which commits
    no journal, and a row removal could then be on disk before the intent written just before
    it. One journal commit per sync, at most 1/DELAY per second, off the RPC path.

    Why not at once: an fsync of the WAL makes the filesystem commit its journal, and every
    mkdir, rmdir or create on that filesystem meanwhile waits for that commit: an fsync after
    each CreateVolume doubled the next DeleteVolume's time (docs/benchmarks.md).
    """

    #: Longest time a noted commit waits for the disk (unless sync() is called first).
    DELAY = 0.25

    def __init__(self, db_path: Path, dirs: Sequence[Path] = ()) -> None:
        self._wal = db_path.with_name(db_path.name + "-wal")
        self._dirs = tuple(dirs)
        self._cond = threading.Condition()
        #: (commits noted when it was registered, action): run once those are on disk.
        self._waiting: list[tuple[int, Callable[[], None]]] = []
        self._noted = 0  # commits noted so far
        self._synced = 0  # commits known to be on disk
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="catalog-sync", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        with self._cond:
            if self._synced >= self._noted:
                self._cond.notify_all()  # the syncing thread is idle: start its countdown
            self._noted += 1

    def sync(self) -> None:
        with self._cond:
            target = self._noted
            if self._synced >= target:
                return
        self._fsync_up_to(target)

    def after_sync(self, action: Callable[[], None]) -> None:
        with self._cond:
            if self._synced < self._noted:
                self._waiting.append((self._noted, action))
                return
        action()

    def close(self) -> None:
        self.sync()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._synced >= self._noted and not self._closed:
                    self._cond.wait()
                # Gather the commits of the next DELAY seconds into one fsync.
                deadline = time.monotonic() + self.DELAY
                while not self._closed and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                if self._closed:
                    return
                target = self._noted
            try:
                self._fsync_up_to(target)
            except OSError:
                # Left to the next sync() on a caller's path, where the error is reported.
                with self._cond:
                    self._cond.wait(0.1)

    def _fsync_up_to(self, target: int) -> None:
        """fsync the dirs, then fdatasync the WAL; every commit appended before this call, and
        every entry made in the dirs before it, is then on disk. Then run what waited for it.

        The WAL gets fdatasync, as sqlite itself does: it skips the timestamps, so once the WAL
        has wrapped (sqlite rewrites it from the start after a checkpoint) it is a flush of the
        rewritten pages. The one journal commit of a sync is the dirs' (see the class)."""
        for directory in self._dirs:
            with suppress(FileNotFoundError):  # not made yet: nothing in it to sync
                _fsync_path(directory)
        # No WAL: sqlite checkpointed it into the database file and synced that.
        with suppress(FileNotFoundError):
            _fsync_path(self._wal, data_only=True)
        with self._cond:
            self._synced = max(self._synced, target)
            due = [action for noted, action in self._waiting if noted <= self._synced]
            self._waiting = [(n, a) for n, a in self._waiting if n > self._synced]
        for action in due:
            try:
                action()
            except OSError:
                log.exception("an action after the catalog's sync failed")


def _fsync_path(path: Path, data_only: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if data_only:
            os.fdatasync(fd)
        else:
            os.fsync(fd)
    finally:
        os.close(fd)


_VOLUME_SELECT = (
    "SELECT id, name, kind, capacity_bytes, access_type, fs_type, parameters, content_source,"
    " ephemeral, created_at FROM volumes"
)
_SNAPSHOT_SELECT = (
    "SELECT id, name, source_volume_id, size_bytes, created_at, ready, source_access_type, kind"
    " FROM snapshots"
)
_SNAPSHOT_PAGE = (
    "SELECT id, name, source_volume_id, size_bytes, created_at, ready, source_access_type, kind,"
    " seq"
    " FROM snapshots WHERE seq > ?"
)


def _volume(row: tuple[object, ...]) -> Volume:
    return Volume(
        id=str(row[0]),
        name=str(row[1]),
        kind=str(row[2]),
        capacity_bytes=int(str(row[3])),
        access_type=AccessType(str(row[4])),
        fs_type=str(row[5]),
        parameters=dict(json.loads(str(row[6]))),
        content_source=str(row[7]),
        ephemeral=bool(row[8]),
        created_at=float(str(row[9])),
    )


def _snapshot(row: tuple[object, ...]) -> Snapshot:
    return Snapshot(
        id=str(row[0]),
        name=str(row[1]),
        source_volume_id=str(row[2]),
        size_bytes=int(str(row[3])),
        created_at=float(str(row[4])),
        ready=bool(row[5]),
        source_access_type=str(row[6]),
        kind=str(row[7]),
    )


# group snapshots


@dataclass(frozen=True)
class GroupMember:
    volume_id: str
    snapshot_id: str


@dataclass(frozen=True)
class GroupSnapshot:
    """A volume group snapshot: snapshots of several volumes taken at one point in time."""

    id: str
    name: str
    created_at: float
    members: tuple[GroupMember, ...]

    @property
    def snapshot_ids(self) -> list[str]:
        return [m.snapshot_id for m in self.members]

    @property
    def volume_ids(self) -> list[str]:
        return [m.volume_id for m in self.members]


_GROUP_SELECT = "SELECT id, name, created_at, members FROM volume_group_snapshots"


def _group_snapshot(row: tuple[object, ...]) -> GroupSnapshot:
    return GroupSnapshot(
        id=str(row[0]),
        name=str(row[1]),
        created_at=float(str(row[2])),
        members=tuple(GroupMember(str(v), str(s)) for v, s in json.loads(str(row[3]))),
    )
