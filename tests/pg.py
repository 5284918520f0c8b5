"""A real PostgreSQL for tests: a fresh database per test module, dropped afterwards.

`./bootstrap test` starts Debian's cluster, gives root a role that may create databases
(peer authentication on the unix socket) and exports WODSYNC_TEST_PG. Without that variable
the same default URL is tried and tests skip, saying why, when it does not answer; when the
variable IS set, an unreachable server fails the tests instead, so a broken setup cannot pass
as "skipped".

`private_cluster()` is for tests that restart PostgreSQL itself: a cluster of their own.
"""

from __future__ import annotations

import base64
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

ENV = "WODSYNC_TEST_PG"
DEFAULT_URL = "postgresql+psycopg://root@/wodsync_test?host=/var/run/postgresql"


def server_url() -> str:
    """The URL of a database on the test server that the tests' role may log in to."""
    return os.environ.get(ENV) or DEFAULT_URL


def unavailable(url: str) -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        return f"PostgreSQL at {make_url(url).render_as_string()} is not available: {exc.orig}"
    finally:
        engine.dispose()
    return None


def require_server() -> str:
    """The server's URL, or skip (no WODSYNC_TEST_PG) / fail (it is set but does not work)."""
    url = server_url()
    reason = unavailable(url)
    if reason is None:
        return url
    if os.environ.get(ENV):
        pytest.fail(f"{ENV} is set but {reason}", pytrace=False)
    pytest.skip(f"{reason} (run ./bootstrap test, which starts it and sets {ENV})")


@contextmanager
def temporary_database(server: str) -> Iterator[str]:
    """A new empty database on `server`, dropped (connections and all) on exit."""
    name = f"wodsync_t_{secrets.token_hex(6)}"
    admin = create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def store_on(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh store on `sqlite` (under tmp_path) or `postgresql` (a temporary database, the
    passwords' key in the environment: there is no state folder to keep it in)."""
    from wodsync.store import KEY_ENV, open_store

    if backend == "sqlite":
        opened = open_store(state_dir=tmp_path / "state")
        try:
            yield opened
        finally:
            opened.close()
        return
    monkeypatch.setenv(KEY_ENV, base64.urlsafe_b64encode(os.urandom(32)).decode())
    with temporary_database(require_server()) as url:
        opened = open_store(url)
        try:
            yield opened
        finally:
            opened.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the whole test module."""
    with temporary_database(require_server()) as url:
        yield url


class PrivateCluster:
    """A throw-away PostgreSQL cluster of this test's own: its data folder and unix socket in a
    temporary folder, no TCP, so it can be stopped and restarted without touching the machine's
    shared cluster (other tests' databases live there)."""

    def __init__(self, bindir: Path, folder: Path, port: int = 5432) -> None:
        self.bindir, self.folder, self.port = bindir, folder, port
        self.data = folder / "data"

    def url(self, database: str = "postgres") -> str:
        return (f"postgresql+psycopg://postgres@/{database}"
                f"?host={self.folder}&port={self.port}")

    def _as_postgres(self, *argv: str) -> None:
        """A server command as the `postgres` user (it refuses to run as root)."""
        subprocess.run([str(self.bindir / argv[0]), *argv[1:]], check=True, cwd=self.folder,
                       user="postgres", group="postgres", extra_groups=[],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def init(self) -> None:
        self._as_postgres("initdb", "-D", str(self.data), "--auth=trust", "--username=postgres",
                          "--encoding=UTF8", "--no-locale", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = ''\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.folder}'\nfsync = off\n"
                       "max_connections = 40\nshared_buffers = 16MB\n")

    def start(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"),
                          "-w", "-t", "60", "start")

    def restart(self) -> None:
        """A fast restart: every connection ends, and every session-level lock with it."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60",
                          "restart")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        admin = create_engine(self.url(), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)


def server_bindir() -> Path | None:
    """The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else None


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started private cluster, stopped and removed on exit; skips (saying why) without
    root, the `postgres` user or PostgreSQL's server programs."""
    bindir = server_bindir()
    if os.geteuid() != 0:
        pytest.skip("a private PostgreSQL cluster needs root (initdb runs as postgres)")
    if bindir is None:
        pytest.skip("no PostgreSQL server programs under /usr/lib/postgresql "
                    "(./bootstrap test installs them)")
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no `postgres` user to run a private cluster as")
    folder = Path(tempfile.mkdtemp(prefix="wodsync-pg-"))
    try:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        cluster = PrivateCluster(bindir, folder)
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            with suppress(subprocess.CalledProcessError):
                cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
