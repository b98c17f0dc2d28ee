"""Makes the catalog's commits durable: the WAL syncer and the fsync helper it uses."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

log = logging.getLogger(__name__)


class WalSync:
    """Makes the catalog's commits durable by fsyncing its WAL, off the caller's path.

    committed() notes a commit that must reach the disk; the syncing thread fsyncs at most
    DELAY seconds later, once for every commit noted by then. sync() returns once every commit
    noted before the call is on disk (fsyncing itself when needed). after_sync(action) runs
    action once every commit noted before the call is on disk.

    A sync first fsyncs dirs (intents.sync_dirs: the intents and the storage's parents), then
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
                fsync_path(directory)
        # No WAL: sqlite checkpointed it into the database file and synced that.
        with suppress(FileNotFoundError):
            fsync_path(self._wal, data_only=True)
        with self._cond:
            self._synced = max(self._synced, target)
            due = [action for noted, action in self._waiting if noted <= self._synced]
            self._waiting = [(n, a) for n, a in self._waiting if n > self._synced]
        for action in due:
            try:
                action()
            except OSError:
                log.exception("an action after the catalog's sync failed")


def fsync_path(path: Path, data_only: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if data_only:
            os.fdatasync(fd)
        else:
            os.fsync(fd)
    finally:
        os.close(fd)
