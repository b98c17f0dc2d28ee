"""`csi-hostpath-selinux state`: what the catalog says is on this node, read-only, as JSON.

The volumes the state directory holds, and the stagings and publications the driver believes are
in place (with their SELinux label and device), read from the catalog file through a read-only
SQLite connection: safe beside a running driver, and it changes nothing (no schema migration, no
start-up reconciliation, no lock on the state directory). An operator compares it with the node's
mountinfo: once the driver has started, every staging and publication listed has its mount (a
reboot's records are dropped at start, see recovery.py).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, TextIO

from .config import CATALOG_NAME
from .models import AccessMode


class StateReadError(Exception):
    pass


def _rows(db: sqlite3.Connection, query: str) -> list[sqlite3.Row]:
    return list(db.execute(query).fetchall())


def read_state(catalog: Path) -> dict[str, Any]:
    """The catalog's volumes, stagings and publications as plain data; StateReadError when the
    file is missing or not a catalog."""
    if not catalog.is_file():
        raise StateReadError(f"no catalog at {catalog}: is --state-dir the driver's?")
    try:
        db = sqlite3.connect(f"{catalog.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StateReadError(f"cannot open the catalog {catalog} read-only: {exc}") from exc
    db.row_factory = sqlite3.Row
    try:
        volumes = _rows(
            db,
            "SELECT id, name, kind, access_type, fs_type, capacity_bytes, ephemeral FROM volumes"
            " ORDER BY seq",
        )
        stagings = _rows(
            db,
            "SELECT volume_id, staging_path, label, flags, device, access_type, state"
            " FROM stagings ORDER BY volume_id, staging_path",
        )
        publications = _rows(
            db,
            "SELECT volume_id, target_path, staging_path, read_only, label, flags, access_mode,"
            " device FROM publications ORDER BY volume_id, target_path",
        )
    except sqlite3.Error as exc:
        raise StateReadError(f"{catalog} is not a readable catalog: {exc}") from exc
    finally:
        db.close()
    return {
        "catalog": str(catalog),
        "volumes": [
            {
                "id": r["id"],
                "name": r["name"],
                "kind": r["kind"],
                "access_type": r["access_type"],
                "fs_type": r["fs_type"],
                "capacity_bytes": r["capacity_bytes"],
                "ephemeral": bool(r["ephemeral"]),
            }
            for r in volumes
        ],
        "stagings": [
            {
                "volume_id": r["volume_id"],
                "staging_path": r["staging_path"],
                "label": r["label"],
                "mount_flags": json.loads(r["flags"]),
                "device": r["device"],
                "access_type": r["access_type"],
                "state": r["state"],
            }
            for r in stagings
        ],
        "publications": [
            {
                "volume_id": r["volume_id"],
                "target_path": r["target_path"],
                "staging_path": r["staging_path"],
                "read_only": bool(r["read_only"]),
                "label": r["label"],
                "mount_flags": json.loads(r["flags"]),
                "access_mode": _mode_name(r["access_mode"]),
                "device": r["device"],
            }
            for r in publications
        ],
    }


def _mode_name(value: int) -> str:
    try:
        return AccessMode(value).name
    except ValueError:
        return str(value)


def state(out: TextIO, err: TextIO, state_dir: Path) -> int:
    """Print the report as JSON; 0, or 1 with the reason on err when the catalog is unreadable."""
    try:
        report = read_state(state_dir / CATALOG_NAME)
    except StateReadError as exc:
        print(f"csi-hostpath-selinux state: {exc}", file=err)
        return 1
    json.dump(report, out, indent=2)
    out.write("\n")
    return 0
