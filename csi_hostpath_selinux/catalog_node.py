"""The catalog's node rows: stagings, publications, and which of them claim a path.

Their commits are not synced on their own (see CatalogCore.transaction, durable=False): after a
power cut their mounts are gone and start-up reconciliation drops them.
"""

from __future__ import annotations

import json
from typing import Any

from .catalog_core import CatalogCore
from .models import AccessMode, AccessType, Publication, Staging, StagingState


class NodeRows(CatalogCore):
    """Stagings and publications."""

    def _rows(self, query: str, volume_id: str | None) -> list[Any]:
        """Every row of query, or only the volume's when volume_id is given."""
        if volume_id is None:
            return self._all(query)
        return self._all(query + " WHERE volume_id=?", (volume_id,))

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
                volume_id=r[0],
                staging_path=r[1],
                label=r[2],
                flags=tuple(json.loads(r[3])),
                device=r[4],
                access_type=AccessType(r[5]),
                state=StagingState(r[6]),
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
                    int(pub.access_mode),
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
            Publication(
                volume_id=r[0],
                target_path=r[1],
                staging_path=r[2],
                read_only=bool(r[3]),
                label=r[4],
                flags=tuple(json.loads(r[5])),
                access_mode=AccessMode(r[6]),
                device=r[7],
            )
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
