"""Admission of new volumes: a place of --max-volumes-per-node and bytes of --capacity are held
from CreateVolume's checks to its catalog insert, so concurrent creates cannot overshoot either
limit; a volume whose data is in the state directory must also fit in its free space.
No gRPC here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from . import statedir
from .config import DriverConfig
from .errors import ResourceExhausted
from .state import Catalog


class Admission:
    """Places and bytes held by creates between their checks and their catalog insert."""

    def __init__(self, config: DriverConfig, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self._lock = threading.Lock()
        self._admitting = 0
        self._admitting_bytes = 0

    @contextmanager
    def hold(self, size: int, in_state_dir: bool) -> Iterator[None]:
        """Hold one of --max-volumes-per-node's places and size bytes of --capacity from the
        checks to the catalog insert (in_state_dir: the data also needs the directory's space)."""
        with self._lock:
            if self.catalog.volume_count() + self._admitting >= self.config.max_volumes_per_node:
                raise ResourceExhausted(
                    f"node {self.config.node_id} already has {self.config.max_volumes_per_node} "
                    "volumes, the most this driver is configured for (--max-volumes-per-node)"
                )
            cap = self.config.max_capacity_bytes
            if cap:
                used = self.catalog.provisioned_bytes() + self._admitting_bytes
                if used + size > cap:
                    raise ResourceExhausted(
                        f"node {self.config.node_id} has {max(0, cap - used)} of its {cap} bytes "
                        f"of capacity (--capacity) left; this volume needs {size} bytes"
                    )
            if in_state_dir:
                self.check_free_space(size)
            self._admitting += 1
            self._admitting_bytes += size
        try:
            yield
        finally:
            with self._lock:
                self._admitting -= 1
                self._admitting_bytes -= size

    def check_free_space(self, size: int) -> None:
        """Refuse a volume bigger than the state directory's free space (less the catalog's
        headroom): it could never be filled. With --preallocate the allocation itself then
        guarantees the rest; without it, sparse volumes together may still exceed the disk."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.statvfs(self.config.state_dir)
        free = st.f_bavail * st.f_frsize - statedir.LOW_SPACE_BYTES
        if size > free:
            raise ResourceExhausted(
                f"node {self.config.node_id} has {max(0, free)} bytes free in its state "
                f"directory {self.config.state_dir}; this volume needs {size} bytes"
            )
