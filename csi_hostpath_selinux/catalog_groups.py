"""The catalog's group snapshots: a group's row, its members' rows (group_snapshot_members, in
the group's order) and the members' snapshot rows, written and removed in one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .catalog_core import CatalogCore
from .catalog_volumes import insert_snapshot
from .models import GroupMember, GroupSnapshot, Snapshot


class GroupRows(CatalogCore):
    """Volume group snapshots."""

    def add_group_snapshot(self, group: GroupSnapshot, members: Sequence[Snapshot]) -> None:
        """Record a group and its member snapshots in one transaction: all of them or none."""
        with self.transaction() as db:
            for snap in members:
                insert_snapshot(db, snap)
            db.execute(
                "INSERT INTO volume_group_snapshots (id, name, created_at) VALUES (?,?,?)",
                (group.id, group.name, group.created_at),
            )
            db.executemany(
                "INSERT INTO group_snapshot_members (group_id, snapshot_id, volume_id, position)"
                " VALUES (?,?,?,?)",
                [
                    (group.id, m.snapshot_id, m.volume_id, position)
                    for position, m in enumerate(group.members)
                ],
            )

    def remove_group_snapshot(self, group_id: str) -> None:
        """Forget a group, its members and their snapshots in one transaction."""
        with self.transaction() as db:
            db.execute(
                "DELETE FROM snapshots WHERE id IN"
                " (SELECT snapshot_id FROM group_snapshot_members WHERE group_id=?)",
                (group_id,),
            )
            db.execute("DELETE FROM group_snapshot_members WHERE group_id=?", (group_id,))
            db.execute("DELETE FROM volume_group_snapshots WHERE id=?", (group_id,))

    def group_snapshot(self, group_id: str) -> GroupSnapshot | None:
        with self._lock:
            return _group(self._db, "id", group_id)

    def group_snapshot_by_name(self, name: str) -> GroupSnapshot | None:
        with self._lock:
            return _group(self._db, "name", name)

    def group_of_snapshot(self, snapshot_id: str) -> str | None:
        """The id of the group snapshot that snapshot_id is a member of, or None."""
        row = self._one(
            "SELECT group_id FROM group_snapshot_members WHERE snapshot_id=?", (snapshot_id,)
        )
        return str(row[0]) if row else None


def _group(db: sqlite3.Connection, column: str, value: str) -> GroupSnapshot | None:
    """The group whose column ("id" or "name") is value, with its members in order."""
    row = db.execute(
        f"SELECT id, name, created_at FROM volume_group_snapshots WHERE {column}=?",  # noqa: S608
        (value,),
    ).fetchone()
    if row is None:
        return None
    members = db.execute(
        "SELECT volume_id, snapshot_id FROM group_snapshot_members WHERE group_id=?"
        " ORDER BY position",
        (row[0],),
    ).fetchall()
    return GroupSnapshot(
        id=str(row[0]),
        name=str(row[1]),
        created_at=float(row[2]),
        members=tuple(GroupMember(volume_id=str(v), snapshot_id=str(s)) for v, s in members),
    )
