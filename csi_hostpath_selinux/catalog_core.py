"""The catalog's connection: opening (schema, migrations), write transactions and their
durability, the catalog's identity, and what callers do on a full disk.

Every change is one transaction, so a kill -9 leaves either the old or the new row, never half
of one. The row mixins (catalog_volumes, catalog_node, catalog_groups) build on CatalogCore;
state.Catalog composes them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import catalog_sync
from .catalog_schema import SCHEMA_VERSION, migrate

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


class CatalogCore:
    """Thread-safe access to the sqlite catalog in the state directory."""

    def __init__(
        self,
        path: Path,
        before_write: Callable[[], None] | None = None,
        sync_dirs: Sequence[Path] = (),
        *,
        read_only: bool = False,
    ) -> None:
        """sync_dirs: directories fsynced before each sync of the WAL (intents.sync_dirs), so
        that what was created or removed in them before a commit is on disk with the commit.

        read_only: only read an existing catalog of this schema version (CatalogError
        otherwise), beside a running driver: no file is created, migrated or written, and every
        write raises CatalogError (`csi-hostpath-selinux state` reads this way)."""
        self.path = path
        #: Called before every write transaction (statedir.Reserve frees space on a full disk).
        self._before_write = before_write
        self._lock = threading.RLock()
        self._wal_sync: catalog_sync.WalSync | None = None
        if read_only:
            self._db = _open_read_only(path)
            self.created = False
            return
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Commits are appended to the WAL without waiting for the disk; WalSync makes them
        # durable (see transaction()). Checkpoints still sync the WAL and the database file.
        self._db.execute("PRAGMA synchronous=NORMAL")
        wal_sync = catalog_sync.WalSync(path, sync_dirs)
        self._wal_sync = wal_sync
        self._db.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {path} has schema version {version}; this driver needs "
                    f"{SCHEMA_VERSION} or older"
                )
            #: The file held no catalog before this open (missing, 0 bytes, or emptied).
            self.created = migrate(db) == 0

        # The schema, the WAL and their directory entries are on disk before the first RPC.
        wal_sync.sync()
        catalog_sync.fsync_path(path)
        catalog_sync.fsync_path(path.parent)

    def close(self) -> None:
        with self._lock:
            if self._wal_sync is not None:
                self._wal_sync.close()
            self._db.close()

    def _writer(self) -> catalog_sync.WalSync:
        """The WAL's syncer; CatalogError on a catalog opened read-only."""
        if self._wal_sync is None:
            raise CatalogError(f"the catalog {self.path} is open read-only")
        return self._wal_sync

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One serialized write transaction: committed on success, rolled back on any error.

        Every commit survives kill -9: it is in the WAL (the kernel's page cache) when COMMIT
        returns. What reaches the disk, and so survives a power cut:
        - durable=True (volumes, snapshots): a background thread syncs at most WalSync.DELAY
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
        wal_sync = self._writer()
        if not durable:
            wal_sync.sync()
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
                wal_sync.committed()

    def after_sync(self, action: Callable[[], None]) -> None:
        """Run action once every commit made so far is on disk: at once (in this thread) when
        it already is, else in the syncing thread right after the sync that covers it."""
        self._writer().after_sync(action)

    def sync(self) -> None:
        """Return once every commit made so far is on disk."""
        self._writer().sync()

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

    def _all(self, query: str, args: Sequence[object] = ()) -> list[Any]:
        """Every row of a read-only query, under the catalog's lock."""
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def _one(self, query: str, args: Sequence[object] = ()) -> Any:
        """The first row of a read-only query (None when there is none)."""
        with self._lock:
            return self._db.execute(query, args).fetchone()


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the catalog at path, checked to be one of this version."""
    if not path.is_file():
        raise CatalogError(f"no catalog at {path}: is --state-dir the driver's?")
    try:
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            check_same_thread=False,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise CatalogError(f"cannot open the catalog {path} read-only: {exc}") from exc
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        db.execute("SELECT count(*) FROM volumes").fetchone()
    except sqlite3.Error as exc:
        db.close()
        raise CatalogError(f"{path} is not a readable catalog: {exc}") from exc
    if version != SCHEMA_VERSION:
        db.close()
        raise CatalogError(
            f"the catalog {path} has schema version {version} and this driver reads version "
            f"{SCHEMA_VERSION}: the driver of this version migrates it when it starts"
        )
    return db
