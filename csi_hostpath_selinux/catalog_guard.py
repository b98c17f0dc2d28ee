"""The start-up check that the state directory's catalog is its own and lost no rows.

Start-up reconciliation removes storage the catalog does not list, because a driver killed
between making storage and recording it leaves such storage behind. But a catalog that lost
rows (a deleted or emptied `catalog.sqlite`, its `-wal` file lost after a kill, a file-level
restore that skipped it) also makes real volumes look unlisted. So storage counts as garbage only
when it is *proven* to be:

- its intent file is there (intents.py);
- the catalog carries an identity, written once into the catalog and beside it (`catalog.id`);
  a catalog that is new or empty while the state directory says one existed, or that belongs to
  another directory, is refused;
- anything else unlisted makes the driver refuse to start, with one line naming the files and
  the recovery step. Nothing is deleted, detached or unmounted before that check.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from .intents import intents, scan
from .state import Catalog

IDENTITY_FILE = "catalog.id"


class StateDirError(Exception):
    """The state directory cannot be served safely; the message is one line for the operator."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, text: str) -> None:
    """Write path atomically (temp file, fsync, rename, fsync of the directory)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    _fsync_dir(path.parent)


def _names(paths: list[Path], limit: int = 3) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


# the checks


def check(catalog: Catalog, state_dir: Path) -> None:
    """Refuse (StateDirError) a catalog that is not this directory's, or that lost storage rows.

    Writes the identity on first use. Changes nothing else, and deletes nothing.
    """
    marker = state_dir / IDENTITY_FILE
    try:
        recorded = marker.read_text().strip() or None
    except FileNotFoundError:
        recorded = None
    identity = catalog.identity()
    storage = scan(state_dir)
    pending = intents(state_dir)
    if identity is None:
        unproven = [p for i, p in storage.volumes.items() if i not in pending]
        unproven += [p for i, p in storage.snapshots.items() if i not in pending]
        if catalog.created and (recorded is not None or unproven):
            raise StateDirError(
                f"refusing to start: the catalog {catalog.path} is new or empty, but "
                f"{state_dir} was in use"
                + (f" ({IDENTITY_FILE} names catalog {recorded})" if recorded else "")
                + (
                    f" and holds {len(unproven)} volume/snapshot file(s) ({_names(unproven)})"
                    if unproven
                    else ""
                )
                + ": the catalog was lost or rolled back. Nothing was deleted. Restore "
                f"{catalog.path.name} together with its -wal file from a backup; or, to start "
                f"this node empty on purpose, move volumes/, snapshots/ and {IDENTITY_FILE} out "
                f"of {state_dir}"
            )
        # A first start, or a catalog written by a driver before identities existed.
        identity = recorded or uuid.uuid4().hex
        catalog.set_identity(identity)
    if recorded is None:
        _write_durably(marker, identity + "\n")
    elif recorded != identity:
        raise StateDirError(
            f"refusing to start: the catalog {catalog.path} is catalog {identity}, but "
            f"{state_dir}/{IDENTITY_FILE} says this directory's catalog is {recorded}: it was "
            "replaced by another node's or an older copy. Nothing was deleted. Put this "
            f"directory's own catalog (with its -wal file) back"
        )
    known_volumes = {v.id for v in catalog.all_volumes()}
    known_snapshots = {s.id for s in catalog.all_snapshots()}
    unproven = [
        p for i, p in storage.volumes.items() if i not in known_volumes and i not in pending
    ]
    unproven += [
        p for i, p in storage.snapshots.items() if i not in known_snapshots and i not in pending
    ]
    if unproven:
        raise StateDirError(
            f"refusing to start: the catalog {catalog.path} does not list {len(unproven)} "
            f"volume/snapshot file(s) in {state_dir} ({_names(unproven)}), and no unfinished "
            "create or delete explains them: the catalog lost committed changes (its -wal file "
            f"lost after a kill, or restored from an older backup). Nothing was deleted. Restore "
            f"{catalog.path.name} together with its -wal file from a backup; or move the listed "
            "files out of the state directory to start without them"
        )
