"""Sessions and their events, host status, reconciliations, repository, facts.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LIVE = "state IN ('creating', 'active', 'cleaning', 'held', 'resetting')"
STATES = "state IN ('creating', 'active', 'cleaning', 'held', 'resetting', 'failed', 'ended')"


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _live_unique(name: str, *columns: str | sa.TextClause) -> None:
    op.create_index(name, "sessions", list(columns), unique=True,
                    sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE))


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(12), nullable=False),
        sa.Column("workshop", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("company", sa.String(200), nullable=False),
        sa.Column("location", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("seat", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("duration_hours", sa.Float(), nullable=False),
        _at("created_at", nullable=False),
        _at("started_at"),
        _at("ends_at"),
        _at("ended_at"),
        _at("expiring_at"),
        sa.Column("completion", sa.Float(), nullable=True),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("password", sa.String(255), nullable=False),
        sa.CheckConstraint(STATES, name=op.f("ck_sessions_state")),
        sa.CheckConstraint("slot >= 0", name=op.f("ck_sessions_slot")),
        sa.CheckConstraint("completion IS NULL OR (completion >= 0 AND completion <= 100)",
                           name=op.f("ck_sessions_completion")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    _live_unique("uq_sessions_live_seat", "host", "seat")
    _live_unique("uq_sessions_live_email", "workshop", sa.text("lower(email)"))
    _live_unique("uq_sessions_live_slot", "workshop", "slot")
    op.create_index("ix_sessions_state_ends_at", "sessions", ["state", "ends_at"])
    op.create_index("ix_sessions_host", "sessions", ["host"])

    op.create_table(
        "session_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(12), nullable=False),
        _at("at", nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name=op.f("fk_session_events_session_id_sessions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_events")),
    )
    op.create_index("ix_session_events_session_id", "session_events", ["session_id"])

    op.create_table(
        "host_status",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("condition", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(100), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("last_attempted_revision", sa.String(64), nullable=True),
        sa.Column("last_applied_revision", sa.String(64), nullable=True),
        _at("last_success_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("drift_count", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        _at("next_attempt_at"),
        _at("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("host", name=op.f("pk_host_status")),
    )

    op.create_table(
        "reconciliations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        _at("started_at", nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliations")),
    )
    op.create_index("ix_reconciliations_host_started_at", "reconciliations",
                    ["host", "started_at"])

    op.create_table(
        "repository",
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("branch", sa.String(255), nullable=False),
        sa.Column("head_revision", sa.String(64), nullable=True),
        sa.Column("last_good_revision", sa.String(64), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=False),
        _at("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("url", "branch", name=op.f("pk_repository")),
    )

    op.create_table(
        "facts",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        _at("observed_at", nullable=False),
        sa.Column("revision", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("host", name=op.f("pk_facts")),
    )


def downgrade() -> None:
    for table in ("facts", "repository", "reconciliations", "host_status", "session_events",
                  "sessions"):
        op.drop_table(table)
