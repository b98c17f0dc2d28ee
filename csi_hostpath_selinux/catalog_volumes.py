"""The catalog's volume and snapshot rows, and how a row maps to a Volume or a Snapshot
(content sources are stored as the text "snapshot:<id>", "volume:<id>" or "")."""

from __future__ import annotations

import json
import sqlite3

from .catalog_core import CatalogCore
from .models import AccessType, ContentSource, Snapshot, SourceType, Volume


class VolumeRows(CatalogCore):
    """Volumes and snapshots: durable commits (see CatalogCore.transaction)."""

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
                    encode_source(vol.content_source),
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
        row = self._one(_VOLUME_SELECT + " WHERE id=?", (volume_id,))
        return _volume(row) if row else None

    def volume_by_name(self, name: str) -> Volume | None:
        row = self._one(_VOLUME_SELECT + " WHERE name=?", (name,))
        return _volume(row) if row else None

    def volumes_page(self, after_seq: int, limit: int) -> tuple[list[Volume], int | None]:
        """Volumes in creation order after sequence number after_seq; also the next token or None."""
        query = _VOLUME_SELECT.replace(" FROM volumes", ", seq FROM volumes")
        query += " WHERE seq > ? ORDER BY seq LIMIT ?"
        rows = self._all(query, (after_seq, limit + 1 if limit else -1))
        more = bool(limit) and len(rows) > limit
        rows = rows[:limit] if limit else rows
        next_seq = rows[-1][-1] if more and rows else None
        return [_volume(r[:-1]) for r in rows], next_seq

    def volume_count(self) -> int:
        return int(self._one("SELECT count(*) FROM volumes")[0])

    def provisioned_bytes(self) -> int:
        """The sum of every volume's capacity (what GetCapacity's configured maximum limits)."""
        return int(self._one("SELECT coalesce(sum(capacity_bytes), 0) FROM volumes")[0])

    def all_volumes(self) -> list[Volume]:
        return [_volume(r) for r in self._all(_VOLUME_SELECT + " ORDER BY seq")]

    # snapshots

    def add_snapshot(self, snap: Snapshot) -> None:
        with self.transaction() as db:
            insert_snapshot(db, snap)

    def set_snapshot_kind(self, snapshot_id: str, kind: str) -> None:
        """Record the kind of a snapshot whose row predates the kind column."""
        with self.transaction() as db:
            db.execute("UPDATE snapshots SET kind=? WHERE id=? AND kind=''", (kind, snapshot_id))

    def remove_snapshot(self, snapshot_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM snapshots WHERE id=?", (snapshot_id,))

    def snapshot(self, snapshot_id: str) -> Snapshot | None:
        row = self._one(_SNAPSHOT_SELECT + " WHERE id=?", (snapshot_id,))
        return _snapshot(row) if row else None

    def snapshot_by_name(self, name: str) -> Snapshot | None:
        row = self._one(_SNAPSHOT_SELECT + " WHERE name=?", (name,))
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
        rows = self._all(query, (*args, limit + 1 if limit else -1))
        more = bool(limit) and len(rows) > limit
        rows = rows[:limit] if limit else rows
        next_seq = rows[-1][-1] if more and rows else None
        return [_snapshot(r[:-1]) for r in rows], next_seq

    def snapshots_of(self, volume_id: str) -> list[Snapshot]:
        rows = self._all(_SNAPSHOT_SELECT + " WHERE source_volume_id=? ORDER BY seq", (volume_id,))
        return [_snapshot(r) for r in rows]

    def all_snapshots(self) -> list[Snapshot]:
        return [_snapshot(r) for r in self._all(_SNAPSHOT_SELECT + " ORDER BY seq")]


def insert_snapshot(db: sqlite3.Connection, snap: Snapshot) -> None:
    """Insert snap's row in the caller's transaction (a row without a kind takes its source
    volume's)."""
    db.execute(
        "INSERT INTO snapshots (id, name, source_volume_id, size_bytes, created_at, ready,"
        " source_access_type, kind) VALUES (?,?,?,?,?,?,?,"
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


def encode_source(source: ContentSource | None) -> str:
    return f"{source.type.value}:{source.id}" if source else ""


def decode_source(text: str) -> ContentSource | None:
    if not text:
        return None
    kind, _, ident = text.partition(":")
    return ContentSource(type=SourceType(kind), id=ident)


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
        content_source=decode_source(str(row[7])),
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
