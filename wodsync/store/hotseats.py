"""Hot seats in the store: sessions set up ahead of a scheduled event, given out by CREATEs.

A hot seat is a session row like any other — so the unique indexes that keep a seat and a
capacity slot to one live session keep them for hot seats too, and an event can never take a
seat a participant holds — made for a placeholder participant (`PLACEHOLDER_DOMAIN`, never a
mail address), `creating` while its host sets it up, then `hot`. `hot_seats` says which event
it is for. Taking one is one transaction: the participant's duplicate check, the row locked
(skipped when another CREATE holds it), the participant written in, `hot` → `creating`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select, update

from wodsync.store import owners
from wodsync.store.models import HotSeatRow, SessionState, reading, table_of, writing
from wodsync.store.sessions import (
    SESSIONS,
    Candidate,
    Moved,
    Participant,
    Session,
    Sessions,
    _aware,
    _record,
    _serialize_workshop,
    _session,
    refuse_live,
)

S = SessionState
HOT_SEATS = table_of(HotSeatRow)
PLACEHOLDER_DOMAIN = "hot.invalid"  # RFC 2606: no mail ever leaves for it


@dataclass(frozen=True, slots=True)
class EventSeats:
    """An event's hot seats: `ready` (hot, waiting), `preparing` (being set up on their
    host) and `taken` (given to a participant by a CREATE, since the event began warming)."""

    ready: int = 0
    preparing: int = 0
    taken: int = 0


class HotSeats:
    """The hot seats of one store; every method is one transaction."""

    def __init__(self, engine: Engine, sessions: Sessions) -> None:
        self.engine = engine
        self.sessions = sessions

    def reserve(self, event: str, workshop: str, candidates: Sequence[Candidate],
                capacity: int, duration_hours: float, revision: str, password: str,
                now: datetime | None = None) -> Session:
        """A seat and a capacity slot of `workshop` for a hot seat of `event`: a `creating`
        session of a placeholder participant (set up next, then `ready`). Raises NoFreeSeat or
        CapacityReached as a CREATE's allocation does."""
        token = secrets.token_hex(6)
        placeholder = Participant(name=f"hot seat of {event}",
                                  email=f"{token}@{event}.{PLACEHOLDER_DOMAIN}")
        session = self.sessions.allocate(workshop, placeholder, candidates, capacity,
                                         duration_hours, revision, password, now)
        with writing(self.engine) as conn:
            conn.execute(insert(HOT_SEATS).values(session_id=session.id, event=event,
                                                  prepared_at=_aware(now)))
        return session

    def ready(self, session_id: str, message: str) -> Session:
        """Its host has set it up: `creating` → `hot`, a CREATE may take it."""
        return self.sessions.transition(session_id, S.HOT, message=message)

    def retire(self, session_id: str, reason: str, now: datetime | None = None) -> Session:
        """A ready hot seat to be released (its event is over or gone): `hot` → `releasing`
        only while it is still `hot` — never one a CREATE took meanwhile (InvalidTransition)."""
        now = _aware(now)
        return self.sessions._move(session_id, S.RELEASING, [S.HOT], reason, "", now,
                                   {"error": reason, "release_op": "purge",
                                    "next_release_at": now})

    def take(self, workshop: str, participant: Participant, hosts: Sequence[str],
             duration_hours: float, now: datetime | None = None) -> Session | None:
        """The first hot seat of `workshop` on `hosts` given to `participant` (`creating`,
        its host gives the password next); None when there is none. Raises AlreadyLive."""
        now = _aware(now)
        with writing(self.engine) as conn:
            _serialize_workshop(conn, workshop)
            refuse_live(conn, workshop, participant)
            row = conn.execute(
                select(SESSIONS.c.id, HOT_SEATS.c.event)
                .join(HOT_SEATS, HOT_SEATS.c.session_id == SESSIONS.c.id)
                .where(SESSIONS.c.workshop == workshop, SESSIONS.c.state == S.HOT.value,
                       SESSIONS.c.host.in_(list(hosts)))
                .order_by(HOT_SEATS.c.prepared_at, SESSIONS.c.seat).limit(1)
                .with_for_update(skip_locked=True)).first()
            if row is None:
                return None
            taken = conn.execute(
                update(SESSIONS).where(SESSIONS.c.id == row.id, SESSIONS.c.state == S.HOT.value)
                .values(state=S.CREATING.value, name=participant.name, email=participant.email,
                        company=participant.company, email_key=participant.key,
                        duration_hours=duration_hours, created_at=now, owner=owners.me())
                .returning(*SESSIONS.c)).one()
            conn.execute(update(HOT_SEATS).where(HOT_SEATS.c.session_id == row.id)
                         .values(taken_at=now))
            _record(conn, row.id, now, S.HOT, S.CREATING,
                    f"hot seat of event {row.event} taken by a CREATE", "")
            session = _session(taken)
            self.sessions._notify(conn, Moved("moved", S.HOT, session))
            return session

    def waiting(self, event: str | None = None) -> list[Session]:
        """Hot seats not taken (`hot`, or still `creating` for their event), oldest first."""
        query = (select(SESSIONS).join(HOT_SEATS, HOT_SEATS.c.session_id == SESSIONS.c.id)
                 .where(HOT_SEATS.c.taken_at.is_(None),
                        SESSIONS.c.state.in_([S.HOT.value, S.CREATING.value])))
        if event is not None:
            query = query.where(HOT_SEATS.c.event == event)
        with reading(self.engine) as conn:
            return [_session(r) for r in conn.execute(query.order_by(SESSIONS.c.created_at))]

    def event_of(self) -> dict[str, str]:
        """session id → event, of the hot seats ready (`hot`)."""
        with reading(self.engine) as conn:
            rows = conn.execute(select(HOT_SEATS.c.session_id, HOT_SEATS.c.event)
                                .join(SESSIONS, SESSIONS.c.id == HOT_SEATS.c.session_id)
                                .where(SESSIONS.c.state == S.HOT.value)).all()
        return {sid: event for sid, event in rows}

    def per_event(self) -> dict[str, EventSeats]:
        """event → its hot seats ready, preparing and taken (events with none are absent)."""
        query = (select(HOT_SEATS.c.event, SESSIONS.c.state,
                        HOT_SEATS.c.taken_at.is_not(None), func.count())
                 .join(SESSIONS, SESSIONS.c.id == HOT_SEATS.c.session_id)
                 .group_by(HOT_SEATS.c.event, SESSIONS.c.state,
                           HOT_SEATS.c.taken_at.is_not(None)))
        counts: dict[str, dict[str, int]] = {}
        with reading(self.engine) as conn:
            for event, state, was_taken, n in conn.execute(query):
                c = counts.setdefault(event, {"ready": 0, "preparing": 0, "taken": 0})
                if was_taken:
                    c["taken"] += n
                elif state == S.HOT.value:
                    c["ready"] += n
                elif state == S.CREATING.value:
                    c["preparing"] += n
        return {event: EventSeats(**c) for event, c in counts.items()}
