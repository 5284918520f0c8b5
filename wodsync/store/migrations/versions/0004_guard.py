"""The seat guard: its events (rule, action, evidence) and the seats it quarantined.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guard_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("seat", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(12), nullable=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_events")))
    op.create_index("ix_guard_events_host_at", "guard_events", ["host", "at"])
    op.create_table(
        "quarantined_seats",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("seat", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("host", "seat", name=op.f("pk_quarantined_seats")))


def downgrade() -> None:
    op.drop_table("quarantined_seats")
    op.drop_index("ix_guard_events_host_at", table_name="guard_events")
    op.drop_table("guard_events")
