"""The store's tables, and the one way to open a transaction on them.

Why here: the guarantees wodsync relies on (a seat is never given twice, one live session per
e-mail and workshop, never more live sessions than a workshop's capacity) are written as UNIQUE
partial indexes on these tables, so they hold for every writer, in SQLite and PostgreSQL alike,
whatever the Python code above them does. The engine factory lives beside them because SQLite
only keeps those promises with the right connection settings (WAL, a busy timeout, foreign keys,
and `BEGIN IMMEDIATE` for writes so that a read-then-insert cannot interleave with another).
The password column is sealed on its way in and opened on its way out by the key the store was
opened with (`SealedPassword`, `attach_sealer`): a copy of the database alone shows none.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol
from weakref import WeakKeyDictionary

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

SQLITE_BUSY_TIMEOUT_S = 30.0
WRITE_OPTION = "wodsync_write"
AFTER_COMMIT = "wodsync_after_commit"
PASSWORD_LENGTH = 255  # characters of the password column: a sealed password must fit


class StoreError(Exception):
    """Base of every error the store raises: a message meant for a person, never a traceback."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or opened (wrong URL, server down, no permission)."""


class SessionState(enum.StrEnum):
    """Where a session is in its life; the allowed moves are `sessions.TRANSITIONS`."""

    CREATING = "creating"
    ACTIVE = "active"
    CLEANING = "cleaning"
    HELD = "held"
    RESETTING = "resetting"
    RELEASING = "releasing"
    FAILED = "failed"
    ENDED = "ended"
    # A seat set up ahead of a scheduled event, no participant yet, its password locked
    # (`wodsync.sessions.hotseats`): a CREATE of its workshop takes it.
    HOT = "hot"


# A live session occupies its seat, its capacity slot and its participant's e-mail.
LIVE_STATES: tuple[SessionState, ...] = (
    SessionState.CREATING,
    SessionState.ACTIVE,
    SessionState.CLEANING,
    SessionState.HELD,
    SessionState.RESETTING,
    SessionState.HOT,  # a hot seat holds its capacity slot and its seat like a session
)
# A session whose release has not finished on its host (the host was down, a step failed) no
# longer has a participant — their e-mail and the capacity slot are free — but keeps its seat
# until the host has released it: nobody gets a seat whose previous occupant may still be in.
SEAT_STATES: tuple[SessionState, ...] = (*LIVE_STATES, SessionState.RELEASING)


def _in(states: tuple[SessionState, ...] | type[SessionState]) -> str:
    return "state IN (" + ", ".join(f"'{s.value}'" for s in states) + ")"


LIVE_SQL = _in(LIVE_STATES)
# A person's workshop is under way: the portal's one-session-per-person rule counts these. A
# held seat (waiting for RESET) no longer has its participant: they may register again.
PERSON_STATES: tuple[SessionState, ...] = (
    SessionState.CREATING, SessionState.ACTIVE, SessionState.CLEANING)
PERSON_SQL = _in(PERSON_STATES)
SEAT_SQL = _in(SEAT_STATES)
STATES_SQL = _in(SessionState)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, whatever the database keeps.

    SQLite has no time zones: values are stored as naive UTC text, which also sorts and
    compares correctly in SQL. PostgreSQL keeps `timestamptz`. Naive datetimes are refused
    so that a local time can never be stored as if it were UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the store: use UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Sealer(Protocol):
    """What turns a password into what the database keeps, and back (`sealing.Sealer`)."""

    def seal(self, password: str) -> str: ...

    def open(self, stored: str) -> str: ...

    def derive(self, purpose: str) -> bytes: ...


# One sealer per engine, found through the engine's dialect: the only handle a column type
# gets. Weak keys, so a disposed and forgotten engine takes its key with it.
_SEALERS: WeakKeyDictionary[Dialect, Sealer] = WeakKeyDictionary()


def attach_sealer(engine: Engine, sealer: Sealer) -> None:
    """Passwords written and read through `engine` are sealed and opened by `sealer`."""
    _SEALERS[engine.dialect] = sealer


def sealer_of(engine: Engine) -> Sealer | None:
    """The sealer `attach_sealer` gave `engine` (None for an engine `open_store` did not open):
    the portal derives its link key from the same store key."""
    return _SEALERS.get(engine.dialect)


class SealedPassword(TypeDecorator[str]):
    """A password in clear for the code, sealed in the database.

    Why a column type: every statement that writes or reads the column passes here, whoever
    wrote it, so no path can store a password in clear or hand out a sealed one. The empty
    string (no password: an adopted or ended session) is kept as it is. An engine that was not
    opened by `open_store` has no key: it cannot write a password, and reads the column as
    stored.
    """

    impl = String(PASSWORD_LENGTH)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if not value:
            return value
        sealer = _SEALERS.get(dialect)
        if sealer is None:
            raise StoreError("this database connection was not opened by open_store: it has "
                             "no key to seal a password with")
        return sealer.seal(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        sealer = _SEALERS.get(dialect)
        if not value or sealer is None:
            return value
        return sealer.open(value)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


def table_of(row: type[Base]) -> Table:
    """The Core table of a mapped class, for the statements written against tables (upserts,
    compare-and-set updates). `row.__table__` is the same object but typed as any
    `FromClause`, which `insert` and `update` do not accept."""
    return row.metadata.tables[row.__tablename__]


def _live_unique(name: str, *columns: Any, states: str = LIVE_SQL) -> Index:
    """A UNIQUE index that only counts live sessions (or, for seats, sessions holding one):
    ended and failed ones free the key."""
    where = text(states)
    return Index(name, *columns, unique=True, sqlite_where=where, postgresql_where=where)


class SessionRow(Base):
    """A seat given to a participant for a workshop, from registration to cleanup."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    workshop: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    company: Mapped[str] = mapped_column(String(200))
    location: Mapped[str] = mapped_column(String(100))
    host: Mapped[str] = mapped_column(String(255))
    seat: Mapped[int] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(64))
    slot: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    duration_hours: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    expiring_at: Mapped[datetime | None]
    completion: Mapped[float | None] = mapped_column(Float)
    revision: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    password: Mapped[str] = mapped_column(SealedPassword())  # "" once the session is over
    # A release that did not finish (RELEASING): the operation to retry, how often it was
    # tried, and when next.
    release_op: Mapped[str | None] = mapped_column(String(16))
    release_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_release_at: Mapped[datetime | None]
    # The participant's folded e-mail (case, +tag) when one live session per person holds
    # across workshops (the portal's rule); NULL for sessions without that rule.
    email_key: Mapped[str | None] = mapped_column(String(320))
    # The process that moved it into creating, cleaning or resetting (`store.owners`):
    # recovery leaves it alone while that process lives.
    owner: Mapped[str | None] = mapped_column(String(200))
    # The score of its workshop's checks at its CLEANUP (0-100; NULL: none was scored).
    score: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint(STATES_SQL, name="state"),
        CheckConstraint("slot >= 0", name="slot"),
        CheckConstraint("completion IS NULL OR (completion >= 0 AND completion <= 100)",
                        name="completion"),
        _live_unique("uq_sessions_live_seat", "host", "seat", states=SEAT_SQL),
        _live_unique("uq_sessions_live_slot", "workshop", "slot"),
        _live_unique("uq_sessions_live_email_key", "email_key", states=PERSON_SQL),
        Index("ix_sessions_state_ends_at", "state", "ends_at"),
        Index("ix_sessions_state_next_release_at", "state", "next_release_at"),
        Index("ix_sessions_host", "host"),
    )

    def __repr__(self) -> str:  # the password stays out of logs and tracebacks
        return f"SessionRow(id={self.id!r}, workshop={self.workshop!r}, state={self.state!r})"


# Declared outside the class body: an expression index needs the mapped column itself.
_live_unique("uq_sessions_live_email", SessionRow.workshop, func.lower(SessionRow.email))


class SessionEventRow(Base):
    """One move of a session, with the output of the hooks that ran for it."""

    __tablename__ = "session_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(12), ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text)


class HostStatusRow(Base):
    """Flux-like status of one host, as `wodsync status` and the API show it."""

    __tablename__ = "host_status"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    condition: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)
    last_attempted_revision: Mapped[str | None] = mapped_column(String(64))
    last_applied_revision: Mapped[str | None] = mapped_column(String(64))
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    drift_count: Mapped[int] = mapped_column(Integer)
    consecutive_failures: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    # Since when the host is not Ready after a Stalled (kept through its retries' Reconciling;
    # cleared when Ready): what an alert measures (migration 0007).
    stalled_since: Mapped[datetime | None]


class ReconciliationRow(Base):
    """One reconciliation of one host; the last few per host are kept."""

    __tablename__ = "reconciliations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    revision: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    duration_s: Mapped[float] = mapped_column(Float)
    created: Mapped[int] = mapped_column(Integer)
    changed: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[int] = mapped_column(Integer)
    result: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_reconciliations_host_started_at", "host", "started_at"),)


class RepositoryRow(Base):
    """What the daemon knows of one git source: its head and the last revision that was good."""

    __tablename__ = "repository"

    url: Mapped[str] = mapped_column(String(500), primary_key=True)
    branch: Mapped[str] = mapped_column(String(255), primary_key=True)
    head_revision: Mapped[str | None] = mapped_column(String(64))
    last_good_revision: Mapped[str | None] = mapped_column(String(64))
    errors: Mapped[list[Any]]
    updated_at: Mapped[datetime]
    # The source's own condition (migration 0007): `Ready`/`Stalled`, why, since when, and its
    # fetches — the last attempt, the last success, the failures in a row and the next try.
    condition: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(100))
    message: Mapped[str | None] = mapped_column(Text)
    since: Mapped[datetime | None]
    last_fetch_at: Mapped[datetime | None]
    last_fetched_at: Mapped[datetime | None]
    fetch_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_fetch_at: Mapped[datetime | None]


class FactsRow(Base):
    """The facts last observed on a host, so a plan can be shown without asking the host."""

    __tablename__ = "facts"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    facts: Mapped[dict[str, Any]]
    observed_at: Mapped[datetime]
    revision: Mapped[str | None] = mapped_column(String(64))


class BadgeRow(Base):
    """A badge awarded to a participant: a workshop's (one per session that earned it) or a
    special one (one per folded e-mail and level). Public by its random id; the e-mail is kept
    for the hashed recipient of its assertion and never shown."""

    __tablename__ = "badges"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))        # "workshop" or "special"
    badge: Mapped[str] = mapped_column(String(100))      # the workshop's key, or the level's
    title: Mapped[str] = mapped_column(String(300))
    image: Mapped[str] = mapped_column(String(2048))     # as the catalog gave it; "" for none
    criteria: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(
        String(12), ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    workshop: Mapped[str] = mapped_column(String(100))  # of the session that earned it
    completion: Mapped[float | None] = mapped_column(Float)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320))  # folded: case and +tag
    salt: Mapped[str] = mapped_column(String(32))
    awarded_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("kind IN ('workshop', 'special')", name="kind"),
        Index("uq_badges_session_id_kind", "session_id", "kind", unique=True),
        Index("uq_badges_special", "email_key", "badge", unique=True,
              sqlite_where=text("kind = 'special'"),
              postgresql_where=text("kind = 'special'")),
        Index("ix_badges_email_key", "email_key"),
    )


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here: it is the driver wodsync installs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {parsed.drivername!r} in "
                         f"{parsed.render_as_string(hide_password=True)}: "
                         "use sqlite:///PATH or postgresql+psycopg://…")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine whose write transactions cannot interleave where that would break a promise.

    `hide_parameters`: an error never quotes the values of a statement (a participant's
    e-mail, a sealed password) into a log or a traceback.
    """
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
                               hide_parameters=True)
        _tune_sqlite(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
    _own_errors_unwrapped(engine)
    return engine


def _own_errors_unwrapped(engine: Engine) -> None:
    """A StoreError raised while a statement's values are prepared (a password that cannot be
    sealed) reaches the caller as itself, not inside SQLAlchemy's StatementError with the
    SQL: it is a message for a person."""

    @event.listens_for(engine, "handle_error")
    def _unwrap(context: Any) -> BaseException | None:
        own = context.original_exception
        return own if isinstance(own, StoreError) else None


def _tune_sqlite(engine: Engine) -> None:
    """SQLAlchemy's pysqlite recipe: we emit BEGIN ourselves, IMMEDIATE for writers.

    What a row held must not outlive it in the file: `secure_delete` zeroes the bytes SQLite
    frees (an old version of a cell, a freed page) in the page it writes, so a checkpoint leaves
    no blanked password in the database file; the WAL keeps older images of a page until it
    starts over after a checkpoint, and `journal_size_limit = 0` then cuts the stale frames off
    instead of leaving them at its end. `temp_store = MEMORY`: no temporary file (VACUUM's
    copy of the whole database, large sorts) is ever written to a shared /tmp.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _ensure_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.execute("PRAGMA journal_size_limit = 0")
        cursor.execute("PRAGMA temp_store = MEMORY")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _ensure_wal(cursor: Any) -> None:
    """Switch a new database to WAL (it stays so). The switch needs the database to itself and
    SQLite answers "locked" at once, without waiting, when another connection opens it at the
    same moment: wait and retry, within the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any exception.

    On SQLite it takes the write lock at BEGIN, so what it reads cannot change before it
    writes; on PostgreSQL (READ COMMITTED) concurrent writers meet at the unique indexes,
    row locks or advisory locks, and the caller retries when `is_conflict` says so.
    """
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        try:
            with conn.begin():
                yield conn
        except BaseException:
            conn.info.pop(AFTER_COMMIT, None)
            raise
        for action in conn.info.pop(AFTER_COMMIT, []):
            action()


def after_commit(conn: Connection, action: Callable[[], None]) -> None:
    """Run `action` once the write transaction `conn` is in has committed, never if it rolls
    back: what reports a change (a log line) must not report one that did not happen."""
    conn.info.setdefault(AFTER_COMMIT, []).append(action)


def is_conflict(exc: DBAPIError) -> bool:
    """A write lost a race (unique violation, serialization failure, deadlock): retry it."""
    if isinstance(exc, IntegrityError):
        return True
    return getattr(exc.orig, "sqlstate", None) in ("40001", "40P01")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction: one consistent snapshot on SQLite, no write lock taken."""
    with engine.connect() as conn, conn.begin():
        yield conn


def utcnow() -> datetime:
    return datetime.now(UTC)


class OutboxRow(Base):
    """One e-mail to send, written in the transaction of the change that causes it.

    Why a table: a mail decided by a state change must neither be lost when the process dies
    before sending it nor be sent twice when two senders (or a restart) see it. The row is the
    promise; `store.outbox` claims it with a compare-and-set and a lease. `dedup_key` makes a
    second enqueue of the same notice a no-op. No secret is kept here: a password or a secret
    link is looked up when the mail is rendered.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(320))
    session_id: Mapped[str | None] = mapped_column(String(12))
    context: Mapped[dict[str, Any]]
    dedup_key: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("state IN ('queued', 'sending', 'sent', 'failed', 'dropped')",
                        name="state"),
        Index("uq_outbox_dedup_key", "dedup_key", unique=True),
        Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_outbox_session_id", "session_id"),
    )
class GuardEventRow(Base):
    """What the seat guard found on a host and what was done about it, with the evidence."""

    __tablename__ = "guard_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    host: Mapped[str] = mapped_column(String(255))
    seat: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(12))
    rule: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_guard_events_host_at", "host", "at"),)


class QuarantineRow(Base):
    """A seat the guard took out of service: no CREATE is given it until an operator releases
    it (`wodsync seat release`)."""

    __tablename__ = "quarantined_seats"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    seat: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(64))
    since: Mapped[datetime]
    by: Mapped[str] = mapped_column(Text)


class RegistrationRow(Base):
    """A registration on the portal: kept until its address is confirmed by the link mailed
    to it; the click creates the session (`session_id`). No seat is taken before."""

    __tablename__ = "registrations"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    workshop: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    company: Mapped[str] = mapped_column(String(200))
    email_key: Mapped[str] = mapped_column(String(320))
    client: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    session_id: Mapped[str | None] = mapped_column(String(12))

    __table_args__ = (Index("ix_registrations_email_key", "email_key"),)


class AttemptRow(Base):
    """One registration attempt, kept for the rate limits (per folded address, per client)
    that every API process sharing the store enforces together."""

    __tablename__ = "registration_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    email_key: Mapped[str] = mapped_column(String(320))
    client: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_registration_attempts_email_key_at", "email_key", "at"),
                      Index("ix_registration_attempts_client_at", "client", "at"))


class DeferredServerRow(Base):
    """A session whose server start the hub deferred (its spawn limit reached): asked for again
    until the hub has room, by whichever process runs the expiry loop — kept here, not in
    memory, so a restart does not leave it to the student's login."""

    __tablename__ = "deferred_servers"

    session_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(64))
    since: Mapped[datetime]


class AlertRow(Base):
    """One alert episode per subject (`source`, `host:<name>`): Stalled since `since`, told
    the operators at `fired_at`, and back to Ready at `resolved_at` — so a restart or a
    second writer never tells the same episode twice (migration 0007)."""

    __tablename__ = "alerts"

    subject: Mapped[str] = mapped_column(String(300), primary_key=True)
    since: Mapped[datetime]
    message: Mapped[str] = mapped_column(Text)
    fired_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


class TokenRow(Base):
    """An API token: its name, its role and the SHA-256 of its value, never the value itself
    (`wodsync.tokens`). In the store so that every process serving the API on it (the daemon,
    `serve` replicas) accepts and refuses the same tokens."""

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]

    __table_args__ = (CheckConstraint("role IN ('portal', 'operator', 'facts')", name="role"),)


class WodIdRow(Base):
    """A numeric id given to a workshop, customer or student for WoD's api-db routes
    (`wodsync.wodapi`): wod-frontend puts them in its URLs, so once given an id is never
    given to another key nor changed. `digest` and `updated_at` say when a workshop's
    definition last changed (WoD's `updatedAt`)."""

    __tablename__ = "wod_ids"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key: Mapped[str] = mapped_column(String(120))
    digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("uq_wod_ids_kind_key", "kind", "key", unique=True),)


class StoreIdentityRow(Base):
    """The store's random id, made with it: what a managed host records (never a URL)."""

    __tablename__ = "store_identity"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)


class ProcessLeaseRow(Base):
    """A serving process's last sign of life (`wodsync.store.owners`): recovery takes over a
    half-done session only when the process that owns it is gone."""

    __tablename__ = "process_leases"

    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class HotSeatRow(Base):
    """A session made as a hot seat of a scheduled event (`catalog/events.yaml`): which event
    it was prepared for, and when a participant's CREATE took it (NULL: not taken)."""

    __tablename__ = "hot_seats"

    session_id: Mapped[str] = mapped_column(
        String(12), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    event: Mapped[str] = mapped_column(String(100), index=True)
    prepared_at: Mapped[datetime]
    taken_at: Mapped[datetime | None]
