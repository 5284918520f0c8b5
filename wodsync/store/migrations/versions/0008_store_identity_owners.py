"""The store's identity, and which process owns a session while it is being worked on.

`store_identity` holds one random id made when the store is created (or upgraded to this
revision): the hosts a daemon manages record it (`wodsync.agent.manager`), so an `apply` from
another store — or from none — is recognised on the host whatever it was given. A backup
restored keeps it. `sessions.owner` names the process (machine, boot, pid, start time) that
moved a session into `creating`, `cleaning` or `resetting`; `process_leases` holds each
serving process's last sign of life, so that recovery only takes over the half-done sessions
of processes that are gone, never those of a live replica.

Revision ID: 0008
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    identity = op.create_table(
        "store_identity",
        sa.Column("id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_identity")))
    op.bulk_insert(identity, [{"id": secrets.token_hex(16)}])
    op.add_column("sessions", sa.Column("owner", sa.String(200), nullable=True))
    op.create_table(
        "process_leases",
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_process_leases")))


def downgrade() -> None:
    op.drop_table("process_leases")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("owner")
    op.drop_table("store_identity")
