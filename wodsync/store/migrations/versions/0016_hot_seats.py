"""Hot seats: sessions set up ahead of a scheduled event, without a participant yet.

A hot seat is a session in the new state `hot`: it holds its seat and a capacity slot of its
workshop like a live session (the unique indexes count it), and `hot_seats` says which event it
was prepared for and when a CREATE took it.

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None

BEFORE = ("creating", "active", "cleaning", "held", "resetting", "releasing", "failed",
          "ended")
LIVE_BEFORE = ("creating", "active", "cleaning", "held", "resetting")


def _in(states: tuple[str, ...]) -> str:
    return "state IN (" + ", ".join(f"'{s}'" for s in states) + ")"


def _indexes(live: tuple[str, ...]) -> None:
    """The live-session indexes over `live` (and `releasing` for seats)."""
    where, seat = sa.text(_in(live)), sa.text(_in((*live, "releasing")))
    op.create_index("uq_sessions_live_seat", "sessions", ["host", "seat"], unique=True,
                    sqlite_where=seat, postgresql_where=seat)
    op.create_index("uq_sessions_live_slot", "sessions", ["workshop", "slot"], unique=True,
                    sqlite_where=where, postgresql_where=where)
    op.create_index("uq_sessions_live_email", "sessions", ["workshop", sa.text("lower(email)")],
                    unique=True, sqlite_where=where, postgresql_where=where)


def _states(states: tuple[str, ...]) -> None:
    """SQLite's batch mode copies the table and cannot reflect an expression index: the live
    indexes are dropped before and made again after (`_indexes`), as in 0002."""
    for name in ("uq_sessions_live_seat", "uq_sessions_live_slot", "uq_sessions_live_email"):
        op.drop_index(name, table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint(op.f("ck_sessions_state"), type_="check")
        batch.create_check_constraint(op.f("ck_sessions_state"), _in(states))


def upgrade() -> None:
    _states((*BEFORE, "hot"))
    _indexes((*LIVE_BEFORE, "hot"))
    op.create_table(
        "hot_seats",
        sa.Column("session_id", sa.String(12), nullable=False),
        sa.Column("event", sa.String(100), nullable=False),
        sa.Column("prepared_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name=op.f("fk_hot_seats_session_id_sessions")),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_hot_seats")))
    op.create_index(op.f("ix_hot_seats_event"), "hot_seats", ["event"])


def downgrade() -> None:
    """Back to 0014: a hot seat not taken has no participant and goes (its seat is released
    by the next sync of the host's records, which no longer match a session)."""
    op.drop_index(op.f("ix_hot_seats_event"), table_name="hot_seats")
    op.drop_table("hot_seats")
    op.execute("UPDATE sessions SET state = 'releasing', release_op = 'purge' "
               "WHERE state = 'hot'")
    _states(BEFORE)
    _indexes(LIVE_BEFORE)
