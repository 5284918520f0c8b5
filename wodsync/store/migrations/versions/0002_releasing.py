"""Releases that did not finish: the `releasing` state holds the seat until the host is done.

A session whose CLEANUP, RESET or PURGE could not finish on its host (host down, a step
failed) is `releasing`: its participant's e-mail and capacity slot are free, its seat is not,
and the operation is retried with back-off. The seat's unique index now counts `releasing`
sessions too, and each session remembers the operation to retry, the attempts and the next.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATES = ("creating", "active", "cleaning", "held", "resetting", "releasing", "failed",
          "ended")
SEAT = "state IN ('creating', 'active', 'cleaning', 'held', 'resetting', 'releasing')"
LIVE = "state IN ('creating', 'active', 'cleaning', 'held', 'resetting')"


def _email_index() -> None:
    """SQLite's batch mode copies the table and cannot reflect an expression index: the
    e-mail index is dropped before and made again after, on both databases alike."""
    op.create_index("uq_sessions_live_email", "sessions", ["workshop", sa.text("lower(email)")],
                    unique=True, sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE))


def upgrade() -> None:
    op.drop_index("uq_sessions_live_seat", table_name="sessions")
    op.drop_index("uq_sessions_live_email", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("release_op", sa.String(16), nullable=True))
        batch.add_column(sa.Column("release_attempts", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("next_release_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.drop_constraint(op.f("ck_sessions_state"), type_="check")
        batch.create_check_constraint(
            op.f("ck_sessions_state"),
            "state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")")
    op.create_index("uq_sessions_live_seat", "sessions", ["host", "seat"], unique=True,
                    sqlite_where=sa.text(SEAT), postgresql_where=sa.text(SEAT))
    op.create_index("ix_sessions_state_next_release_at", "sessions",
                    ["state", "next_release_at"])
    _email_index()


def downgrade() -> None:
    """Back to 0001: a `releasing` session becomes `failed` (its error says what was left)."""
    op.execute("UPDATE sessions SET state = 'failed' WHERE state = 'releasing'")
    op.drop_index("ix_sessions_state_next_release_at", table_name="sessions")
    op.drop_index("uq_sessions_live_seat", table_name="sessions")
    op.drop_index("uq_sessions_live_email", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint(op.f("ck_sessions_state"), type_="check")
        batch.create_check_constraint(
            op.f("ck_sessions_state"),
            "state IN (" + ", ".join(f"'{s}'" for s in STATES if s != "releasing") + ")")
        for column in ("next_release_at", "release_attempts", "release_op"):
            batch.drop_column(column)
    live = SEAT.replace(", 'releasing'", "")
    op.create_index("uq_sessions_live_seat", "sessions", ["host", "seat"], unique=True,
                    sqlite_where=sa.text(live), postgresql_where=sa.text(live))
    _email_index()
