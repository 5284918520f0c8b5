"""What every resource kind's controller half provides, and the context its pure diff writes
into.

A kind is two modules of one name. The controller half (`engine/kinds/<kind>.py`) has:

- `KIND` (its address kind; `ADDRESS_KINDS` when it owns more than one), `DATA` (the dataclass
  of its changes' data, for saved plans);
- `desired(ctx)` — pure: the catalog's wish for one host (None: not here);
- `probe(want)` — what the host half must look at (its `Probe`);
- `diff(plan)` — pure: facts and wish in, changes / no-ops / notes / errors out;
- `batch(want, changes)` — the part the host half applies (its `Part`; may carry secrets: it
  travels on stdin only).

The host half (`agent/kinds/<kind>.py`, standard library only, the only code shipped to a host)
declares `Probe`, `Facts` with their published shape `FACTS`, and `Part`, and has
`observe(probe, host)` (read-only; never a secret in the facts) and `PHASES`
(`(order, name, function(part, host))`, merged across kinds by order). The controller half
imports the host half's types and constants; the host half never imports the controller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wodsync.engine.change import Action, Address, Change, Noop


@dataclass
class PlanContext:
    """One host's diff in progress: kinds run in registry order and see earlier kinds' changes."""

    host: str
    want: dict[str, Any]
    facts: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    noops: list[Noop] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)   # the whole plan must not be applied
    # live sessions the plan would leave without their workshop: (session, workshop, seat)
    ending_sessions: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, action: Action, kind: str, name: str, detail: str = "",
            data: Any = None) -> Change:
        change = Change(action, Address(kind, name), detail, data)
        self.changes.append(change)
        return change

    def noop(self, kind: str, name: str, reason: str) -> None:
        self.noops.append(Noop(Address(kind, name), reason))

    def planned(self, kind: str, action: Action | None = None) -> list[Change]:
        return [c for c in self.changes if c.address.kind == kind
                and (action is None or c.action == action)]

    def in_use(self) -> dict[str, str]:
        """Seats given to live sessions — by the store or by the host's own records."""
        seats = self.want.get("seat")
        found = dict(seats.sessions) if seats else {}
        for user, record in self.facts.get("seat", {}).get("occupied", {}).items():
            found.setdefault(user, record.get("session") or "?")
        return found

    def held_on_host(self) -> set[str]:
        """Seats the host records in use for a session the store does not know: another
        store's, or a CREATE that came after this plan read the store's sessions. What such a
        seat holds (its hub group, egress rules, limits) is left as it is; `seat` notes it."""
        seats = self.want.get("seat")
        known = seats.sessions if seats else {}
        occupied = self.facts.get("seat", {}).get("occupied", {})
        return {user for user in occupied if user not in known}

    def names(self, kind: str, action: Action | None = None) -> set[str]:
        return {c.address.name for c in self.planned(kind, action)}
