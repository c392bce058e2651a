"""Tenants, conversation summaries, and the SQL sink's table of system-channel records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("tenant", sa.String(128), nullable=True))
        batch.add_column(sa.Column("summary", sa.Text(), nullable=True))
        batch.add_column(sa.Column("summary_covers", sa.JSON(), nullable=True))
    op.create_index(
        "ix_conversations_tenant_created_at_id", "conversations", ["tenant", "created_at", "id"]
    )
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("tenant", sa.String(128), nullable=True))
    op.create_table(
        "route_records",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("conversation_id", sa.String(64), nullable=True),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("stream_id", "route", name="uq_route_records_stream_route"),
    )


def downgrade() -> None:
    op.drop_table("route_records")
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("tenant")
    op.drop_index("ix_conversations_tenant_created_at_id", "conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("summary_covers")
        batch.drop_column("summary")
        batch.drop_column("tenant")
