"""The controller's persistent store: workshop sessions and the GitOps daemon's status.

Why: sessions (a seat given to a participant for a while) and the daemon's status must survive
restarts and be shared by the CLI, the daemon and the API. SQLite at `<state>/wodsync.db` is
the embedded default; PostgreSQL (`postgresql+psycopg://…`) serves several controllers. The
store creates or upgrades its schema when opened, so there is no migration step to forget.

    store = open_store(state_dir=Path("/var/lib/wodsync"))
    session = store.sessions.allocate(...)
    store.status.update_host("wod-1", condition="Ready")
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from wodsync.store import migrations
from wodsync.store.lock import WriterBusy, WriterLock, writer_holder, writer_running
from wodsync.store.models import (
    LIVE_STATES,
    SessionState,
    StoreError,
    StoreUnavailable,
    make_engine,
)
from wodsync.store.sessions import (
    TRANSITIONS,
    AlreadyLive,
    Candidate,
    CapacityReached,
    ExtensionRefused,
    InvalidTransition,
    NoFreeSeat,
    Participant,
    Session,
    SessionEvent,
    SessionNotFound,
    Sessions,
)
from wodsync.store.status import (
    Facts,
    HostCondition,
    HostStatus,
    Reconciliation,
    RepositoryState,
    Result,
    Status,
    Trigger,
)

__all__ = [
    "DB_FILE",
    "LIVE_STATES",
    "TRANSITIONS",
    "AlreadyLive",
    "Candidate",
    "CapacityReached",
    "ExtensionRefused",
    "Facts",
    "HostCondition",
    "HostStatus",
    "InvalidTransition",
    "NoFreeSeat",
    "Participant",
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
    "Trigger",
    "WriterBusy",
    "WriterLock",
    "default_url",
    "open_store",
    "writer_holder",
    "writer_running",
]

DB_FILE = "wodsync.db"


class Store:
    """An open store: `sessions` and `status`, over one engine (thread-safe, pooled)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = Sessions(engine)
        self.status = Status(engine)

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

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
    """Open (creating or upgrading) the store at `url`, or SQLite under `state_dir`."""
    if url is None:
        if state_dir is None:
            raise StoreError("open_store needs a database URL or a state directory")
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        url = default_url(state_dir)
    engine = make_engine(url)
    try:
        migrations.upgrade(engine)
    except OperationalError as exc:
        engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreUnavailable(f"cannot open the store at {where}: {reason}") from None
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)
