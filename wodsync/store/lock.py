"""One writer: at most one wodsync daemon reconciles from a store at a time.

Two daemons on the same store would both reap sessions and both apply to hosts. With SQLite
(one machine) the guard is an exclusive `flock` on `<state>/daemon.lock`, released by the
kernel when the holder dies. With PostgreSQL daemons may run on several machines, so the guard
is a session-level advisory lock on a connection held for the daemon's lifetime; PostgreSQL
releases it when that connection dies, which lets a standby waiting in `acquire(wait=True)`
take over from a crashed primary.

The same release makes the PostgreSQL lock losable while its holder lives: a database restart
(or `pg_terminate_backend`) ends the connection and the lock with it, and another daemon may
take it. So the holder asks, on that very connection, whether its backend still holds the lock:
`check` every few seconds (`wodsync.daemon.writer` watches) and `fence` right before each
host's apply, which closes the window between the loss and the watcher noticing it. A flock
cannot be lost this way: for SQLite both only say whether it is held.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from wodsync.store.models import StoreError, StoreUnavailable, utcnow


class Store(Protocol):
    """What the lock reads of `wodsync.store.Store` (named by its shape: the store package
    imports this module)."""

    engine: Engine

    @property
    def backend(self) -> str: ...

    @property
    def url(self) -> str: ...

LOCK_FILE = "daemon.lock"
POLL_S = 1.0
CHECK_S = 2.0  # how often a daemon asks whether it still holds the lock
PROBE_RETRIES, PROBE_PAUSE_S = 5, 0.05
# The advisory lock's 64-bit key, "wodsync!" in ASCII; pg_locks shows it as two 32-bit halves.
WRITER_LOCK_KEY = 0x776F6473796E6321
_KEY_HI, _KEY_LO = WRITER_LOCK_KEY >> 32, WRITER_LOCK_KEY & 0xFFFFFFFF
_APP_NAME = re.compile(r"wodsync-daemon pid=(\d+) host=(\S*)")
_HOLDER_SQL = text("""
    SELECT a.application_name, a.backend_start
    FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.classid::bigint = :hi AND l.objid::bigint = :lo
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
""")
_MINE_SQL = text("""
    SELECT EXISTS (SELECT 1 FROM pg_locks AS l
                   WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                     AND l.pid = pg_backend_pid()
                     AND l.classid::bigint = :hi AND l.objid::bigint = :lo)
""")
# libpq: a peer that vanished without closing (a partition) fails a check in seconds, not hours.
_ALIVE = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 5,
          "keepalives_interval": 2, "keepalives_count": 2, "tcp_user_timeout": 10000}


class WriterBusy(StoreError):
    """Another daemon is the writer; the message says which and since when."""


class WriterLost(StoreError):
    """This daemon held the writer lock and no longer does: it must not write until it holds
    the lock again (the message says how it was lost)."""


class WriterLock:
    """Hold the store's writer role for as long as this object is acquired."""

    def __init__(self, state_dir: Path, store: Store) -> None:
        self.state_dir = Path(state_dir)
        self.store = store
        self.path = self.state_dir / LOCK_FILE
        self._fd: int | None = None
        self._conn: Connection | None = None
        self._engine: Engine | None = None
        self._using = threading.Lock()  # the watcher and host workers share the connection
        self.lost: str | None = None  # why the lock was last lost, until it is held again
        self.dropped = threading.Event()  # set on a loss, whoever noticed it (a fence too)

    @property
    def held(self) -> bool:
        return self._fd is not None or self._conn is not None

    def acquire(self, *, wait: bool = False, poll_s: float = POLL_S,
                until: threading.Event | None = None) -> None:
        """Become the writer, or raise WriterBusy; with `wait`, poll until the holder goes (or
        `until` is set: then return without the lock)."""
        if self.held:
            return
        probes = 0
        while not self._try(wait):
            if wait:
                if until is not None and until.wait(poll_s):
                    return
                if until is None:
                    time.sleep(poll_s)
                continue
            holder = self._holder()
            if holder is None and probes < PROBE_RETRIES:  # a `writer_running` probe, or gone
                probes += 1
                time.sleep(PROBE_PAUSE_S)
                continue
            raise WriterBusy(_busy_message(holder, self._what()))

    def check(self) -> str | None:
        """None while this process still holds the lock; else why not. A lost lock's
        connection is dropped: `acquire` takes a new one."""
        if self._fd is not None:
            return None
        with self._using:
            conn = self._conn
            if conn is None:
                return self.lost or "the writer lock is not held"
            try:
                mine = conn.scalar(_MINE_SQL, {"hi": _KEY_HI, "lo": _KEY_LO})
            except SQLAlchemyError as exc:
                why = f"its connection failed: {_first_line(exc)}"
            else:
                if mine:
                    return None
                why = "its backend no longer holds it in pg_locks"
            with contextlib.suppress(SQLAlchemyError):
                conn.close()
            self._conn, self.lost = None, why
            self.dropped.set()
            return why

    def fence(self) -> None:
        """Raise WriterLost unless this process holds the lock now (asked on the lock's own
        connection): called right before anything a second writer must never do at once."""
        why = self.check()
        if why is not None:
            raise WriterLost(f"the writer lock was lost: {why}")

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None
        with self._using:
            if self._conn is not None:
                self._unlock(self._conn)
                with contextlib.suppress(SQLAlchemyError):
                    self._conn.close()  # NullPool: the connection goes away too
                self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _what(self) -> str:
        if self.store.backend == "sqlite":
            return str(self.path)
        return f"the writer lock of {self.store.url}"

    def _try(self, wait: bool) -> bool:
        if self.store.backend == "sqlite":
            return self._try_flock()
        return self._try_advisory(wait)

    def _try_flock(self) -> bool:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": utcnow().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return True

    def _try_advisory(self, wait: bool) -> bool:
        if self._engine is None:
            name = f"wodsync-daemon pid={os.getpid()} host={socket.gethostname()}"
            self._engine = create_engine(self.store.engine.url, poolclass=NullPool,
                                         isolation_level="AUTOCOMMIT",
                                         connect_args={"application_name": name[:63],
                                                       **_ALIVE})
        conn = None
        try:
            conn = self._engine.connect()
            got = conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": WRITER_LOCK_KEY})
        except OperationalError as exc:
            if conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    conn.close()
            if wait:  # a standby outlives a database restart
                return False
            raise StoreUnavailable(f"cannot reach {self.store.url} for the writer lock: "
                                   f"{_first_line(exc)}") from None
        if got:
            with self._using:
                self._conn, self.lost = conn, None
                self.dropped.clear()
            return True
        conn.close()
        return False

    @staticmethod
    def _unlock(conn: Connection) -> None:
        """Unlock before closing: a closed connection's backend exits a moment later, and
        until it has, `pg_locks` still shows the lock to whoever looks next."""
        with contextlib.suppress(SQLAlchemyError):  # gone already, and the lock with it
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": WRITER_LOCK_KEY})

    def _holder(self) -> dict[str, Any] | None:
        return writer_holder(self.state_dir, self.store)


def writer_holder(state_dir: Path, store: Store) -> dict[str, Any] | None:
    """Who holds the writer role ({pid, host, since}), or None when no daemon is running."""
    if store.backend == "sqlite":
        return _flock_holder(Path(state_dir) / LOCK_FILE)
    with store.engine.connect() as conn:
        row = conn.execute(_HOLDER_SQL, {"hi": _KEY_HI, "lo": _KEY_LO}).first()
    if row is None:
        return None
    found = _APP_NAME.search(row.application_name or "")
    return {"pid": int(found[1]) if found else None, "host": found[2] if found else None,
            "since": _iso(row.backend_start)}


def writer_running(state_dir: Path, store: Store) -> str | None:
    """A sentence naming the running writer (for `wodsync apply` to print), or None."""
    holder = writer_holder(state_dir, store)
    if holder is None:
        return None
    what = str(Path(state_dir) / LOCK_FILE) if store.backend == "sqlite" else \
        f"the writer lock of {store.url}"
    return _busy_message(holder, what)


def _flock_holder(path: Path) -> dict[str, Any] | None:
    """Probe with a shared lock: it fails only while a daemon holds the exclusive one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_record(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_record(fd: int) -> dict[str, Any]:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        record = {}
    return {"pid": record.get("pid"), "host": record.get("host"), "since": record.get("since")}


def _busy_message(holder: dict[str, Any] | None, what: str) -> str:
    if holder is None:  # it went away between our try and our look
        return f"another wodsync daemon held {what} a moment ago; try again"
    pid = holder.get("pid") or "unknown"
    where = f" on {holder['host']}" if holder.get("host") else ""
    since = holder.get("since") or "an unknown time"
    return f"another wodsync daemon (pid {pid}{where}) holds {what} since {since}"


def _first_line(exc: SQLAlchemyError) -> str:
    """The driver's message without SQLAlchemy's statement and background link."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None
