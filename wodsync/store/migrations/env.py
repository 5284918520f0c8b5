"""Alembic's entry point: migrate the connection `wodsync.store` hands over.

Opening a store runs this inside the caller's write transaction (see `upgrade` in this
package), so the schema change and the version stamp commit together, and two processes
opening a fresh database one after the other do not both create it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from wodsync.store.models import Base, StoreError, make_engine

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise StoreError("wodsync migrations run on a live database only (no --sql mode)")
given = config.attributes.get("connection")
if given is not None:
    _run(given)
else:  # a developer's `alembic` command (e.g. revision --autogenerate) with a URL
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()
