"""a token is valid once delivered

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 19:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("token") as batch_op:
        batch_op.add_column(
            sa.Column("delivered_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
    # Tokens issued before this revision were shown when they were issued (or revoked).
    op.execute("UPDATE token SET delivered_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("token") as batch_op:
        batch_op.drop_column("delivered_at")
