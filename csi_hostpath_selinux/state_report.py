"""`csi-hostpath-selinux state`: what the catalog says is on this node, read-only, as JSON.

The volumes the state directory holds, and the stagings and publications the driver believes are
in place (with their SELinux label and device), read through the driver's own catalog code on a
read-only SQLite connection (state.Catalog with read_only=True): safe beside a running driver,
and it changes nothing (no schema migration, no start-up reconciliation, no lock on the state
directory; with no driver running, SQLite leaves an empty -wal and a -shm file beside the
catalog, as any reader of a WAL database does). An operator compares it with the node's
mountinfo: once the driver has started, every staging and publication listed has its mount (a
reboot's records are dropped at start, see recovery.py).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, TextIO

from .config import CATALOG_NAME
from .state import Catalog, CatalogError


class StateReadError(Exception):
    pass


def read_state(catalog_path: Path) -> dict[str, Any]:
    """The catalog's volumes, stagings and publications as plain data; StateReadError when the
    file is missing or not a catalog of this driver's version."""
    try:
        catalog = Catalog(catalog_path, read_only=True)
    except CatalogError as exc:
        raise StateReadError(str(exc)) from exc
    try:
        volumes = catalog.all_volumes()
        stagings = sorted(catalog.stagings(), key=lambda s: (s.volume_id, s.staging_path))
        publications = sorted(catalog.publications(), key=lambda p: (p.volume_id, p.target_path))
    except sqlite3.Error as exc:
        raise StateReadError(f"{catalog_path} is not a readable catalog: {exc}") from exc
    finally:
        catalog.close()
    return {
        "catalog": str(catalog_path),
        "volumes": [
            {
                "id": v.id,
                "name": v.name,
                "kind": v.kind,
                "access_type": v.access_type.value,
                "fs_type": v.fs_type,
                "capacity_bytes": v.capacity_bytes,
                "ephemeral": v.ephemeral,
            }
            for v in volumes
        ],
        "stagings": [
            {
                "volume_id": s.volume_id,
                "staging_path": s.staging_path,
                "label": s.label,
                "mount_flags": list(s.flags),
                "device": s.device,
                "access_type": s.access_type.value,
                "state": s.state.value,
            }
            for s in stagings
        ],
        "publications": [
            {
                "volume_id": p.volume_id,
                "target_path": p.target_path,
                "staging_path": p.staging_path,
                "read_only": p.read_only,
                "label": p.label,
                "mount_flags": list(p.flags),
                "access_mode": p.access_mode.name,
                "device": p.device,
            }
            for p in publications
        ],
    }


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
