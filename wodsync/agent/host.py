"""What the kinds of one agent call share on the host: state folder, inventory, log, failures.

A failure in one phase of a batch is recorded against that phase and the batch goes on: a
failing `on_change` command or an invalid sysctl value must not keep a pool's accounts from
being created. The controller may ask the call to stop (it closes the call's stdin, as on
Ctrl-C): phases then stop at their next safe point, and what was not done is reported.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Callable
from typing import Any

from wodsync.agent.inventory import Inventory
from wodsync.agent.protocol import PROGRESS_MARK, Failure


class Stopped(Exception):
    """The controller asked this call to stop; the phase ended at a safe point."""


class HostSide:
    def __init__(self, state_dir: str, owner: str | None = None) -> None:
        self.state_dir = state_dir
        self.owner = owner
        self._inventory: Inventory | None = None
        self._inventory_lock = threading.Lock()  # the kinds are observed side by side
        self.log: list[str] = []
        self.failures: list[Failure] = []
        self.timings: dict[str, float] = {}
        self.stop_requested = threading.Event()
        # Where progress goes while the call runs, when the request asks for it (None: not).
        self.report: Callable[[dict[str, Any]], None] | None = None
        self._step: dict[str, Any] = {}

    def progress(self, detail: str = "", **step: Any) -> None:
        """Tell the controller, while the call runs, what the host is doing now (a phase and
        its position, or what a long phase is at: `detail`). Nothing when not asked for."""
        if self.report is None:
            return
        self._step.update(step)
        self.report({**self._step, "detail": detail})

    @property
    def inventory(self) -> Inventory:
        """Read on first use: an unreadable inventory raises and the host is left alone."""
        with self._inventory_lock:
            if self._inventory is None:
                self._inventory = Inventory(self.state_dir, self.owner)
            return self._inventory

    def say(self, message: str) -> None:
        self.log.append(message)

    def fail(self, phase: str, message: str) -> None:
        self.failures.append({"phase": phase, "error": message})

    def checkpoint(self) -> None:
        """A safe point in a long phase: stop here if the controller asked."""
        if self.stop_requested.is_set():
            raise Stopped("the controller asked to stop")


def to_stderr(step: dict[str, Any]) -> None:
    """A one-shot call's progress: a marked line on stderr, read by the controller as it
    comes (its stdout holds only the answer)."""
    sys.stderr.write(PROGRESS_MARK + json.dumps(step) + "\n")
    sys.stderr.flush()


def digest(facts: Any) -> str:
    """A stable digest of one kind's facts: equal facts, equal digests, on any host."""
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
