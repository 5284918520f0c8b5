"""The registration portal: registrations waiting for their confirmation, the attempts the
rate limits count, and the folded e-mail of a session (one live session per person across
workshops, by a unique partial index).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PERSON = "state IN ('creating', 'active', 'cleaning')"  # models.PERSON_SQL


def upgrade() -> None:
    op.create_table(
        "registrations",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("workshop", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("company", sa.String(200), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("session_id", sa.String(12), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registrations")),
    )
    op.create_index("ix_registrations_email_key", "registrations", ["email_key"])
    op.create_table(
        "registration_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration_attempts")),
    )
    op.create_index("ix_registration_attempts_email_key_at", "registration_attempts",
                    ["email_key", "at"])
    op.create_index("ix_registration_attempts_client_at", "registration_attempts",
                    ["client", "at"])
    op.add_column("sessions", sa.Column("email_key", sa.String(320), nullable=True))
    op.create_index("uq_sessions_live_email_key", "sessions", ["email_key"], unique=True,
                    sqlite_where=sa.text(PERSON), postgresql_where=sa.text(PERSON))


def downgrade() -> None:
    op.drop_index("uq_sessions_live_email_key", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("email_key")
    op.drop_table("registration_attempts")
    op.drop_table("registrations")
