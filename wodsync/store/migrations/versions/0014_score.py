"""The score of a session's checks, recorded at its CLEANUP beside its completion.

Revision ID: 0014
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A plain nullable column (no table copy on SQLite); `set_score` keeps it within 0-100."""
    op.add_column("sessions", sa.Column("score", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("score")
