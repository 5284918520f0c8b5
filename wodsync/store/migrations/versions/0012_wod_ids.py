"""WoD ids: the numeric ids wod-frontend's URLs carry (workshops, customers, students).

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wod_ids",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("key", sa.String(120), nullable=False),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "id", name=op.f("pk_wod_ids")),
    )
    op.create_index("uq_wod_ids_kind_key", "wod_ids", ["kind", "key"], unique=True)


def downgrade() -> None:
    op.drop_table("wod_ids")
