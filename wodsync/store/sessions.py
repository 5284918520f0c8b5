"""Workshop sessions: a seat given to a participant for a while, never given twice.

WoD hands out "the first free student" without a transaction, so two registrations can get
the same seat. Here the database refuses it: UNIQUE partial indexes over live sessions cover
the seat, the participant's e-mail per workshop and the workshop's capacity slots, and
`allocate` only inserts, retrying with fresh reads when another writer got there first. Every
move of a session is a compare-and-set from a state in `TRANSITIONS`, recorded with the output
of the hooks that ran for it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from wodsync.store.models import (
    LIVE_STATES,
    SessionEventRow,
    SessionRow,
    SessionState,
    StoreError,
    is_conflict,
    reading,
    utcnow,
    writing,
)

S = SessionState
SESSIONS = SessionRow.__table__
EVENTS = SessionEventRow.__table__
OUTPUT_CAP = 64 * 1024  # characters of hook output kept per event
ID_BYTES = 6  # 12 hex characters: short enough to type, 2**48 values
ALLOCATION_LOCK_CLASS = 0x776F6473  # first key of the two-key advisory locks ("wods")

# The one table of allowed moves. PURGE is not here: it reaches ENDED from any other state.
TRANSITIONS: Mapping[SessionState, frozenset[SessionState]] = {
    S.CREATING: frozenset({S.ACTIVE, S.FAILED}),
    S.ACTIVE: frozenset({S.CLEANING}),
    S.CLEANING: frozenset({S.ENDED, S.HELD, S.FAILED}),
    S.HELD: frozenset({S.RESETTING}),
    S.RESETTING: frozenset({S.ENDED, S.FAILED}),
    S.FAILED: frozenset(),
    S.ENDED: frozenset(),
}


class SessionNotFound(StoreError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session {session_id!r}")
        self.session_id = session_id


class InvalidTransition(StoreError):
    """The session is not in a state the move starts from (someone else moved it, or a bug)."""

    def __init__(self, session_id: str, current: SessionState, wanted: SessionState) -> None:
        super().__init__(f"session {session_id} is {current.value}: it cannot become "
                         f"{wanted.value} from there")
        self.session_id, self.current, self.wanted = session_id, current, wanted


class AlreadyLive(StoreError):
    """The participant already has a live session of this workshop: here it is."""

    def __init__(self, session: Session) -> None:
        super().__init__(f"{session.email} already has session {session.id} of "
                         f"{session.workshop} ({session.state.value})")
        self.session = session


class CapacityReached(StoreError):
    def __init__(self, workshop: str, capacity: int) -> None:
        super().__init__(f"workshop {workshop} is full: {capacity} live sessions")
        self.workshop, self.capacity = workshop, capacity


class NoFreeSeat(StoreError):
    def __init__(self, workshop: str, candidates: int) -> None:
        super().__init__(f"no free seat for workshop {workshop}: all {candidates} candidate "
                         "seats are taken by live sessions")
        self.workshop = workshop


class ExtensionRefused(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class Participant:
    name: str
    email: str
    company: str = ""


class Candidate(NamedTuple):
    """A seat the caller may give, computed from the catalog, in order of preference."""

    location: str
    host: str
    seat: int
    username: str


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    workshop: str
    name: str
    email: str
    company: str
    location: str
    host: str
    seat: int
    username: str
    slot: int
    state: SessionState
    duration_hours: float
    created_at: datetime
    started_at: datetime | None
    ends_at: datetime | None
    ended_at: datetime | None
    expiring_at: datetime | None
    completion: float | None
    revision: str
    error: str | None
    password: str = field(repr=False)  # for authenticated API clients; never in logs

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True, slots=True)
class SessionEvent:
    session_id: str
    at: datetime
    from_state: SessionState | None
    to_state: SessionState
    message: str
    output: str


def _session(row: Row[Any]) -> Session:
    values = dict(row._mapping)
    values["state"] = SessionState(values["state"])
    values["duration_hours"] = float(values["duration_hours"])
    return Session(**values)


def _live() -> Any:
    return SESSIONS.c.state.in_([s.value for s in LIVE_STATES])


def _cap(output: str) -> str:
    if len(output) <= OUTPUT_CAP:
        return output
    return output[:OUTPUT_CAP] + f"\n… [{len(output) - OUTPUT_CAP} more characters dropped]"


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now.isoformat()} given to the store: use UTC")
    return now


def _normalize_id(session_id: str) -> str:
    return session_id.strip().lower()


class Sessions:
    """Sessions in one store; every method is one transaction."""

    MAX_ATTEMPTS = 100

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- allocation -------------------------------------------------------------------------

    def allocate(self, workshop: str, participant: Participant,
                 candidates: Sequence[Candidate | tuple[str, str, int, str]], capacity: int,
                 duration_hours: float, revision: str, password: str,
                 now: datetime | None = None) -> Session:
        """Give the participant the first candidate seat no live session holds.

        Raises AlreadyLive (with the participant's live session), NoFreeSeat or
        CapacityReached. A unique violation means another writer won a race: read again.
        """
        if capacity < 1:
            raise ValueError(f"capacity of {workshop} must be at least 1, not {capacity}")
        seats = [Candidate(*c) for c in candidates]
        now = _aware(now)
        for _ in range(self.MAX_ATTEMPTS):
            try:
                with writing(self.engine) as conn:
                    return self._allocate_once(conn, workshop, participant, seats, capacity,
                                               duration_hours, revision, password, now)
            except DBAPIError as exc:
                if not is_conflict(exc):
                    raise
        raise StoreError(f"could not allocate a seat of {workshop} for {participant.email}: "
                         f"{self.MAX_ATTEMPTS} attempts collided with other writers")

    def _allocate_once(self, conn: Connection, workshop: str, participant: Participant,
                       seats: list[Candidate], capacity: int, duration_hours: float,
                       revision: str, password: str, now: datetime) -> Session:
        _serialize_workshop(conn, workshop)
        existing = conn.execute(select(SESSIONS).where(
            SESSIONS.c.workshop == workshop,
            func.lower(SESSIONS.c.email) == func.lower(participant.email), _live())).first()
        if existing is not None:
            raise AlreadyLive(_session(existing))
        seat = _first_free_seat(conn, seats)
        if seat is None:
            raise NoFreeSeat(workshop, len(seats))
        slot = _first_free_slot(conn, workshop, capacity)
        if slot is None:
            raise CapacityReached(workshop, capacity)
        session_id = secrets.token_hex(ID_BYTES)
        row = conn.execute(insert(SESSIONS).values(
            id=session_id, workshop=workshop, name=participant.name, email=participant.email,
            company=participant.company, location=seat.location, host=seat.host,
            seat=seat.seat, username=seat.username, slot=slot, state=S.CREATING.value,
            duration_hours=duration_hours, created_at=now, revision=revision,
            password=password).returning(*SESSIONS.c)).one()
        _record(conn, session_id, now, None, S.CREATING,
                f"seat {seat.username} ({seat.seat}) on {seat.host}, slot {slot}", "")
        return _session(row)

    # -- moves ------------------------------------------------------------------------------

    def transition(self, session_id: str, to: SessionState, *, message: str = "",
                   output: str = "", now: datetime | None = None) -> Session:
        """Move a session along `TRANSITIONS`; moving to ACTIVE starts its clock.

        Moving to FAILED keeps `message` as the session's error; to ENDED sets ended_at.
        """
        allowed = [s for s, targets in TRANSITIONS.items() if to in targets]
        return self._move(session_id, to, allowed, message, output, _aware(now))

    def activate(self, session_id: str, now: datetime | None = None, *, message: str = "",
                 output: str = "") -> Session:
        """The seat is ready: the session's time starts now and ends `duration_hours` later."""
        return self.transition(session_id, S.ACTIVE, message=message, output=output, now=now)

    def fail(self, session_id: str, error: str, *, output: str = "",
             now: datetime | None = None) -> Session:
        return self.transition(session_id, S.FAILED, message=error, output=output, now=now)

    def purge(self, session_id: str, *, message: str = "purged", output: str = "",
              now: datetime | None = None) -> Session:
        """End a session whatever its state (an operator's last resort); ENDED stays ENDED."""
        allowed = [s for s in SessionState if s is not S.ENDED]
        return self._move(session_id, S.ENDED, allowed, message, output, _aware(now))

    def _move(self, session_id: str, to: SessionState, allowed: Iterable[SessionState],
              message: str, output: str, now: datetime) -> Session:
        session_id = _normalize_id(session_id)
        with writing(self.engine) as conn:
            before = _locked_row(conn, session_id)
            current = SessionState(before.state)
            if current not in allowed:
                raise InvalidTransition(session_id, current, to)
            row = conn.execute(
                update(SESSIONS)
                .where(SESSIONS.c.id == session_id, SESSIONS.c.state == current.value)
                .values(state=to.value, **_entering(before, to, message, now))
                .returning(*SESSIONS.c)).first()
            if row is None:  # moved between our read and our write: say where it is now
                raise InvalidTransition(session_id, _locked_state(conn, session_id), to)
            _record(conn, session_id, now, current, to, message, output)
            return _session(row)

    def extend(self, session_id: str, hours: float, max_total_hours: float,
               now: datetime | None = None) -> Session:
        """Push an active session's end back by `hours`, never past `max_total_hours` in all.

        A new expiring notice may follow: the expiring mark is cleared.
        """
        if hours <= 0:
            raise ValueError(f"extension of session {session_id} must be positive, not {hours}")
        session_id, now = _normalize_id(session_id), _aware(now)
        with writing(self.engine) as conn:
            row = _locked_row(conn, session_id)
            if row.state != S.ACTIVE.value or row.ends_at is None or row.started_at is None:
                raise ExtensionRefused(f"session {session_id} is {row.state}: only an active "
                                       "session can be extended")
            ends_at = row.ends_at + timedelta(hours=hours)
            total = (ends_at - row.started_at).total_seconds() / 3600
            if total > max_total_hours + 1e-9:
                raise ExtensionRefused(
                    f"session {session_id} would last {total:g} h, more than the "
                    f"{max_total_hours:g} h allowed for {row.workshop}")
            new = conn.execute(
                update(SESSIONS)
                .where(SESSIONS.c.id == session_id, SESSIONS.c.state == S.ACTIVE.value)
                .values(ends_at=ends_at, expiring_at=None)
                .returning(*SESSIONS.c)).one()
            _record(conn, session_id, now, S.ACTIVE, S.ACTIVE,
                    f"extended by {hours:g} h to {ends_at.isoformat()}", "")
            return _session(new)

    def mark_expiring(self, window: timedelta, now: datetime | None = None) -> list[Session]:
        """Mark active sessions ending within `window`, each exactly once, and return them.

        The mark is a compare-and-set on `expiring_at IS NULL`, so two daemons (or two
        ticks) never both get the same session: one notice per session.
        """
        now = _aware(now)
        marked: list[Session] = []
        with writing(self.engine) as conn:
            ids = conn.scalars(select(SESSIONS.c.id).where(
                SESSIONS.c.state == S.ACTIVE.value, SESSIONS.c.expiring_at.is_(None),
                SESSIONS.c.ends_at <= now + window).order_by(SESSIONS.c.ends_at)).all()
            for session_id in ids:
                row = conn.execute(
                    update(SESSIONS)
                    .where(SESSIONS.c.id == session_id, SESSIONS.c.expiring_at.is_(None),
                           SESSIONS.c.state == S.ACTIVE.value)
                    .values(expiring_at=now).returning(*SESSIONS.c)).first()
                if row is not None:
                    _record(conn, session_id, now, S.ACTIVE, S.ACTIVE,
                            f"expiring: ends at {row.ends_at.isoformat()}", "")
                    marked.append(_session(row))
        return marked

    def set_completion(self, session_id: str, completion: float | None) -> Session:
        if completion is not None and not 0 <= completion <= 100:
            raise ValueError(f"completion of session {session_id} must be within 0..100, "
                             f"not {completion}")
        return self._set(session_id, completion=completion)

    def set_password(self, session_id: str, password: str) -> Session:
        return self._set(session_id, password=password)

    def _set(self, session_id: str, **values: Any) -> Session:
        session_id = _normalize_id(session_id)
        with writing(self.engine) as conn:
            row = conn.execute(update(SESSIONS).where(SESSIONS.c.id == session_id)
                               .values(**values).returning(*SESSIONS.c)).first()
        if row is None:
            raise SessionNotFound(session_id)
        return _session(row)

    # -- queries ----------------------------------------------------------------------------

    def get(self, session_id: str) -> Session:
        session_id = _normalize_id(session_id)
        with reading(self.engine) as conn:
            row = conn.execute(select(SESSIONS).where(SESSIONS.c.id == session_id)).first()
        if row is None:
            raise SessionNotFound(session_id)
        return _session(row)

    def find(self, *, state: SessionState | Iterable[SessionState] | None = None,
             workshop: str | None = None, host: str | None = None, email: str | None = None,
             live: bool = False) -> list[Session]:
        """Sessions matching every filter given, oldest first (e-mail compared lowercased)."""
        query = select(SESSIONS)
        if state is not None:
            states = [state] if isinstance(state, SessionState) else list(state)
            query = query.where(SESSIONS.c.state.in_([SessionState(s).value for s in states]))
        if workshop is not None:
            query = query.where(SESSIONS.c.workshop == workshop)
        if host is not None:
            query = query.where(SESSIONS.c.host == host)
        if email is not None:
            query = query.where(func.lower(SESSIONS.c.email) == func.lower(email))
        if live:
            query = query.where(_live())
        return self._all(query.order_by(SESSIONS.c.created_at, SESSIONS.c.id))

    def live_on_host(self, host: str) -> list[Session]:
        """What the reconciler must keep on `host`: every seat a live session holds."""
        return self.find(host=host, live=True)

    def due(self, now: datetime | None = None) -> list[Session]:
        """Active sessions whose time is up, soonest first."""
        return self._all(select(SESSIONS).where(
            SESSIONS.c.state == S.ACTIVE.value, SESSIONS.c.ends_at <= _aware(now))
            .order_by(SESSIONS.c.ends_at, SESSIONS.c.id))

    def events(self, session_id: str) -> list[SessionEvent]:
        session_id = _normalize_id(session_id)
        with reading(self.engine) as conn:
            rows = conn.execute(select(EVENTS).where(EVENTS.c.session_id == session_id)
                                .order_by(EVENTS.c.id)).all()
        return [SessionEvent(session_id=r.session_id, at=r.at,
                             from_state=SessionState(r.from_state) if r.from_state else None,
                             to_state=SessionState(r.to_state), message=r.message,
                             output=r.output) for r in rows]

    def counts_by_state(self) -> dict[SessionState, int]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(SESSIONS.c.state, func.count())
                                .group_by(SESSIONS.c.state)).all()
        counts = dict.fromkeys(SessionState, 0)
        counts.update({SessionState(state): n for state, n in rows})
        return counts

    def live_per_workshop(self) -> dict[str, int]:
        """Live sessions of each workshop that has any (seats left = capacity - this)."""
        with reading(self.engine) as conn:
            rows = conn.execute(select(SESSIONS.c.workshop, func.count()).where(_live())
                                .group_by(SESSIONS.c.workshop)).all()
        return {workshop: n for workshop, n in rows}

    def _all(self, query: Any) -> list[Session]:
        with reading(self.engine) as conn:
            return [_session(row) for row in conn.execute(query)]


def _serialize_workshop(conn: Connection, workshop: str) -> None:
    """On PostgreSQL, one allocation per workshop at a time (SQLite's BEGIN IMMEDIATE already
    serializes all writers).

    Not needed for correctness (the unique indexes are), but without it 50 simultaneous
    registrations read the same free slot, all but one collide, and the losers retry: the lock
    turns hundreds of retries into a queue, and keeps the slot and e-mail reads of a workshop
    consistent with each other. Seats shared with other workshops may still collide: retried.
    """
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(workshop.encode()).digest()
    conn.execute(select(func.pg_advisory_xact_lock(
        ALLOCATION_LOCK_CLASS, int.from_bytes(digest[:4], "big", signed=True))))


def _first_free_seat(conn: Connection, seats: list[Candidate]) -> Candidate | None:
    hosts = sorted({c.host for c in seats})
    taken = {(h, s) for h, s in conn.execute(select(SESSIONS.c.host, SESSIONS.c.seat).where(
        _live(), SESSIONS.c.host.in_(hosts)))}
    return next((c for c in seats if (c.host, c.seat) not in taken), None)


def _first_free_slot(conn: Connection, workshop: str, capacity: int) -> int | None:
    used = set(conn.scalars(select(SESSIONS.c.slot).where(
        SESSIONS.c.workshop == workshop, _live())))
    return next((n for n in range(capacity) if n not in used), None)


def _locked_row(conn: Connection, session_id: str) -> Row[Any]:
    """The session's row, locked until commit on PostgreSQL (SQLite already holds the lock)."""
    row = conn.execute(select(SESSIONS).where(SESSIONS.c.id == session_id)
                       .with_for_update()).first()
    if row is None:
        raise SessionNotFound(session_id)
    return row


def _locked_state(conn: Connection, session_id: str) -> SessionState:
    return SessionState(_locked_row(conn, session_id).state)


def _entering(before: Row[Any], to: SessionState, message: str,
              now: datetime) -> dict[str, Any]:
    """Columns a state sets when a session enters it."""
    if to is S.ACTIVE:
        return {"started_at": now, "ends_at": now + timedelta(hours=before.duration_hours)}
    if to is S.ENDED:
        return {"ended_at": now}
    if to is S.FAILED:
        return {"error": message}
    return {}


def _record(conn: Connection, session_id: str, at: datetime, from_state: SessionState | None,
            to_state: SessionState, message: str, output: str) -> None:
    conn.execute(insert(EVENTS).values(
        session_id=session_id, at=at, from_state=from_state.value if from_state else None,
        to_state=to_state.value, message=message, output=_cap(output)))
