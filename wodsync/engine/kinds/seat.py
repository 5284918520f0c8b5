"""seat, controller half: seats given to sessions, as a full apply must know them (the host
half, `agent.kinds.seat`, reads the host's records). The seat operations themselves — CREATE,
CLEANUP, RESET, PURGE — are the agent's (`agent.seats`); this kind only makes sure a catalog
edit never takes a seat in use.

Each seat in use is recorded on the host (`agent.records`), so a full apply never locks or
empties it even if the controller's store were lost; the accounts kind reads these records. A
catalog edit that removes a workshop or a host with live sessions would leave those seats with
their password and server and nobody to release them: the plan names those sessions and is
refused unless deletions are allowed, in which case the daemon (or `apply`) ends them first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from wodsync.agent.kinds.seat import KIND, Facts, Occupied, Probe

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext


@dataclass(frozen=True)
class Seats:
    """Seats of this host given to live sessions: user → session id, user → its workshop, and
    the workshops the catalog still has (active ones apart)."""

    sessions: dict[str, str]
    workshops: dict[str, str]
    known: frozenset[str] = frozenset()
    inactive: frozenset[str] = frozenset()


DATA = None  # a seat is never changed by a plan: no batch either


def desired(ctx: DesiredContext) -> Seats:
    workshops = ctx.catalog.workshops
    return Seats({s.username: s.session for s in ctx.live_seats},
                 {s.username: s.workshop for s in ctx.live_seats},
                 frozenset(workshops),
                 frozenset(k for k, ws in workshops.items() if not ws.active))


def probe(want: Seats) -> Probe:
    return {}


def diff(plan: PlanContext) -> None:
    want: Seats = plan.want[KIND]
    facts: Facts = plan.facts[KIND]
    occupied = facts["occupied"]
    for user, record in sorted(occupied.items()):
        session = want.sessions.get(user)
        if session is None:
            plan.notes.append(f"seat {user} holds session {record['session']} on the host, "
                              "unknown to the store: left alone (`wodsync seat sync` adopts it)")
        elif session != record["session"]:
            plan.notes.append(f"seat {user} holds session {record['session']} on the host, "
                              f"the store says {session}: left alone")
        else:
            plan.noop(KIND, user, f"is in use by session {session}")
    for user, session in sorted(want.sessions.items()):
        if user not in occupied:
            plan.notes.append(f"session {session} has no record of seat {user} on the host")
    _orphans(plan, want, occupied)


def _orphans(plan: PlanContext, want: Seats, occupied: dict[str, Occupied]) -> None:
    """Live sessions whose workshop left the catalog: named, and counted as deletions (the
    plan is refused unless they are allowed, and then they are ended before it is applied).
    Sessions of an inactive workshop run to their end: a note says so."""
    in_use = {u: (want.sessions[u], want.workshops.get(u)) for u in want.sessions}
    for user, record in occupied.items():
        in_use.setdefault(user, (record.get("session") or "?", record.get("workshop")))
    inactive: dict[str, list[str]] = {}
    for user, (session, workshop) in sorted(in_use.items()):
        if workshop and workshop not in want.known:
            plan.ending_sessions.append((session, workshop, user))
        elif workshop in want.inactive:
            inactive.setdefault(workshop, []).append(session)
    for workshop, sessions in sorted(inactive.items()):
        plan.notes.append(f"{workshop} is inactive: its {len(sessions)} live sessions run to "
                          f"their end ({', '.join(sessions)})")
