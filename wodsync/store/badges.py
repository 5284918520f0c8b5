"""Badges awarded to participants, written in the very transaction that ends their session.

Why in the move's transaction (a move hook of `Sessions.hooks`, installed first when the store
opens, so a mail queued by a later hook already sees the badge): a session that ended without
its badge, or a badge whose session is still live, would be a lie someone can verify publicly.
A retried release moves the same session to ENDED again (`reopen`, RELEASING → ENDED): the
unique index over (session, kind) makes the second award a no-op, so a session never awards
twice; a special badge is unique per folded e-mail and level, so each is awarded once. Inserts
are `ON CONFLICT DO NOTHING`: a duplicate never fails (nor rolls back) the session's move.

What the catalog says (the workshop's threshold, title and image) is asked of `rules`, which the
session service sets from the deployed catalog; without one every session that ends by CLEANUP
earns a badge titled by its workshop's key (WoD's behaviour).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, select
from sqlalchemy.dialects import postgresql, sqlite

from wodsync.badges.identity import fold_email, new_salt
from wodsync.badges.specials import earned
from wodsync.store.models import BadgeRow, SessionState, StoreError, reading, table_of, utcnow
from wodsync.store.sessions import Moved, Session

BADGES = table_of(BadgeRow)
PERSON_LOCK_CLASS = 0x62616467  # first key of the advisory lock per person ("badg")


class BadgeNotFound(StoreError):
    def __init__(self, badge_id: str) -> None:
        super().__init__(f"no badge {badge_id!r}")
        self.badge_id = badge_id


@dataclass(frozen=True)
class Rule:
    """What the catalog says of a workshop's badge."""

    threshold: float = 0.0   # completion (%) needed at CLEANUP
    title: str = ""          # the workshop's title ("" : its key)
    image: str = ""          # URL or path of the badge's image ("" : a drawn one)


def default_rule(workshop: str) -> Rule:
    return Rule()


@dataclass(frozen=True, slots=True)
class Badge:
    id: str
    kind: str            # "workshop" or "special"
    badge: str           # the workshop's key, or the special level's key
    title: str
    image: str
    criteria: str
    session_id: str
    workshop: str
    completion: float | None
    name: str
    # never on a public page (the assertion carries it hashed), nor in a repr (logs)
    email: str = field(default="", repr=False)
    email_key: str = field(default="", repr=False)
    salt: str = field(default="", repr=False)
    awarded_at: datetime | None = None


def _badge(row: Row[Any]) -> Badge:
    return Badge(**dict(row._mapping))


class Badges:
    """Badges in one store: awarded by `on_end` (a session hook), read by the rest."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rules: Callable[[str], Rule] = default_rule

    # -- awarding (inside the session's move) ------------------------------------------------

    def on_move(self, conn: Connection, moved: Moved) -> None:
        """The store's move hook: a session that reached ENDED, or HELD for RESET, is over for
        its participant."""
        session = moved.session
        if moved.event == "moved" and session.state in (SessionState.ENDED, SessionState.HELD):
            self.on_end(conn, session, session.ended_at or utcnow())

    def on_end(self, conn: Connection, session: Session, now: datetime) -> None:
        """The session is over for its participant (ENDED, or HELD for RESET): award the
        workshop's badge if its CLEANUP counted a completion at or above the threshold, then
        any special badge the person's count of distinct workshops now reaches. A PURGE counts
        no completion, so a purged session earns nothing."""
        if session.completion is None or not session.email:
            return
        rule = self.rules(session.workshop)
        if session.completion < rule.threshold:
            return
        key = fold_email(session.email)
        _serialize_person(conn, key)
        criteria = (f"Completed at least {rule.threshold:g} % of the workshop's code cells."
                    if rule.threshold else "Took part in the workshop to its end.")
        if not _insert(conn, session, now, key, kind="workshop", badge=session.workshop,
                       title=rule.title or session.workshop, image=rule.image,
                       criteria=criteria):
            return  # this session's badge was awarded by an earlier move (a retried release)
        completed = conn.scalar(select(func.count(func.distinct(BADGES.c.badge))).where(
            BADGES.c.email_key == key, BADGES.c.kind == "workshop")) or 0
        for special in earned(completed):
            _insert(conn, session, now, key, kind="special", badge=special.key,
                    title=special.title, image="", criteria=special.criteria)

    # -- queries -----------------------------------------------------------------------------

    def get(self, badge_id: str) -> Badge:
        with reading(self.engine) as conn:
            row = conn.execute(select(BADGES).where(BADGES.c.id == badge_id.strip().lower())
                               ).first()
        if row is None:
            raise BadgeNotFound(badge_id)
        return _badge(row)

    def find(self, email: str | None = None) -> list[Badge]:
        """Every badge, or those of one person (`email` folded as the awards fold it), oldest
        first."""
        query = select(BADGES)
        if email is not None:
            query = query.where(BADGES.c.email_key == fold_email(email))
        with reading(self.engine) as conn:
            return [_badge(r) for r in conn.execute(
                query.order_by(BADGES.c.awarded_at, BADGES.c.kind.desc(), BADGES.c.id))]

    def latest(self, kind: str, badge: str) -> Badge:
        """The latest award of a badge class (what its public class document is made from)."""
        with reading(self.engine) as conn:
            row = conn.execute(select(BADGES).where(BADGES.c.kind == kind,
                                                    BADGES.c.badge == badge)
                               .order_by(BADGES.c.awarded_at.desc()).limit(1)).first()
        if row is None:
            raise BadgeNotFound(f"{kind}/{badge}")
        return _badge(row)

    def for_session(self, session_id: str, conn: Connection | None = None) -> list[Badge]:
        """What ending `session_id` awarded: its workshop badge first, then the special badges
        it completed. `conn`: read inside an open transaction (an ended mail written with the
        move sees the badges the move awarded)."""
        query = select(BADGES).where(BADGES.c.session_id == session_id.strip().lower()) \
            .order_by(BADGES.c.kind.desc(), BADGES.c.awarded_at, BADGES.c.id)
        if conn is not None:
            return [_badge(r) for r in conn.execute(query)]
        with reading(self.engine) as own:
            return [_badge(r) for r in own.execute(query)]


def _insert(conn: Connection, session: Session, now: datetime, key: str, *, kind: str,
            badge: str, title: str, image: str, criteria: str) -> bool:
    """One award, unless the same one exists (then nothing, and False)."""
    values = dict(id=uuid.uuid4().hex, kind=kind, badge=badge, title=title[:300],
                  image=image, criteria=criteria, session_id=session.id,
                  workshop=session.workshop, completion=session.completion, name=session.name,
                  email=session.email.strip(), email_key=key, salt=new_salt(), awarded_at=now)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    inserted = conn.execute(dialect.insert(BADGES).values(**values).on_conflict_do_nothing()
                            .returning(BADGES.c.id)).first()
    return inserted is not None  # (rowcount is -1 here on psycopg: not a witness)


def _serialize_person(conn: Connection, key: str) -> None:
    """On PostgreSQL, one award per person at a time: two sessions of one person ending at
    once would each count the other's workshop out and both miss a special badge (SQLite's
    BEGIN IMMEDIATE already serializes writers)."""
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(key.encode()).digest()
    conn.execute(select(func.pg_advisory_xact_lock(
        PERSON_LOCK_CLASS, int.from_bytes(digest[:4], "big", signed=True))))
