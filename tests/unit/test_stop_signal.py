"""The main thread learns of a stop signal whichever thread the kernel delivered it to."""

from __future__ import annotations

import signal
import threading

from csi_hostpath_selinux.stop_signal import stop_signals, wait_for_stop


def test_a_signal_delivered_to_another_thread_wakes_the_waiting_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_signals() as pipe:
        ready = threading.Event()
        release = threading.Event()

        def worker() -> None:
            ready.set()
            release.wait(10)

        thread = threading.Thread(target=worker)
        thread.start()
        ready.wait(10)
        assert thread.ident is not None
        signal.pthread_kill(thread.ident, signal.SIGTERM)
        assert wait_for_stop(pipe) is signal.SIGTERM
        release.set()
        thread.join(10)
    assert signal.getsignal(signal.SIGTERM) is before, "the previous handler is back"


def test_other_signals_on_the_pipe_do_not_count_as_a_stop() -> None:
    with stop_signals() as pipe:
        previous = signal.signal(signal.SIGUSR1, lambda *_: None)  # writes to the pipe too
        try:
            signal.raise_signal(signal.SIGUSR1)
            signal.raise_signal(signal.SIGINT)
            assert wait_for_stop(pipe) is signal.SIGINT
        finally:
            signal.signal(signal.SIGUSR1, previous)
