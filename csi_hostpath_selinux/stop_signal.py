"""Wait for SIGTERM or SIGINT in the main thread, whichever thread the kernel hands it to.

A process-directed signal goes to any thread that does not block it, and gRPC's threads do not.
CPython runs Python signal handlers only in the main thread, when it next executes bytecode: a
main thread asleep in `threading.Event.wait()` is woken only if the kernel picked it, so a
SIGTERM that landed on a gRPC thread was left pending until the kubelet's SIGKILL (seen as a
driver that ignored SIGTERM: a loop of stops hung at the sixth). Here the main thread sleeps in
read(2) on the pipe CPython's C-level handler writes the signal number to
(`signal.set_wakeup_fd`), which that handler does on whatever thread it runs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_signals() -> Iterator[int]:
    """Catch the stop signals while the block runs; yields the pipe to wait on (wait_for_stop)."""
    readable, writable = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(writable, False)
    previous_fd = signal.set_wakeup_fd(writable, warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, _note) for signum in STOP_SIGNALS}
    try:
        yield readable
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(readable)
        os.close(writable)


def wait_for_stop(readable: int) -> signal.Signals:
    """Block until a stop signal has arrived; return it."""
    while True:
        for number in os.read(readable, 64):  # PEP 475: EINTR is retried, the byte is there
            if number in STOP_SIGNALS:
                return signal.Signals(number)


def _note(signum: int, frame: object) -> None:
    """The Python-level handler: a no-op; its presence makes CPython write to the pipe."""
