"""The daemon's writer role, watched: writing stops at once when the writer lock is lost, and
starts again only after the lock is held again and the state re-read.

Why: on PostgreSQL the writer lock lives as long as one connection. A database restart ends it
silently; a daemon that never looked again kept deploying while a standby took the lock, and
both reconciled the same commit. So a thread asks every `every` seconds, on the lock's own
connection, whether this process still holds it (`WriterLock.check`; at once when a fence
found the loss first). On a loss it calls `stop_writing` (the loops pause, the batch in flight
is told to stop at a safe point, expiry stops), says so in the log and in `role`, and waits
for the lock like a standby at start. Once
it holds the lock again it calls `start_writing` (restore the last good revision, recover
sessions, fetch) before anything is written; if that fails, the lock is released and it waits
again. Host jobs also call `WriterLock.fence` right before they apply, for the seconds between
a loss and this thread noticing it. And a daemon that has just taken the lock on PostgreSQL waits
`grace` (two check intervals) before it writes: by then a previous holder whose connection died
has noticed and stopped, so two daemons never both say they are the writer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from wodsync.background import Background
from wodsync.store.lock import CHECK_S, POLL_S, WriterLock

log = logging.getLogger("wodsync.daemon")
WRITER, STANDBY = "writer", "standby"


def grace(lock: WriterLock, every: float = CHECK_S) -> float:
    """Seconds a new holder waits before writing: none for a flock (never lost while its
    holder lives), two check intervals for PostgreSQL's lock (a previous holder notices)."""
    return 0.0 if lock.store.backend == "sqlite" else 2 * every


def settle(lock: WriterLock, every: float = CHECK_S,
           until: threading.Event | None = None) -> None:
    """Wait out `grace` after taking the lock (logged when there is one)."""
    seconds = grace(lock, every)
    if seconds:
        log.info("writer: holding the writer lock; writing in %.0f s, once any previous "
                 "writer has noticed it lost the lock", seconds)
        if until is not None:
            until.wait(seconds)
        else:
            time.sleep(seconds)


class WriterRole(Background):
    """Watches `lock` (held when started) and moves the process between writer and standby."""

    def __init__(self, lock: WriterLock, stop_writing: Callable[[str], None],
                 start_writing: Callable[[], None], every: float = CHECK_S,
                 poll_s: float = POLL_S) -> None:
        super().__init__("wodsync-writer")
        self.lock = lock
        self.stop_writing, self.start_writing = stop_writing, start_writing
        self.every, self.poll_s = every, poll_s
        self.role, self.since = WRITER, datetime.now(UTC)
        self.reason: str | None = None
        self.losses = 0

    @property
    def writing(self) -> bool:
        return self.role == WRITER

    def to_json(self) -> dict[str, Any]:
        """For `/api/v1/status` and `/readyz`: which role, since when, and why a standby."""
        return {"role": self.role, "since": self.since.isoformat().replace("+00:00", "Z"),
                "reason": self.reason, "losses": self.losses}

    def _run(self) -> None:
        """Check every `every` seconds, or at once when a host job's fence found the loss."""
        while not self._stop.is_set():
            self.lock.dropped.wait(self.every)
            if self._stop.is_set():
                return
            why = self.lock.check()
            if why is not None:
                self._stand_by(f"the writer lock was lost: {why}")

    def _become(self, role: str, reason: str | None) -> None:
        self.role, self.since, self.reason = role, datetime.now(UTC), reason

    def _stand_by(self, why: str) -> None:
        """Stop writing now; wait for the lock; re-read state; write again."""
        self.losses += 1
        self._become(STANDBY, why)
        log.error("writer: %s; writing stopped, this daemon is a standby until it holds the "
                  "lock again", why)
        self.stop_writing(why)
        while not self._stop.is_set():
            self.lock.acquire(wait=True, poll_s=self.poll_s, until=self._stop)
            if not self.lock.held:
                return  # shutting down
            settle(self.lock, self.every, self._stop)
            if self._stop.is_set():
                return
            log.warning("writer: the writer lock is held again; re-reading state before "
                        "writing")
            self._become(WRITER, None)
            try:
                self.start_writing()
            except Exception as exc:  # the database went again: give the lock up, wait again
                failed = f"re-reading state failed: {type(exc).__name__}: {exc}"
                self._become(STANDBY, failed)
                log.error("writer: %s; waiting for the lock again", failed)
                self.stop_writing(failed)
                self.lock.release()
                continue
            log.warning("writer: this daemon is the writer again")
            return
