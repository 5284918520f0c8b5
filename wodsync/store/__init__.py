"""The controller's persistent store: workshop sessions and the GitOps daemon's status.

Why: sessions (a seat given to a participant for a while) and the daemon's status must survive
restarts and be shared by the CLI, the daemon and the API. SQLite at `<state>/wodsync.db` is
the embedded default; PostgreSQL (`postgresql+psycopg://…`) serves several controllers. The
store creates or upgrades its schema when opened, so there is no migration step to forget.
It holds live sessions' passwords, so it is root's alone: the state folder 0700, the SQLite
files 0600 (`files`), the passwords sealed with a key kept outside the database and blanked
once a session is over (`sealing`).

    store = open_store(state_dir=Path("/var/lib/wodsync"))
    session = store.sessions.allocate(...)
    store.status.update_host("wod-1", condition="Ready")
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from wodsync.store import files, migrations, sealing
from wodsync.store.badges import Badge, BadgeNotFound, Badges
from wodsync.store.deferred import DeferredServers
from wodsync.store.guard import Guard, GuardEvent, Quarantined
from wodsync.store.hotseats import HotSeats
from wodsync.store.lock import (
    WriterBusy,
    WriterLock,
    WriterLost,
    writer_holder,
    writer_running,
)
from wodsync.store.models import (
    LIVE_STATES,
    SEAT_STATES,
    SessionState,
    StoreError,
    StoreIdentityRow,
    StoreUnavailable,
    attach_sealer,
    make_engine,
    normalize_url,
    reading,
)
from wodsync.store.outbox import Mail, Outbox, OutboxError, OutboxState
from wodsync.store.owners import Leases
from wodsync.store.registrations import Registrations
from wodsync.store.sealing import KEY_ENV, KEY_FILE, KeyUnavailable, PasswordUnreadable
from wodsync.store.sessions import (
    TRANSITIONS,
    Adoption,
    AdoptionRefused,
    AlreadyLive,
    Candidate,
    CapacityReached,
    ExtensionRefused,
    InvalidTransition,
    Moved,
    MoveHook,
    NoFreeSeat,
    Participant,
    Session,
    SessionEvent,
    SessionNotFound,
    Sessions,
)
from wodsync.store.status import (
    Condition,
    Facts,
    HostStatus,
    Reason,
    Reconciliation,
    RepositoryState,
    Result,
    Status,
    Trigger,
)
from wodsync.store.tokens import StoredToken, TokenExists, TokenNotFound, Tokens

__all__ = [
    "DB_FILE",
    "KEY_ENV",
    "KEY_FILE",
    "LIVE_STATES",
    "SEAT_STATES",
    "TRANSITIONS",
    "Adoption",
    "AdoptionRefused",
    "AlreadyLive",
    "Badge",
    "BadgeNotFound",
    "Badges",
    "Candidate",
    "CapacityReached",
    "Condition",
    "ExtensionRefused",
    "Facts",
    "Guard",
    "GuardEvent",
    "HostStatus",
    "InvalidTransition",
    "KeyUnavailable",
    "Leases",
    "Mail",
    "MoveHook",
    "Moved",
    "NoFreeSeat",
    "Outbox",
    "OutboxError",
    "OutboxState",
    "Participant",
    "PasswordUnreadable",
    "Quarantined",
    "Reason",
    "Reconciliation",
    "RepositoryState",
    "Result",
    "Session",
    "SessionEvent",
    "SessionNotFound",
    "SessionState",
    "Sessions",
    "Status",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredToken",
    "TokenExists",
    "TokenNotFound",
    "Tokens",
    "Trigger",
    "WriterBusy",
    "WriterLock",
    "WriterLost",
    "default_url",
    "open_store",
    "writer_holder",
    "writer_running",
]

DB_FILE = "wodsync.db"


class Store:
    """An open store: `sessions`, `status`, the mail `outbox`, the seat `guard`, the portal's
    `registrations`, the `badges` (awarded as sessions end), the servers a busy hub
    `deferred` and the API `tokens`, over one engine (thread-safe, pooled)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = Sessions(engine)
        self.status = Status(engine)
        self.outbox = Outbox(engine)
        self.guard = Guard(engine)
        self.registrations = Registrations(engine)
        self.badges = Badges(engine)
        self.deferred = DeferredServers(engine)
        self.tokens = Tokens(engine)
        self.leases = Leases(engine)
        self.hot = HotSeats(engine, self.sessions)  # hot seats of scheduled events
        self.sessions.hooks.append(self.badges.on_move)  # first: before any mail is queued

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    @cached_property
    def identity(self) -> str:
        """The store's random id, made with it and kept by a backup: what the hosts a daemon
        manages record (never the URL, which may hold a password)."""
        with reading(self.engine) as conn:
            found = conn.scalar(select(StoreIdentityRow.id))
        if found is None:
            raise StoreError(f"the store at {self.url} has no identity row (store_identity)")
        return str(found)

    @property
    def url(self) -> str:
        """The database URL with its password masked: safe to print."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url})"


def default_url(state_dir: Path) -> str:
    return f"sqlite:///{Path(state_dir).resolve() / DB_FILE}"


def open_store(url: str | None = None, *, state_dir: Path | None = None) -> Store:
    """Open (creating or upgrading) the store at `url`, or SQLite under `state_dir`.

    `state_dir` is wodsync's state folder: made 0700, and where the key of the passwords is
    kept (`store.key`) unless `WODSYNC_STORE_KEY` is set; a `sqlite:///` URL opened without
    one keeps its key beside the database. A SQLite database and its companions are made 0600
    before SQLite opens them. Stored passwords are then brought to this version's form (sealed
    while live, blank once over) and, on SQLite, their old bytes scrubbed from the files.
    """
    folder = Path(state_dir).resolve() if state_dir is not None else None
    if folder is not None:
        files.private_folder(folder, create=url is None)
    if url is None:
        if folder is None:
            raise StoreError("open_store needs a database URL or a state directory")
        url = default_url(folder)
    database = files.sqlite_file(normalize_url(url))
    if database is not None:
        files.private_database(database)
    sealer = sealing.Sealer.find(folder or (database.parent if database else None))
    engine = make_engine(url)
    attach_sealer(engine, sealer)
    changed = _upgrade(engine, sealer)
    sealing.scrub(engine, changed > 0)
    return Store(engine)


def _upgrade(engine: Engine, sealer: sealing.Sealer) -> int:
    """The schema, then the stored passwords, brought to this version; the engine disposed of
    and a message for a person when the database cannot be opened."""
    try:
        migrations.upgrade(engine)
        return sealing.upgrade(engine, sealer)
    except OperationalError as exc:
        engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreUnavailable(f"cannot open the store at {where}: {reason}") from None
    except BaseException:
        engine.dispose()
        raise
