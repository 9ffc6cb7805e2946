"""webhook endpoints

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 10:00:00.000000

The organizations' webhook endpoints. Their events travel through the outbox, as
messages of the kind ``webhook``: the outbox needs no change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AT = storage.models.UTCDateTime
STR = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "webhookendpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("url", STR(length=2000), nullable=False),
        sa.Column("secret", STR(length=100), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("created_at", AT(timezone=True), nullable=False),
        sa.Column("created_by", STR(length=32), nullable=False),
        sa.Column("disabled_at", AT(timezone=True), nullable=True),
        sa.Column("last_status", STR(length=64), nullable=True),
        sa.Column("last_attempt_at", AT(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhookendpoint", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhookendpoint_org_id"), ["org_id"], unique=False)


def downgrade() -> None:
    # Webhook messages still owed have nobody to go to once the endpoints are gone.
    op.execute("DELETE FROM outbox WHERE kind = 'webhook'")
    with op.batch_alter_table("webhookendpoint", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhookendpoint_org_id"))
    op.drop_table("webhookendpoint")
