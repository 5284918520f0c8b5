"""The daemon's guard loop: a round on every host every `guard.interval` seconds.

Why a thread of its own beside the reconcile loop: a round is one short agent call that takes
no host lock (it reads /proc and kills by pid; an idle server is stopped through the hub), so it
never waits behind an apply and an apply never waits behind it. A host known to be down (its
connection failed lately) is skipped until it answers again; a failing round is logged and the
next one tries again. The interval is the deployed catalog's: a commit changes it.
"""

from __future__ import annotations

import logging
import time

from wodsync.background import Background
from wodsync.guard.actions import Sentinel
from wodsync.logs import FIELDS
from wodsync.source.revision import NotDeployed

log = logging.getLogger("wodsync.guard")
TICK = 1.0  # seconds between two looks at which host is due


class GuardLoop(Background):
    """Each host's round when its `interval` is due, one host after the other."""

    def __init__(self, sentinel: Sentinel) -> None:
        super().__init__("wodsync-guard")
        self.sentinel = sentinel
        self._due: dict[str, float] = {}

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick()
            except Exception as exc:  # a bad tick never stops the loop
                log.warning("guard: %s", exc)

    def tick(self, now: float | None = None) -> list[str]:
        """Run the rounds that are due; returns the hosts checked."""
        try:
            catalog = self.sentinel.sessions.deployment().catalog
        except NotDeployed:
            return []
        if catalog.guard is None:
            return []
        now = time.monotonic() if now is None else now
        checked = []
        for name in sorted(catalog.hosts):
            if self._due.get(name, 0.0) > now:
                continue
            self._due[name] = now + catalog.guard.interval
            down = self.sentinel.sessions.connections.down(name)
            if down:
                log.info("guard: %s skipped: down (%s)", name, down)
                continue
            try:
                report = self.sentinel.run(name)
            except Exception as exc:  # the host or its agent failed: the next round retries
                log.warning("guard: round on %s failed: %s", name, exc,
                            extra={FIELDS: {"host": name}})
                continue
            checked.append(name)
            for line in report.errors:
                log.warning("guard: %s: %s", name, line, extra={FIELDS: {"host": name}})
        return checked
