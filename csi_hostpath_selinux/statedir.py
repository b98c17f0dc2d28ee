"""The state directory's guards for serving it: one driver per directory, and room for the
catalog on a full disk.

The other guards live beside: intents.py (the proof that unlisted storage is garbage) and
catalog_guard.py (the start-up check that the catalog is this directory's and lost no rows).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

__all__ = [
    "LOW_SPACE_BYTES",
    "RESERVE_BYTES",
    "Reserve",
    "lock",
]

LOCK_FILE = "driver.lock"
RESERVE_FILE = "reserve"
MIB = 1024 * 1024
#: Space held back (a real, allocated file) so the catalog can commit on a full disk.
RESERVE_BYTES = 16 * MIB
#: Below this much free space, the next catalog write releases the reserve first. A WAL grows
#: by up to ~4 MiB (1000 pages) before sqlite checkpoints and reuses it.
LOW_SPACE_BYTES = 8 * MIB

log = logging.getLogger(__name__)


# one driver per state directory


def lock(state_dir: Path) -> int:
    """Take the state directory's exclusive lock for the life of the process; return its fd.

    Two drivers on one directory would each reconcile the other's work in flight (delete
    images not yet recorded, detach loop devices, mount one image twice). A second process
    waits here, serving nothing (its socket does not exist yet), until the first exits: a
    DaemonSet update then works with maxUnavailable (one pod at a time) and with maxSurge (the
    new pod waits for the old one). The kernel drops the lock when the process dies, kill -9
    included.
    """
    fd = os.open(
        state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            log.warning(
                "another driver process (pid %s, in its own PID namespace) serves %s; "
                "waiting for it to exit before serving",
                holder,
                state_dir,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
            log.info("the other driver exited; %s is this process's now", state_dir)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


# space for the catalog on a full disk


class Reserve:
    """RESERVE_BYTES kept allocated in the state directory, released when the disk fills.

    Sparse images, snapshots and pods' writes share the state directory's filesystem with the
    catalog. When the free space drops below LOW_SPACE_BYTES, the next catalog write first
    deletes the reserve, so unstaging, unpublishing and deleting keep committing; storage health
    reports StateDirFull while the reserve is gone, and it is allocated again once there is room.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / RESERVE_FILE
        self._lock = threading.Lock()
        self.held = False

    def free_bytes(self) -> int:
        st = os.statvfs(self.state_dir)
        return st.f_bavail * st.f_frsize

    def ensure(self) -> bool:
        """Allocate the reserve when it is missing and there is room; True when it is held."""
        with self._lock:
            try:
                st = self.path.lstat()
                if st.st_size == RESERVE_BYTES and st.st_blocks * 512 >= RESERVE_BYTES:
                    self.held = True
                    return True
            except FileNotFoundError:
                pass
            if self.free_bytes() < RESERVE_BYTES + 2 * LOW_SPACE_BYTES:
                self.path.unlink(missing_ok=True)  # a partial one would only pretend
                self.held = False
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
                os.fsync(fd)
            except OSError:
                os.close(fd)
                self.path.unlink(missing_ok=True)
                self.held = False
                return False
            os.close(fd)
            self.held = True
            return True

    def release(self) -> None:
        with self._lock:
            if self.held or self.path.exists():
                self.path.unlink(missing_ok=True)
                self.held = False
                log.warning(
                    "the state directory %s is nearly full: released the %d MiB reserve so the "
                    "catalog can still commit; new volumes and snapshots are refused until "
                    "space is freed",
                    self.state_dir,
                    RESERVE_BYTES // MIB,
                )

    def before_write(self) -> None:
        """The catalog's hook: free the reserve before a write that might not fit."""
        if self.held and self.free_bytes() < LOW_SPACE_BYTES:
            self.release()

    def start(self) -> None:
        """At start, before the catalog opens (opening needs a little space too)."""
        if self.free_bytes() < LOW_SPACE_BYTES:
            self.release()
        else:
            self.ensure()
