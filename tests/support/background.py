"""A loop that runs in a thread of its own for the length of a `with` block: the racing swapper,
the watchers that sample the host while a race runs, the loop-device churn."""

from __future__ import annotations

import threading
from typing import Self


class Background:
    """Subclasses implement run(), looping until self.stop is set, and may add finish().

    `with` starts the thread; leaving the block sets stop, waits for the thread, then calls
    finish() (a last sample, the clean-up of what the loop left)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """After the thread has ended."""

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.finish()
