"""Badges: the workshop badges and WoD's special badges awarded to participants.

A workshop badge is awarded once per session (unique over the session and the kind), a special
badge once per folded e-mail and level (a partial unique index over special badges).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SPECIAL = "kind = 'special'"


def upgrade() -> None:
    op.create_table(
        "badges",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("badge", sa.String(100), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("image", sa.String(2048), nullable=False),
        sa.Column("criteria", sa.Text(), nullable=False),
        sa.Column("session_id", sa.String(12), nullable=False),
        sa.Column("workshop", sa.String(100), nullable=False),
        sa.Column("completion", sa.Float(), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("awarded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('workshop', 'special')", name=op.f("ck_badges_kind")),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE",
                                name=op.f("fk_badges_session_id_sessions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badges")),
    )
    op.create_index("ix_badges_session_id", "badges", ["session_id"])
    op.create_index("uq_badges_session_id_kind", "badges", ["session_id", "kind"], unique=True)
    op.create_index("uq_badges_special", "badges", ["email_key", "badge"], unique=True,
                    sqlite_where=sa.text(SPECIAL), postgresql_where=sa.text(SPECIAL))
    op.create_index("ix_badges_email_key", "badges", ["email_key"])


def downgrade() -> None:
    op.drop_table("badges")
