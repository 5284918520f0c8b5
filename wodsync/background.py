"""One way to run a loop beside the serving process: a daemon thread, started and stopped.

Why one base: the expiry loop, the seat guard's loop, the mail sender and the writer role's
watcher each run in a thread of their own until the process stops (or the daemon loses the
writer role); what differs is only their loop. Each stops at its next wait: `_stop` is the
event they wait on, and `_wake` unblocks a loop that waits on something else too.
"""

from __future__ import annotations

import threading

STOP_TIMEOUT_S = 60.0


class Background:
    """A loop (`_run`, the subclass's) in a daemon thread named `name`."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Ask the loop to end, and wait for it (bounded): a stopped loop writes nothing
        more."""
        self._stop.set()
        self._wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _wake(self) -> None:
        """A loop that also waits on another event wakes here (nothing by default)."""

    def _run(self) -> None:
        raise NotImplementedError
