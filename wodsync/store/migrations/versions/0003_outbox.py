"""The outbox: e-mails written in the transaction of the change that causes them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATES = "state IN ('queued', 'sending', 'sent', 'failed', 'dropped')"


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("session_id", sa.String(12), nullable=True),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("dedup_key", sa.String(200), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        _at("created_at", nullable=False),
        _at("next_attempt_at", nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        _at("lease_until"),
        _at("sent_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(STATES, name=op.f("ck_outbox_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index("uq_outbox_dedup_key", "outbox", ["dedup_key"], unique=True)
    op.create_index("ix_outbox_state_next_attempt_at", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_session_id", "outbox", ["session_id"])


def downgrade() -> None:
    op.drop_table("outbox")
