"""Each host on its own clock: when a host is next due, and why.

Why a module of its own: a reconcile round used to wait for every host before the next one
started, so one slow host (a first hub install takes minutes) held back the other hosts'
retries and the next commit. Here every host has its own next-due time and trigger:

- a new commit (webhook, manual reconcile) makes every host due now; a host busy with the
  previous revision gets the new one as soon as it finishes. A job already working on the
  revision a commit names (it started a moment before the event reached the schedule: a
  daemon's first round) is not run again for it;
- a host that converged is due again `resync` seconds after its own last run ended;
- a host that failed is due when its back-off is over (`hosts.backoff`, its
  `next_attempt_at` in the store);
- a failed hub probe makes its host due now (trigger `probe`).

A host is never started twice at once: `take` marks it running, `finished` frees it. The
schedule holds no thread and does no I/O, so it is tested on its own; the reconcile loop
(`wodsync.daemon.loop`) asks it what is due and runs that in a bounded pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from wodsync.store import Trigger


@dataclass
class HostClock:
    due_at: float            # monotonic seconds
    trigger: Trigger
    running: bool = False
    revision: str | None = None  # what the running job works on, once it said (`started`)


class Schedule:
    """Per host, the next-due time and its trigger; `now` is a monotonic clock."""

    def __init__(self, resync: float, now: Callable[[], float] = time.monotonic) -> None:
        self.resync = resync
        self.now = now
        self._clocks: dict[str, HostClock] = {}
        self._lock = threading.Lock()

    def hosts(self, names: Iterable[str], trigger: Trigger = Trigger.COMMIT) -> None:
        """The hosts of the deployed catalog: a new one is due now, one gone is forgotten
        (once it is not running)."""
        wanted = set(names)
        with self._lock:
            for name in wanted - self._clocks.keys():
                self._clocks[name] = HostClock(self.now(), trigger)
            for name in [n for n, c in self._clocks.items() if n not in wanted
                         and not c.running]:
                del self._clocks[name]

    def due_now(self, trigger: Trigger, names: Iterable[str] | None = None,
                revision: str | None = None) -> None:
        """An event: these hosts (default: all) are due now with `trigger`; a running one
        starts again with it once it finishes — unless the event is only a new `revision`
        and the running job already works on it."""
        with self._lock:
            for name, clock in self._clocks.items():
                if names is not None and name not in names:
                    continue
                if revision is not None and clock.running and clock.revision == revision:
                    continue
                clock.due_at, clock.trigger = min(clock.due_at, self.now()), trigger

    def started(self, name: str, revision: str) -> None:
        """The running job of `name` read its deployment: it works on `revision`."""
        with self._lock:
            clock = self._clocks.get(name)
            if clock is not None and clock.running:
                clock.revision = revision

    def take(self, limit: int | None = None) -> list[tuple[str, Trigger]]:
        """Up to `limit` (default: all) idle hosts whose time has come, soonest first, marked
        running. Their
        clocks restart: an event from now on is one their job (which reads the deployment
        after this) may not have seen, and makes them due again when it ends."""
        if limit is not None and limit <= 0:
            return []
        now = self.now()
        with self._lock:
            due = sorted((c.due_at, n) for n, c in self._clocks.items()
                         if not c.running and c.due_at <= now)[:limit]
            taken = []
            for _, name in due:
                clock = self._clocks[name]
                taken.append((name, clock.trigger))
                clock.running, clock.due_at, clock.trigger = True, float("inf"), Trigger.RESYNC
                clock.revision = None
            return taken

    def finished(self, name: str, retry_in: float | None) -> None:
        """A host's job ended: due again after `retry_in` seconds (its back-off) when it
        failed, after `resync` when it converged — or at once when an event came meanwhile."""
        with self._lock:
            clock = self._clocks.get(name)
            if clock is None:
                return
            clock.running, clock.revision = False, None
            wait = self.resync if retry_in is None else max(0.0, retry_in)
            clock.due_at = min(clock.due_at, self.now() + wait)

    def next_in(self) -> float | None:
        """Seconds until the next idle host is due (0: now), None when none is waiting."""
        with self._lock:
            idle = [c.due_at for c in self._clocks.values() if not c.running]
        return max(0.0, min(idle) - self.now()) if idle else None

    def running(self) -> list[str]:
        with self._lock:
            return sorted(n for n, c in self._clocks.items() if c.running)

    def clock(self, name: str) -> HostClock | None:
        with self._lock:
            clock = self._clocks.get(name)
            return HostClock(clock.due_at, clock.trigger, clock.running) if clock else None
