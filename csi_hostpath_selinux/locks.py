"""Per-volume operation locks: a second operation on a busy volume gets ABORTED, as the spec asks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Aborted


class OperationLocks:
    """A set of keys (volume ids, names) with an operation in progress."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._busy: set[str] = set()

    @contextmanager
    def hold(self, *keys: str) -> Iterator[None]:
        """Hold every key for the block, or raise Aborted at once if any is busy."""
        wanted = {k for k in keys if k}
        with self._mutex:
            busy = sorted(wanted & self._busy)
            if busy:
                raise Aborted(
                    f"an operation on {busy[0]} is already in progress; the request will be retried"
                )
            self._busy |= wanted
        try:
            yield
        finally:
            with self._mutex:
                self._busy -= wanted
