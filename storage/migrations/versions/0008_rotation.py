"""rotation with a grace period

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:00:00.000000

Each organization gets its grace period (``rotation_grace_hours``, 24 by default). A
token records when its rotation started (``rotated_at``) and the token it replaces
(``replaces_id``). A token being rotated gives up its name and its place under the cap
to its replacement, so the unique indexes on names leave it out.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AT = storage.models.UTCDateTime
# The unique indexes on names (revisions 0001 and 0003): the owner's column of each.
NAME_INDEXES = {
    "uq_token_active_member_name": "member_id",
    "uq_token_active_service_name": "service_user_id",
}
ACTIVE = "state = 'active'"  # what they covered before this revision
NAME_HELD = "state = 'active' AND rotated_at IS NULL"


def _drop_name_indexes(where: str) -> None:
    with op.batch_alter_table("token", schema=None) as batch_op:
        for name in NAME_INDEXES:
            batch_op.drop_index(name, sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def _create_name_indexes(where: str) -> None:
    with op.batch_alter_table("token", schema=None) as batch_op:
        for name, owner in NAME_INDEXES.items():
            batch_op.create_index(
                name,
                [owner, "name_key"],
                unique=True,
                sqlite_where=sa.text(where),
                postgresql_where=sa.text(where),
            )


def upgrade() -> None:
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "rotation_grace_hours",
                sa.Integer(),
                nullable=False,
                server_default=str(storage.models.DEFAULT_ROTATION_GRACE_HOURS),
            )
        )
    _drop_name_indexes(ACTIVE)
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rotated_at", AT(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("replaces_id", sa.Integer(), nullable=True))
    _create_name_indexes(NAME_HELD)


def downgrade() -> None:
    # Without rotation, two active tokens of one owner cannot share a name: the old
    # tokens still in their grace period end now, as the sweep would end them later.
    op.execute(
        "UPDATE token SET state = 'revoked', state_reason = 'rotated', "
        "state_changed_at = CURRENT_TIMESTAMP "
        "WHERE state = 'active' AND rotated_at IS NOT NULL"
    )
    _drop_name_indexes(NAME_HELD)
    # Not in batch mode: on SQLite that rebuilds the table, which the tables referring to
    # it forbid while foreign keys are enforced; SQLite drops a column in place.
    op.drop_column("token", "replaces_id")
    op.drop_column("token", "rotated_at")
    _create_name_indexes(ACTIVE)
    op.drop_column("organization", "rotation_grace_hours")
