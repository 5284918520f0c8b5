"""The source's own condition, hosts' stalled-since, and alert episodes.

The repository row keeps the source's condition (`Ready`/`Stalled`), its reason, message and
since when, and its fetches: the last attempt, the last success, the failures in a row and
when the next try is due (a back-off). A host's status keeps since when it is not Ready after
a Stalled, and `alerts` one row per subject so that each episode is told once.

Revision ID: 0007
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0013"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("repository") as batch:
        batch.add_column(sa.Column("condition", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(100), nullable=True))
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))
        batch.add_column(_at("since"))
        batch.add_column(_at("last_fetch_at"))
        batch.add_column(_at("last_fetched_at"))
        batch.add_column(sa.Column("fetch_failures", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(_at("next_fetch_at"))
    with op.batch_alter_table("host_status") as batch:
        batch.add_column(_at("stalled_since"))
    op.execute("UPDATE host_status SET stalled_since = updated_at WHERE condition = 'Stalled'")
    op.create_table(
        "alerts",
        sa.Column("subject", sa.String(300), nullable=False),
        _at("since", nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _at("fired_at", nullable=False),
        _at("resolved_at"),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_alerts")),
    )


def downgrade() -> None:
    op.drop_table("alerts")
    with op.batch_alter_table("host_status") as batch:
        batch.drop_column("stalled_since")
    with op.batch_alter_table("repository") as batch:
        for name in ("next_fetch_at", "fetch_failures", "last_fetched_at", "last_fetch_at",
                     "since", "message", "reason", "condition"):
            batch.drop_column(name)
