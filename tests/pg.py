"""A real PostgreSQL for tests: a fresh database per test module, dropped afterwards.

`./bootstrap test` starts Debian's cluster, gives root a role that may create databases
(peer authentication on the unix socket) and exports WODSYNC_TEST_PG. Without that variable
the same default URL is tried and tests skip, saying why, when it does not answer; when the
variable IS set, an unreachable server fails the tests instead, so a broken setup cannot pass
as "skipped".
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

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


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the whole test module."""
    with temporary_database(require_server()) as url:
        yield url
