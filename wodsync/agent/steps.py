"""The record of one seat operation, step by step: each step's seconds, the hooks' outputs and
notes — what a seat's answer carries back, so a slow or failing CREATE says where.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, cast

from wodsync.agent.protocol import HookOutput, SeatAnswer


class Steps:
    """Timings and hook outputs of one seat operation, step by step."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.outputs: list[HookOutput] = []
        self.notes: list[str] = []
        self.current = ""

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.current = name
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - start, 4)

    def answer(self, **extra: Any) -> SeatAnswer:
        """A seat's answer: the steps' record with `extra` (`ok`, `error`, …)."""
        return cast(SeatAnswer, {"timings": self.timings, "outputs": self.outputs,
                                 "notes": self.notes, **extra})
