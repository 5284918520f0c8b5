"""Registrations on the portal, and the attempts its rate limits count.

Why in the store: a seat is taken only by a confirmed address, so a registration must outlive
the request that made it (the participant clicks a mailed link hours later, maybe served by
another API process); and the rate limits must hold across every process sharing the store,
so the attempts they count are rows, checked and written in one write transaction (SQLite's
`BEGIN IMMEDIATE`, an advisory lock per key on PostgreSQL). The confirmation mail is written by
the caller's `enqueue` in the registration's own transaction: both happen or neither does.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, update

from wodsync.store.models import (
    AttemptRow,
    RegistrationRow,
    StoreError,
    reading,
    table_of,
    utcnow,
    writing,
)
from wodsync.store.sessions import SESSIONS, Session, _person, _session

REGISTRATIONS = table_of(RegistrationRow)
ATTEMPTS = table_of(AttemptRow)
ID_BYTES = 8
RATE_LOCK_CLASS = 0x776F6472  # first key of the advisory locks of the rate limits ("wodr")
KEEP_ATTEMPTS = timedelta(days=2)  # older attempts count for no limit: removed


class RegistrationNotFound(StoreError):
    def __init__(self, registration_id: str) -> None:
        super().__init__(f"no registration {registration_id!r}")


class RateLimited(StoreError):
    """Too many attempts of one address (`scope` "address") or one client ("client") within
    the limit's window; `retry_at` is when the oldest of them stops counting."""

    def __init__(self, scope: str, limit: int, window: timedelta, retry_at: datetime) -> None:
        super().__init__(f"more than {limit} registrations per {window} from this {scope}")
        self.scope, self.limit, self.window, self.retry_at = scope, limit, window, retry_at


class LiveElsewhere(StoreError):
    """The person (by folded e-mail) already has a live session: here it is."""

    def __init__(self, session: Session) -> None:
        super().__init__(f"already has live session {session.id} of {session.workshop}")
        self.session = session


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` attempts within `window`."""

    count: int
    window: timedelta


@dataclass(frozen=True, slots=True)
class Registration:
    id: str
    workshop: str
    name: str
    email: str
    company: str
    email_key: str
    client: str
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None
    session_id: str | None

    def expired(self, now: datetime) -> bool:
        return self.session_id is None and now >= self.expires_at


def _registration(row: Row[Any]) -> Registration:
    return Registration(**dict(row._mapping))


Enqueue = Callable[[Connection, Registration], object]


class Registrations:
    """Registrations in one store; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def attempt(self, email_key: str, client: str, per_address: Limit, per_client: Limit,
                now: datetime | None = None) -> None:
        """Count one attempt of `email_key` from `client`, or raise RateLimited (counting
        nothing) when either limit is already reached."""
        now = now or utcnow()
        with writing(self.engine) as conn:
            _serialize(conn, "address:" + email_key)
            _serialize(conn, "client:" + client)
            _check(conn, ATTEMPTS.c.email_key == email_key, "address", per_address, now)
            _check(conn, ATTEMPTS.c.client == client, "client", per_client, now)
            conn.execute(insert(ATTEMPTS).values(at=now, email_key=email_key, client=client))
            conn.execute(delete(ATTEMPTS).where(ATTEMPTS.c.at < now - KEEP_ATTEMPTS))

    def register(self, *, workshop: str, name: str, email: str, company: str, email_key: str,
                 client: str, ttl: timedelta, one_live: bool, enqueue: Enqueue | None = None,
                 now: datetime | None = None) -> Registration:
        """A new registration, valid for `ttl`, with its confirmation mail (`enqueue`, in this
        transaction). With `one_live`, refused (LiveElsewhere) while the person has a live
        session — the allocation checks again at the click, where the unique index holds."""
        now = now or utcnow()
        with writing(self.engine) as conn:
            if one_live:
                live = conn.execute(select(SESSIONS).where(
                    (SESSIONS.c.email_key == email_key)
                    | (func.lower(SESSIONS.c.email) == email.lower()), _person())
                    .order_by(SESSIONS.c.created_at)).first()
                if live is not None:
                    raise LiveElsewhere(_session(live))
            row = conn.execute(insert(REGISTRATIONS).values(
                id=secrets.token_hex(ID_BYTES), workshop=workshop, name=name, email=email,
                company=company, email_key=email_key, client=client, created_at=now,
                expires_at=now + ttl).returning(*REGISTRATIONS.c)).one()
            registration = _registration(row)
            if enqueue is not None:
                enqueue(conn, registration)
            return registration

    def get(self, registration_id: str) -> Registration:
        with reading(self.engine) as conn:
            row = conn.execute(select(REGISTRATIONS).where(
                REGISTRATIONS.c.id == registration_id)).first()
        if row is None:
            raise RegistrationNotFound(registration_id)
        return _registration(row)

    def confirmed(self, registration_id: str, session_id: str,
                  now: datetime | None = None) -> Registration:
        """The click made (or found) `session_id`: the first session a registration gets is
        the one it keeps, so a link used twice leads to the same session."""
        now = now or utcnow()
        with writing(self.engine) as conn:
            conn.execute(update(REGISTRATIONS).where(
                REGISTRATIONS.c.id == registration_id, REGISTRATIONS.c.session_id.is_(None))
                .values(session_id=session_id, confirmed_at=now))
            row = conn.execute(select(REGISTRATIONS).where(
                REGISTRATIONS.c.id == registration_id)).first()
        if row is None:
            raise RegistrationNotFound(registration_id)
        return _registration(row)

    def of_session(self, session_id: str) -> Registration | None:
        """The registration whose click made `session_id`, if the portal made it."""
        with reading(self.engine) as conn:
            row = conn.execute(select(REGISTRATIONS).where(
                REGISTRATIONS.c.session_id == session_id)).first()
        return _registration(row) if row is not None else None


def _check(conn: Connection, which: Any, scope: str, limit: Limit, now: datetime) -> None:
    since = now - limit.window
    times = conn.scalars(select(ATTEMPTS.c.at).where(which, ATTEMPTS.c.at > since)
                         .order_by(ATTEMPTS.c.at.desc()).limit(limit.count)).all()
    if len(times) >= limit.count:
        raise RateLimited(scope, limit.count, limit.window, times[-1] + limit.window)


def _serialize(conn: Connection, key: str) -> None:
    """On PostgreSQL, one attempt per key at a time, so two processes cannot both read a count
    below the limit (SQLite's BEGIN IMMEDIATE already serializes all writers)."""
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(key.encode()).digest()
    conn.execute(select(func.pg_advisory_xact_lock(
        RATE_LOCK_CLASS, int.from_bytes(digest[:4], "big", signed=True))))
