"""The durable catalog of volumes, snapshots, group snapshots, stagings and publications.

Catalog composes the catalog's parts: the connection and its transactions (catalog_core), the
schema and its migrations (catalog_schema), durability (catalog_sync) and the rows of each
record (catalog_volumes, catalog_node, catalog_groups). Readers get frozen dataclass copies;
nothing outside those modules sees a cursor or a row.
"""

from __future__ import annotations

from .catalog_core import CatalogError, tolerate_full_disk
from .catalog_groups import GroupRows
from .catalog_node import NodeRows
from .catalog_volumes import VolumeRows

__all__ = ["Catalog", "CatalogError", "tolerate_full_disk"]


class Catalog(VolumeRows, NodeRows, GroupRows):
    """Thread-safe access to the sqlite catalog in the state directory."""
