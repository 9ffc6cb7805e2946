"""the approver group and approvals channel of an organization, set in Slack

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 10:00:00.000000

Both columns are empty for every organization: the server's settings
(TOKENBOT_APPROVER_GROUP, TOKENBOT_APPROVALS_CHANNEL) apply until an admin sets one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STR = sqlmodel.sql.sqltypes.AutoString


# Plain ALTER TABLE, not a batch: on SQLite a batch copies the table, and the copy of
# ``organization`` cannot be dropped while other tables' rows point at it.
def upgrade() -> None:
    op.add_column("organization", sa.Column("approver_group", STR(length=80), nullable=True))
    op.add_column("organization", sa.Column("approvals_channel", STR(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("organization", "approvals_channel")
    op.drop_column("organization", "approver_group")
