"""The outbox: e-mails to send, kept in the store until they are sent.

Why in the store: a mail that a state change decides (credentials when a session becomes
active, the ended notice at its end) is written by `enqueue` in the same transaction as that
change, so either both happen or neither does — a process killed after the commit still has
the mail to send, and a rolled-back change sends nothing. A sender claims a row with a
compare-and-set that takes a lease (`claim`), so two senders on one store, or a restart while
the first still runs, never both send it; a sender that dies holding a lease leaves the row to
be claimed again once the lease is over. `dedup_key` (a unique index) makes a second enqueue
of the same notice a no-op.

No secret is ever written here: the context names what the mail is about (the session, the
workshop); the password and the secret links are looked up when the mail is rendered, so a mail
whose session no longer allows them is dropped instead of sent.

    with writing(engine) as conn:
        ...state change...
        enqueue(conn, "credentials", session.email, session_id=session.id,
                key=f"credentials:{session.id}")
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from wodsync.store.models import OutboxRow, StoreError, reading, table_of, utcnow, writing

OUTBOX = table_of(OutboxRow)
KINDS = ("confirm", "credentials", "expiring", "ended", "failed", "operator")
MAX_KEY = 200
MAX_ERROR = 2000
# Context keys that would smell of a secret: refused, a secret is looked up at send time.
SECRET_WORDS = ("password", "secret", "token", "passwd")


class OutboxState(enum.StrEnum):
    """Where a mail is: queued (waiting, maybe for a retry), sending (claimed under a lease),
    sent, failed (gave up after the attempts allowed; an operator may retry), dropped (its
    session no longer allows it: the reason is its `last_error`)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DROPPED = "dropped"


class OutboxError(StoreError):
    """A mail cannot be queued as asked (unknown kind, a secret in its context, …)."""


@dataclass(frozen=True, slots=True)
class Mail:
    """One row of the outbox, as a frozen value."""

    id: int
    kind: str
    to: str
    session_id: str | None
    context: Mapping[str, Any]
    key: str | None
    state: OutboxState
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    lease_owner: str | None = None
    lease_until: datetime | None = None
    sent_at: datetime | None = None
    last_error: str | None = field(default=None)


def _mail(row: Row[Any]) -> Mail:
    return Mail(id=row.id, kind=row.kind, to=row.recipient, session_id=row.session_id,
                context=dict(row.context or {}), key=row.dedup_key,
                state=OutboxState(row.state), attempts=row.attempts,
                created_at=row.created_at, next_attempt_at=row.next_attempt_at,
                lease_owner=row.lease_owner, lease_until=row.lease_until,
                sent_at=row.sent_at, last_error=row.last_error)


def _check(kind: str, to: str, context: Mapping[str, Any], key: str | None) -> None:
    """Bad input is refused before anything is written, with what is wrong."""
    if kind not in KINDS:
        raise OutboxError(f"unknown mail kind {kind!r}: one of {', '.join(KINDS)}")
    if "@" not in to or len(to) > 320 or any(c in to for c in "\r\n,;<>"):
        raise OutboxError(f"mail {kind!r}: {to!r} is not one e-mail address")
    if key is not None and not 0 < len(key) <= MAX_KEY:
        raise OutboxError(f"mail {kind!r}: the dedup key must have 1 to {MAX_KEY} characters")
    for name in _keys(context):
        if any(word in name.lower() for word in SECRET_WORDS):
            raise OutboxError(f"mail {kind!r}: context key {name!r} looks like a secret; the "
                              "outbox keeps none (it is looked up when the mail is sent)")
    try:
        json.dumps(context)
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"mail {kind!r}: its context is not JSON: {exc}") from None


def _keys(value: Any) -> Iterable[str]:
    """Every mapping key in a JSON-like value, at any depth."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _keys(v)


def _insert(conn: Connection) -> Any:
    """INSERT … ON CONFLICT DO NOTHING: a duplicate key is no error, so the caller's
    transaction (aborted by any error on PostgreSQL) goes on."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(OUTBOX)


def enqueue(conn: Connection, kind: str, to: str, *, session_id: str | None = None,
            context: Mapping[str, Any] | None = None, key: str | None = None,
            now: datetime | None = None) -> int:
    """Queue a mail in the caller's open write transaction; its id.

    `key` is a dedup key: when a mail with that key was ever queued, nothing is written and
    that mail's id is returned. The mail is due at once.
    """
    context = dict(context or {})
    _check(kind, to, context, key)
    now = now or utcnow()
    statement = _insert(conn).values(
        kind=kind, recipient=to, session_id=session_id, context=context, dedup_key=key,
        state=OutboxState.QUEUED.value, attempts=0, created_at=now, next_attempt_at=now)
    if key is not None:
        statement = statement.on_conflict_do_nothing(index_elements=["dedup_key"])
    inserted = conn.execute(statement.returning(OUTBOX.c.id)).scalar()
    if inserted is not None:
        return int(inserted)
    return int(conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.dedup_key == key)).scalar_one())


def _claimable(now: datetime) -> Any:
    """Due and queued, or claimed by a sender whose lease is over (it died or hung)."""
    return or_(and_(OUTBOX.c.state == OutboxState.QUEUED.value,
                    OUTBOX.c.next_attempt_at <= now),
               and_(OUTBOX.c.state == OutboxState.SENDING.value, OUTBOX.c.lease_until < now))


class Outbox:
    """The outbox of one store; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def enqueue(self, kind: str, to: str, *, session_id: str | None = None,
                context: Mapping[str, Any] | None = None, key: str | None = None) -> int:
        """`enqueue` in a transaction of its own (a mail no state change causes)."""
        with writing(self.engine) as conn:
            return enqueue(conn, kind, to, session_id=session_id, context=context, key=key)

    def claim(self, owner: str, lease: timedelta, *, limit: int = 10,
              now: datetime | None = None) -> list[Mail]:
        """Take up to `limit` due mails for `owner` until `now + lease`, oldest first.

        Each row is taken by a compare-and-set on what was read (its state and lease), so of
        two senders claiming at once exactly one gets a given row; `attempts` counts the claim.
        """
        now = now or utcnow()
        claimed: list[Mail] = []
        with writing(self.engine) as conn:
            rows = conn.execute(select(OUTBOX.c.id, OUTBOX.c.state, OUTBOX.c.lease_until)
                                .where(_claimable(now))
                                .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
                                .limit(limit)).all()
            for row in rows:
                same_lease = OUTBOX.c.lease_until.is_(None) if row.lease_until is None \
                    else OUTBOX.c.lease_until == row.lease_until
                got = conn.execute(
                    update(OUTBOX).where(OUTBOX.c.id == row.id, OUTBOX.c.state == row.state,
                                         same_lease, _claimable(now))
                    .values(state=OutboxState.SENDING.value, lease_owner=owner,
                            lease_until=now + lease, attempts=OUTBOX.c.attempts + 1)
                    .returning(*OUTBOX.c)).first()
                if got is not None:
                    claimed.append(_mail(got))
        return claimed

    def _finish(self, mail_id: int, owner: str, **values: Any) -> bool:
        """Move a mail `owner` holds; False when it holds it no more (its lease ran out and
        another sender took it)."""
        with writing(self.engine) as conn:
            row = conn.execute(
                update(OUTBOX).where(OUTBOX.c.id == mail_id, OUTBOX.c.lease_owner == owner,
                                     OUTBOX.c.state == OutboxState.SENDING.value)
                .values(lease_owner=None, lease_until=None, **values)
                .returning(OUTBOX.c.id)).first()
        return row is not None

    def mark_sent(self, mail_id: int, owner: str, now: datetime | None = None) -> bool:
        return self._finish(mail_id, owner, state=OutboxState.SENT.value,
                            sent_at=now or utcnow(), last_error=None)

    def mark_dropped(self, mail_id: int, owner: str, reason: str) -> bool:
        """Not to be sent at all (its session no longer allows it): why, kept."""
        return self._finish(mail_id, owner, state=OutboxState.DROPPED.value,
                            last_error=reason[:MAX_ERROR])

    def mark_retry(self, mail_id: int, owner: str, error: str, delay: timedelta, *,
                   give_up: bool, now: datetime | None = None) -> bool:
        """A send that did not go through: queued again after `delay`, or `failed` when
        `give_up` (the sender's attempts are spent)."""
        now = now or utcnow()
        state = OutboxState.FAILED if give_up else OutboxState.QUEUED
        return self._finish(mail_id, owner, state=state.value, next_attempt_at=now + delay,
                            last_error=error[:MAX_ERROR])

    def retry(self, mail_ids: Iterable[int] | None = None,
              now: datetime | None = None) -> list[int]:
        """An operator's retry: the given failed mails (all failed ones when None) are queued
        again, due now, with their attempts counted afresh. The ids moved."""
        now = now or utcnow()
        where = [OUTBOX.c.state == OutboxState.FAILED.value]
        if mail_ids is not None:
            where.append(OUTBOX.c.id.in_(list(mail_ids)))
        with writing(self.engine) as conn:
            return sorted(conn.scalars(
                update(OUTBOX).where(*where)
                .values(state=OutboxState.QUEUED.value, attempts=0, next_attempt_at=now)
                .returning(OUTBOX.c.id)))

    def get(self, mail_id: int) -> Mail | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(OUTBOX).where(OUTBOX.c.id == mail_id)).first()
        return _mail(row) if row is not None else None

    def list(self, *, state: OutboxState | None = None, session_id: str | None = None,
             kind: str | None = None, limit: int | None = None) -> list[Mail]:
        """Mails matching every filter given, oldest first."""
        query = select(OUTBOX).order_by(OUTBOX.c.id)
        if state is not None:
            query = query.where(OUTBOX.c.state == OutboxState(state).value)
        if session_id is not None:
            query = query.where(OUTBOX.c.session_id == session_id)
        if kind is not None:
            query = query.where(OUTBOX.c.kind == kind)
        if limit is not None:
            query = query.limit(limit)
        with reading(self.engine) as conn:
            return [_mail(row) for row in conn.execute(query)]

    def counts(self) -> dict[OutboxState, int]:
        """Mails by state (every state present, zeros included)."""
        with reading(self.engine) as conn:
            rows = conn.execute(select(OUTBOX.c.state, func.count())
                                .group_by(OUTBOX.c.state)).all()
        counts = dict.fromkeys(OutboxState, 0)
        counts.update({OutboxState(state): n for state, n in rows})
        return counts

    def next_due(self) -> datetime | None:
        """When the soonest queued mail is due (None: nothing queued), so a sender can sleep
        until then."""
        with reading(self.engine) as conn:
            return conn.execute(select(func.min(OUTBOX.c.next_attempt_at)).where(
                OUTBOX.c.state == OutboxState.QUEUED.value)).scalar()
