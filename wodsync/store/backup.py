"""Backing the store up while it serves, and restoring it.

Why not `cp`: SQLite runs in WAL mode, so the database is the file *and* its `-wal`; a copy of
the file alone, or of both at different moments, can miss committed sessions or be corrupt.
SQLite's online backup API copies one consistent snapshot while others keep writing, into a
single self-contained file (journal mode DELETE), checked with `integrity_check` before it
replaces the target. PostgreSQL is dumped with its own `pg_dump` (custom format) and restored
with `pg_restore`; the URL's parts reach them through the environment (`PGHOST`, `PGPORT`,
`PGUSER`, `PGDATABASE`, `PGPASSWORD`, `PGSSLMODE`), never their command line, which `ps`
shows to every user. Without those programs the error says exactly what to run.

A backup holds the live sessions' passwords sealed: the key (`WODSYNC_STORE_KEY` or
`store.key`) is kept apart and must be backed up apart. A restore brings back an older
picture of the sessions; the hosts' seat records are newer, so `wodsync store restore`
reconciles the two before anything serves (`SessionService.sync_records`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from wodsync.store.files import FILE_MODE, sqlite_file
from wodsync.store.models import StoreError, normalize_url

PG_TIMEOUT_S = 3600


class BackupError(StoreError):
    """A backup or restore could not be made; nothing was replaced (the message says why and
    what to do)."""


@dataclass(frozen=True)
class Done:
    """What was written: the file, its size and how (the SQLite backup API, pg_dump…)."""

    path: Path
    bytes: int
    how: str


# ---- SQLite ---------------------------------------------------------------------------------

def _private_temp(near: Path) -> Path:
    tmp = near.with_name(f".{near.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE))
    return tmp


def _check_copy(path: Path) -> None:
    """A store written by wodsync, whole: SQLite's integrity check and the schema's marks."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            found = db.execute("PRAGMA integrity_check").fetchone()
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a SQLite database ({exc})") from None
    if not found or found[0] != "ok":
        raise BackupError(f"{path}: SQLite's integrity check failed: {found}")
    if not {"alembic_version", "sessions"} <= tables:
        raise BackupError(f"{path}: not a wodsync store (no sessions table or schema version)")


def sqlite_backup(database: Path, target: Path) -> Done:
    """One consistent snapshot of `database`, taken while others write, into `target`
    (0600, replaced only once the copy is whole and checked)."""
    if not database.exists():
        raise BackupError(f"{database}: no such store")
    tmp = _private_temp(target)
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as source, \
                contextlib.closing(sqlite3.connect(tmp)) as copy:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        _check_copy(tmp)
        tmp.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return Done(target, target.stat().st_size, "SQLite online backup")


def sqlite_restore(source: Path, database: Path) -> Done:
    """`source` (a backup) becomes the store at `database`, through SQLite's backup API into
    the live file (its WAL included), so no reader ever sees half of each."""
    _check_copy(source)
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as backup, \
            contextlib.closing(sqlite3.connect(database, timeout=30)) as live:
        backup.backup(live)
    return Done(database, database.stat().st_size, "SQLite online backup")


# ---- PostgreSQL ------------------------------------------------------------------------------

def pg_environment(url: URL) -> dict[str, str]:
    """The URL's parts as libpq's environment: nothing of it on a command line."""
    query = {k: v if isinstance(v, str) else v[0] for k, v in url.query.items()}
    values = {"PGHOST": query.get("host") or url.host, "PGPORT": query.get("port") or
              (str(url.port) if url.port else None), "PGUSER": url.username,
              "PGPASSWORD": url.password, "PGDATABASE": url.database,
              "PGSSLMODE": query.get("sslmode")}
    return {k: str(v) for k, v in values.items() if v}


def _guidance(program: str, url: URL, file: Path, restore: bool) -> str:
    parts = pg_environment(url)
    shown = " ".join(f"{k}={v}" for k, v in parts.items() if k != "PGPASSWORD")
    run = (f"pg_restore --clean --if-exists --no-owner --single-transaction "
           f"--dbname={url.database} {file}") if restore else \
        f"pg_dump --format=custom --file={file}"
    return (f"{program} is not installed (Debian: apt-get install postgresql-client); run "
            f"it yourself with the password in PGPASSWORD or ~/.pgpass, never on the command "
            f"line: {shown} {run}")


def _pg_run(argv: list[str], url: URL) -> None:
    done = subprocess.run(argv, env={**os.environ, **pg_environment(url)},
                          capture_output=True, text=True, timeout=PG_TIMEOUT_S)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise BackupError(f"{argv[0]} failed (exit {done.returncode}): " + " / ".join(tail))


def pg_backup(url: URL, target: Path) -> Done:
    program = shutil.which("pg_dump")
    if program is None:
        raise BackupError(_guidance("pg_dump", url, target, restore=False))
    tmp = _private_temp(target)
    try:
        _pg_run([program, "--format=custom", "--no-password", f"--file={tmp}"], url)
        tmp.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return Done(target, target.stat().st_size, "pg_dump (custom format)")


def pg_restore(url: URL, source: Path) -> Done:
    program = shutil.which("pg_restore")
    if program is None:
        raise BackupError(_guidance("pg_restore", url, source, restore=True))
    if not source.is_file():
        raise BackupError(f"{source}: no such backup")
    _pg_run([program, "--clean", "--if-exists", "--no-owner", "--single-transaction",
             "--no-password", f"--dbname={url.database}", str(source)], url)
    return Done(source, source.stat().st_size, "pg_restore")


# ---- either ---------------------------------------------------------------------------------

def backup(url: str, target: Path) -> Done:
    """Back the store at `url` up into `target`."""
    normalized = normalize_url(url)
    database = sqlite_file(normalized)
    if database is not None:
        return sqlite_backup(database, target)
    parsed = make_url(normalized)
    if parsed.get_backend_name() != "postgresql":
        raise BackupError(f"cannot back up a {parsed.get_backend_name()} store")
    return pg_backup(parsed, target)


def restore(url: str, source: Path) -> Done:
    """Replace the store at `url` with the backup `source` (nothing may be serving from it)."""
    normalized = normalize_url(url)
    database = sqlite_file(normalized)
    if database is not None:
        if not source.is_file():
            raise BackupError(f"{source}: no such backup")
        return sqlite_restore(source, database)
    return pg_restore(make_url(normalized), source)


def has_identity(url: str) -> bool:
    """Whether the database at `url` already has the store's identity (a backup made before
    wodsync kept one has not: its first open makes a new one)."""
    engine = create_engine(normalize_url(url), poolclass=NullPool)
    try:
        return inspect(engine).has_table("store_identity")
    finally:
        engine.dispose()


def keep_identity(url: str, identity: str) -> None:
    """Give the restored store the identity the replaced one had, so the hosts its daemon
    manages still recognise it."""
    engine = create_engine(normalize_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE store_identity SET id = :id"), {"id": identity})
    finally:
        engine.dispose()
