"""The seat guard in the store: its events, and the seats it took out of service.

Why in the store: an event is the operator's record of what the guard did to whom and why (the
evidence: command line, CPU, age), shown by `wodsync guard events`, the status API and the
mails; a quarantined seat must stay out of allocation across restarts and for every controller
sharing the database, so allocation reads `quarantined_seats` inside its own transaction
(`quarantined`), where no CREATE can slip between the check and the insert.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import DBAPIError

from wodsync.store.models import (
    GuardEventRow,
    QuarantineRow,
    is_conflict,
    reading,
    table_of,
    utcnow,
    writing,
)

EVENTS = table_of(GuardEventRow)
QUARANTINE = table_of(QuarantineRow)
EVENTS_KEPT = 10_000  # per host: the oldest go first


@dataclass(frozen=True, slots=True)
class GuardEvent:
    id: int
    at: datetime
    host: str
    seat: int | None
    username: str
    session_id: str | None
    rule: str
    action: str
    outcome: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Quarantined:
    host: str
    seat: int
    username: str
    rule: str
    since: datetime
    by: str


def quarantined(conn: Connection, hosts: Iterable[str]) -> set[tuple[str, int]]:
    """(host, seat) of every quarantined seat of `hosts`: read by allocation, in its own
    transaction."""
    return {(h, s) for h, s in conn.execute(
        select(QUARANTINE.c.host, QUARANTINE.c.seat).where(QUARANTINE.c.host.in_(list(hosts))))}


class Guard:
    """The guard's part of one store; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, host: str, seat: int | None, username: str, session_id: str | None,
               rule: str, action: str, outcome: str, evidence: dict[str, Any],
               now: datetime | None = None) -> GuardEvent:
        """One event; a host keeps its last `EVENTS_KEPT`."""
        with writing(self.engine) as conn:
            row = conn.execute(insert(EVENTS).values(
                at=now or utcnow(), host=host, seat=seat, username=username,
                session_id=session_id, rule=rule, action=action, outcome=outcome,
                evidence=evidence).returning(*EVENTS.c)).one()
            oldest = conn.scalars(select(EVENTS.c.id).where(EVENTS.c.host == host)
                                  .order_by(EVENTS.c.id.desc()).offset(EVENTS_KEPT).limit(1)
                                  ).first()
            if oldest is not None:
                conn.execute(delete(EVENTS).where(EVENTS.c.host == host,
                                                  EVENTS.c.id <= oldest))
            return GuardEvent(**row._mapping)

    def events(self, host: str | None = None, limit: int = 100) -> list[GuardEvent]:
        """The last `limit` events (of `host`), newest first."""
        query = select(EVENTS).order_by(EVENTS.c.id.desc()).limit(limit)
        if host is not None:
            query = query.where(EVENTS.c.host == host)
        with reading(self.engine) as conn:
            return [GuardEvent(**row._mapping) for row in conn.execute(query)]

    def quarantine(self, host: str, seat: int, username: str, rule: str, by: str,
                   now: datetime | None = None) -> Quarantined:
        """Take the seat out of allocation (again: the first quarantine is kept)."""
        values = {"host": host, "seat": seat, "username": username, "rule": rule,
                  "since": now or utcnow(), "by": by}
        try:
            with writing(self.engine) as conn:
                conn.execute(insert(QUARANTINE).values(**values))
        except DBAPIError as exc:
            if not is_conflict(exc):  # already quarantined: the first one stays
                raise
        return next(q for q in self.quarantined(host) if q.seat == seat)

    def quarantined(self, host: str | None = None) -> list[Quarantined]:
        query = select(QUARANTINE).order_by(QUARANTINE.c.host, QUARANTINE.c.seat)
        if host is not None:
            query = query.where(QUARANTINE.c.host == host)
        with reading(self.engine) as conn:
            return [Quarantined(**row._mapping) for row in conn.execute(query)]

    def lift(self, host: str, seat: int) -> bool:
        """The seat may be given again (an operator released it); True if it was quarantined."""
        with writing(self.engine) as conn:
            done = conn.execute(delete(QUARANTINE).where(QUARANTINE.c.host == host,
                                                         QUARANTINE.c.seat == seat))
            return bool(done.rowcount)
