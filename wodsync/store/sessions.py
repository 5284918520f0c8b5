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
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Row, Select, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from wodsync.logs import FIELDS
from wodsync.store import owners
from wodsync.store.guard import quarantined
from wodsync.store.models import (
    LIVE_STATES,
    PERSON_STATES,
    SEAT_STATES,
    SessionEventRow,
    SessionRow,
    SessionState,
    StoreError,
    after_commit,
    is_conflict,
    reading,
    table_of,
    utcnow,
    writing,
)

_log = logging.getLogger("wodsync.sessions")
S = SessionState
SESSIONS = table_of(SessionRow)
EVENTS = table_of(SessionEventRow)
OUTPUT_CAP = 64 * 1024  # characters of hook output kept per event
ID_BYTES = 6  # 12 hex characters: short enough to type, 2**48 values
ALLOCATION_LOCK_CLASS = 0x776F6473  # first key of the two-key advisory locks ("wods")

# The one table of allowed moves. PURGE is not here: it reaches ENDED from any other state.
# RELEASING is where a release that could not finish waits for its retry: from any state that
# holds a seat (`schedule_release`), and — on the host's word that the seat is still held —
# from FAILED or ENDED (`reopen`).
TRANSITIONS: Mapping[SessionState, frozenset[SessionState]] = {
    S.CREATING: frozenset({S.ACTIVE, S.FAILED, S.RELEASING, S.HOT}),
    S.ACTIVE: frozenset({S.CLEANING, S.RELEASING}),
    S.CLEANING: frozenset({S.ENDED, S.HELD, S.RELEASING}),
    S.HELD: frozenset({S.RESETTING, S.RELEASING}),
    S.RESETTING: frozenset({S.ENDED, S.RELEASING}),
    S.RELEASING: frozenset({S.ENDED, S.HELD, S.RELEASING}),
    S.FAILED: frozenset(),
    S.ENDED: frozenset(),
    S.HOT: frozenset({S.CREATING, S.RELEASING}),  # taken by a CREATE (`store.hotseats`)
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


class AdoptionRefused(StoreError):
    """A session the host records cannot come back into the store (its id, seat or
    participant is taken by another session there)."""


@dataclass(frozen=True, slots=True)
class Participant:
    name: str
    email: str
    company: str = ""
    # The folded e-mail (`wodsync.portal.screening.fold`): with it, one live session per
    # person across all workshops, enforced by a unique index.
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Adoption:
    """A session the host records on a seat and the store does not know (a store restored from
    an old backup, or the wrong database): what comes back of it. No password travels in a
    host record, so an adopted session has none to show."""

    id: str
    workshop: str
    host: str
    location: str
    seat: int
    username: str
    state: SessionState
    name: str
    email: str
    company: str
    duration_hours: float
    created_at: datetime
    started_at: datetime | None
    revision: str = "adopted"


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
    release_op: str | None = None
    release_attempts: int = 0
    next_release_at: datetime | None = None
    email_key: str | None = None
    owner: str | None = None  # the process working on it (`store.owners`)
    score: int | None = None  # 0-100: its workshop's checks, scored at its CLEANUP

    @property
    def live(self) -> bool:
        """A participant has it: their e-mail and a capacity slot are taken."""
        return self.state in LIVE_STATES

    @property
    def holds_seat(self) -> bool:
        """Its seat is not free: live, or its release has not finished on the host."""
        return self.state in SEAT_STATES


@dataclass(frozen=True, slots=True)
class SessionEvent:
    session_id: str
    at: datetime
    from_state: SessionState | None
    to_state: SessionState
    message: str
    output: str


class Moved(NamedTuple):
    """A move of a session, handed to the move hooks inside the move's own transaction:
    `event` is "moved" (a state change, `before` → `session.state`) or "expiring" (the
    session was just marked as ending soon; its state is unchanged)."""

    event: str
    before: SessionState | None
    session: Session


# Called with the open write transaction of every move: what it writes (an outbox mail)
# commits or rolls back with the move itself. A hook that raises undoes the move.
MoveHook = Callable[[Connection, Moved], None]


def _session(row: Row[Any]) -> Session:
    values = dict(row._mapping)
    values["state"] = SessionState(values["state"])
    values["duration_hours"] = float(values["duration_hours"])
    return Session(**values)


def _filtered(query: Select[Any], state: SessionState | Iterable[SessionState] | None,
              workshop: str | None, host: str | None, email: str | None,
              live: bool) -> Select[Any]:
    """`query` narrowed by `find`'s filters (each one given, all of them)."""
    if state is not None:
        states = [state] if isinstance(state, SessionState) else list(state)
        query = query.where(SESSIONS.c.state.in_([SessionState(s).value for s in states]))
    if workshop is not None:
        query = query.where(SESSIONS.c.workshop == workshop)
    if host is not None:
        query = query.where(SESSIONS.c.host == host)
    if email is not None:
        query = query.where(func.lower(SESSIONS.c.email) == func.lower(email))
    return query.where(_live()) if live else query


def _live() -> Any:
    return SESSIONS.c.state.in_([s.value for s in LIVE_STATES])


def _person() -> Any:
    """Sessions whose participant is still in their workshop (`PERSON_STATES`)."""
    return SESSIONS.c.state.in_([s.value for s in PERSON_STATES])


def _holding() -> Any:
    return SESSIONS.c.state.in_([s.value for s in SEAT_STATES])


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
        self.hooks: list[MoveHook] = []

    def _notify(self, conn: Connection, moved: Moved) -> None:
        for hook in list(self.hooks):
            hook(conn, moved)

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
        refuse_live(conn, workshop, participant)
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
            password=password, email_key=participant.key,
            owner=owners.me()).returning(*SESSIONS.c)).one()
        _record(conn, session_id, now, None, S.CREATING,
                f"seat {seat.username} ({seat.seat}) on {seat.host}, slot {slot}", "")
        return _session(row)

    def adopt(self, a: Adoption, message: str, now: datetime | None = None) -> Session:
        """Take a session the host records back into the store, in `a.state` (ACTIVE, HELD or,
        to be released at once, RELEASING). Its capacity slot is any free one: a workshop may
        be over capacity until it ends. Raises AdoptionRefused on a clash."""
        now = _aware(now)
        ends = a.started_at + timedelta(hours=a.duration_hours) \
            if a.started_at is not None and a.state is S.ACTIVE else None
        releasing = a.state is S.RELEASING
        try:
            with writing(self.engine) as conn:
                used = set(conn.scalars(select(SESSIONS.c.slot).where(
                    SESSIONS.c.workshop == a.workshop, _live())))
                slot = next(n for n in range(len(used) + 1) if n not in used)
                row = conn.execute(insert(SESSIONS).values(
                    id=_normalize_id(a.id), workshop=a.workshop, name=a.name, email=a.email,
                    company=a.company, location=a.location, host=a.host, seat=a.seat,
                    username=a.username, slot=slot, state=a.state.value,
                    duration_hours=a.duration_hours, created_at=a.created_at,
                    started_at=a.started_at, ends_at=ends, revision=a.revision, password="",
                    release_op="purge" if releasing else None,
                    next_release_at=now if releasing else None,
                    error=message if releasing else None).returning(*SESSIONS.c)).one()
                _record(conn, row.id, now, None, a.state, message, "")
                return _session(row)
        except DBAPIError as exc:
            if not is_conflict(exc):
                raise
            raise AdoptionRefused(f"session {a.id} on {a.host} seat {a.username} cannot be "
                                  "adopted: its id, seat or participant is taken by another "
                                  "session in the store") from None

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

    def schedule_release(self, session_id: str, op: str, error: str, delay: timedelta, *,
                         output: str = "", now: datetime | None = None) -> Session:
        """A release (`op`: cleanup, reset or purge) did not finish on the host: the session is
        RELEASING — its participant gone, its seat kept — and `op` is tried again after
        `delay`. From any state holding a seat; again from RELEASING (one more attempt)."""
        now = _aware(now)
        allowed = [s for s, targets in TRANSITIONS.items() if S.RELEASING in targets]
        return self._move(session_id, S.RELEASING, allowed, error, output, now,
                          {"error": error, "release_op": op, "next_release_at": now + delay,
                           "release_attempts": SESSIONS.c.release_attempts + 1})

    def reopen(self, session_id: str, op: str, message: str,
               now: datetime | None = None) -> Session:
        """The host still records a seat for this ended or failed session (a release that
        never finished, a store behind the host): hold the seat again and release it now."""
        now = _aware(now)
        return self._move(session_id, S.RELEASING, [S.ENDED, S.FAILED], message, "", now,
                          {"error": message, "release_op": op, "next_release_at": now,
                           "ended_at": None})

    def _move(self, session_id: str, to: SessionState, allowed: Iterable[SessionState],
              message: str, output: str, now: datetime,
              values: dict[str, Any] | None = None) -> Session:
        session_id = _normalize_id(session_id)
        with writing(self.engine) as conn:
            before = _locked_row(conn, session_id)
            current = SessionState(before.state)
            if current not in allowed:
                raise InvalidTransition(session_id, current, to)
            row = conn.execute(
                update(SESSIONS)
                .where(SESSIONS.c.id == session_id, SESSIONS.c.state == current.value)
                .values(state=to.value, **_entering(before, to, message, now),
                        **(values or {}))
                .returning(*SESSIONS.c)).first()
            if row is None:  # moved between our read and our write: say where it is now
                raise InvalidTransition(session_id, _locked_state(conn, session_id), to)
            _record(conn, session_id, now, current, to, message, output)
            moved = _session(row)
            self._notify(conn, Moved("moved", current, moved))
            return moved

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

        A session shorter than twice the window is marked in its second half instead: a 1 h
        workshop is not "ending" from its first minute. The mark is a compare-and-set on
        `expiring_at IS NULL`, so two daemons (or two ticks) never both get the same session:
        one notice per session.
        """
        now = _aware(now)
        marked: list[Session] = []
        with writing(self.engine) as conn:
            due = conn.execute(select(SESSIONS.c.id, SESSIONS.c.started_at, SESSIONS.c.ends_at)
                               .where(SESSIONS.c.state == S.ACTIVE.value,
                                      SESSIONS.c.expiring_at.is_(None),
                                      SESSIONS.c.ends_at <= now + window)
                               .order_by(SESSIONS.c.ends_at)).all()
            ids = [d.id for d in due if d.ends_at - now <= _notice(window, d.started_at,
                                                                     d.ends_at)]
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
                    self._notify(conn, Moved("expiring", S.ACTIVE, marked[-1]))
        return marked

    def set_completion(self, session_id: str, completion: float | None) -> Session:
        if completion is not None and not 0 <= completion <= 100:
            raise ValueError(f"completion of session {session_id} must be within 0..100, "
                             f"not {completion}")
        return self._set(session_id, completion=completion)

    def set_score(self, session_id: str, score: int | None) -> Session:
        """The score of the session's checks at its CLEANUP (0-100)."""
        if score is not None and not 0 <= score <= 100:
            raise ValueError(f"score of session {session_id} must be within 0..100, "
                             f"not {score}")
        return self._set(session_id, score=score)

    def set_password(self, session_id: str, password: str) -> Session:
        """The new password of a session a participant uses (creating or active; sealed by
        the column on its way in). A session that is over, or held for RESET, keeps none:
        refused."""
        session_id = _normalize_id(session_id)
        in_use = SESSIONS.c.state.in_([S.CREATING.value, S.ACTIVE.value])
        with writing(self.engine) as conn:
            row = conn.execute(update(SESSIONS).where(SESSIONS.c.id == session_id, in_use)
                               .values(password=password).returning(*SESSIONS.c)).first()
            if row is None:
                state = _locked_state(conn, session_id)  # SessionNotFound if there is none
                raise StoreError(f"session {session_id} is {state.value}: a session that is "
                                 "over keeps no password")
        return _session(row)

    def record_updates(self, updates: Sequence[tuple[str, str, str, str]],
                       now: datetime | None = None) -> None:
        """Live updates in their sessions' histories, in one transaction: (session id,
        revision, message, output — the per-file report) each, the state unchanged; a
        session's revision becomes `revision` when one was applied (not "")."""
        at = _aware(now)
        with writing(self.engine) as conn:
            for session_id, revision, message, output in updates:
                session_id = _normalize_id(session_id)
                state = _locked_state(conn, session_id)
                if revision:
                    conn.execute(update(SESSIONS).where(SESSIONS.c.id == session_id)
                                 .values(revision=revision))
                _record(conn, session_id, at, state, state, message, output)

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
             live: bool = False, offset: int = 0, limit: int | None = None) -> list[Session]:
        """Sessions matching every filter given, oldest first (e-mail compared lowercased);
        `offset` and `limit` page through them."""
        query = _filtered(select(SESSIONS), state, workshop, host, email, live)
        query = query.order_by(SESSIONS.c.created_at, SESSIONS.c.id).offset(offset)
        return self._all(query if limit is None else query.limit(limit))

    def count(self, *, state: SessionState | Iterable[SessionState] | None = None,
              workshop: str | None = None, host: str | None = None, email: str | None = None,
              live: bool = False) -> int:
        """How many sessions `find` would list with the same filters and no page."""
        query = _filtered(select(func.count()).select_from(SESSIONS), state, workshop, host,
                          email, live)
        with reading(self.engine) as conn:
            return int(conn.scalar(query) or 0)

    def holding_seats(self, host: str) -> list[Session]:
        """What the reconciler must keep on `host`: every seat a session holds (live, or its
        release not finished)."""
        return self._all(select(SESSIONS).where(SESSIONS.c.host == host, _holding())
                         .order_by(SESSIONS.c.seat))

    def releases_due(self, now: datetime | None = None) -> list[Session]:
        """Releases that did not finish and whose next try is due, soonest first."""
        return self._all(select(SESSIONS).where(
            SESSIONS.c.state == S.RELEASING.value,
            SESSIONS.c.next_release_at <= _aware(now))
            .order_by(SESSIONS.c.next_release_at, SESSIONS.c.id))

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


def refuse_live(conn: Connection, workshop: str, participant: Participant) -> None:
    """AlreadyLive when the participant has a live session of the workshop (or, with a folded
    e-mail, a workshop under way anywhere): a CREATE and a hot seat's taking both ask."""
    existing = conn.execute(select(SESSIONS).where(
        SESSIONS.c.workshop == workshop,
        func.lower(SESSIONS.c.email) == func.lower(participant.email), _live())).first()
    if existing is None and participant.key is not None:
        existing = conn.execute(select(SESSIONS).where(
            SESSIONS.c.email_key == participant.key, _person())).first()
    if existing is not None:
        raise AlreadyLive(_session(existing))


def _first_free_seat(conn: Connection, seats: list[Candidate]) -> Candidate | None:
    """The first candidate no session holds and the guard has not quarantined."""
    hosts = sorted({c.host for c in seats})
    taken = {(h, s) for h, s in conn.execute(select(SESSIONS.c.host, SESSIONS.c.seat).where(
        _holding(), SESSIONS.c.host.in_(hosts)))}
    taken |= quarantined(conn, hosts)
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


# A session that is over (ended, failed, or releasing its seat) has no participant to show
# the password to: it is blanked in the move's own transaction, never kept.
_FORGET_PASSWORD: Mapping[str, Any] = {"password": ""}


def _entering(before: Row[Any], to: SessionState, message: str,
              now: datetime) -> dict[str, Any]:
    """Columns a state sets when a session enters it."""
    if to is S.ACTIVE:
        return {"started_at": now, "ends_at": now + timedelta(hours=before.duration_hours)}
    if to is S.ENDED:
        return {"ended_at": now, "next_release_at": None, **_FORGET_PASSWORD}
    if to is S.FAILED:
        return {"error": message, **_FORGET_PASSWORD}
    if to is S.RELEASING:
        return {**_FORGET_PASSWORD}
    if to is S.HELD:  # the participant is gone; the seat waits for RESET
        return {"next_release_at": None, **_FORGET_PASSWORD}
    if to in (S.CLEANING, S.RESETTING):  # worked on by this process until it moves on
        return {"owner": owners.me()}
    return {}


def _notice(window: timedelta, started_at: datetime | None, ends_at: datetime) -> timedelta:
    """How long before its end a session is marked expiring: `window`, or half the session
    when it is shorter than two windows."""
    if started_at is None:
        return window
    return min(window, (ends_at - started_at) / 2)


def _record(conn: Connection, session_id: str, at: datetime, from_state: SessionState | None,
            to_state: SessionState, message: str, output: str) -> None:
    """A move in the session's history, and in the log once it has committed (the hooks'
    output stays in the store: a hook may print what a student wrote)."""
    conn.execute(insert(EVENTS).values(
        session_id=session_id, at=at, from_state=from_state.value if from_state else None,
        to_state=to_state.value, message=message, output=_cap(output)))
    before = from_state.value if from_state else "-"
    after_commit(conn, lambda: _log.info(
        "session %s: %s → %s: %s", session_id, before, to_state.value, message,
        extra={FIELDS: {"session": session_id, "from": before, "to": to_state.value}}))
