"""Completion of a session: executed code cells over code cells of the workshop's notebooks.

The host counts (`agent.completion`): it reads each notebook with bounds and sends two integers
per notebook, or why it could not count one — a notebook a student broke counts as not there,
and never stops the seat's release nor costs the controller more than those integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Completion:
    """Percent of code cells executed (None when no notebook had code cells), and the
    notebooks that could not be counted, with why."""

    percent: float | None
    uncounted: list[str] = field(default_factory=list)

    def text(self) -> str:
        done = "-" if self.percent is None else f"{self.percent:g}%"
        if not self.uncounted:
            return f"completion {done}"
        return f"completion {done} (not counted: {'; '.join(self.uncounted[:5])})"


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        executed, code = value
        return (executed, code) if executed <= code else None
    return None


def completion(counts: dict[str, Any] | None) -> Completion:
    """From the host's answer: notebook → [executed, code] or {"error": why}."""
    executed = total = 0
    uncounted = []
    for rel, value in sorted((counts or {}).items()):
        pair = _pair(value)
        if pair is None:
            why = value.get("error") if isinstance(value, dict) else None
            uncounted.append(f"{rel}: {str(why or 'unreadable')[:200]}")
            continue
        executed, total = executed + pair[0], total + pair[1]
    percent = round(100.0 * executed / total, 1) if total else None
    return Completion(percent, uncounted)
