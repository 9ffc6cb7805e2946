"""per-organization cap on a member's pending service-token requests

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 19:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "pending_request_cap",
                sa.Integer(),
                nullable=False,
                server_default=str(storage.models.DEFAULT_PENDING_REQUEST_CAP),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.drop_column("pending_request_cap")
