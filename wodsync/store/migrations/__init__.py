"""Schema migrations, run by the store itself when it is opened.

Why inside the package: a controller upgraded with pip must find its database upgraded on the
next start, with no separate `alembic upgrade` step and no alembic.ini to ship. A new revision
is written with Alembic as usual, pointing it at this folder, e.g.::

    from alembic import command
    from wodsync.store.migrations import alembic_config
    command.revision(alembic_config(url="sqlite:////tmp/x.db"), "what changes",
                     autogenerate=True)

and then read and completed by hand (partial indexes need their `sqlite_where` and
`postgresql_where`).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, text

from wodsync.store.models import StoreError, reading, writing

HERE = Path(__file__).resolve().parent
# pg_advisory_xact_lock key ("wodsmigr"): one migrating process at a time per database.
MIGRATION_LOCK_KEY = 0x776F64736D696772


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration for this folder, with no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The revision the code's models correspond to."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise StoreError(f"wodsync's migrations have {len(heads)} heads: {heads}; merge them")
    return heads[0]


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with reading(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> bool:
    """Bring the database to `head()`; True if anything was done."""
    target = head()
    if current(engine) == target:
        return False
    with writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        found = MigrationContext.configure(conn).get_current_revision()
        _check_known(found, engine)
        if found != target:
            command.upgrade(alembic_config(connection=conn), "head")
    return True


def _check_known(revision: str | None, engine: Engine) -> None:
    if revision is None:
        return
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        raise StoreError(
            f"the database {engine.url.render_as_string(hide_password=True)} is at schema "
            f"revision {revision}, which this wodsync does not know: it was written by a "
            "newer wodsync") from None
