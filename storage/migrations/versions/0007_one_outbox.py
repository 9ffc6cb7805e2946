"""one outbox for every message that must arrive

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 10:00:00.000000

Reminders and expiry notices (``notice``), reports to the admins (``ownerlessreport``)
and the approvers' daily digests (``approvaldigest``) move into ``outbox``, keeping their
status, attempts and times. Each moved notice and digest gets the dedupe key the code
gives it when queuing, so nothing already queued or sent is queued again.
"""

from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.models

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
AT = storage.models.UTCDateTime

# The tables as this revision knows them, whatever the models say later.
outbox = sa.table(
    "outbox",
    sa.column("id", sa.Integer()),
    sa.column("org_id", sa.Integer()),
    sa.column("kind", sa.String()),
    sa.column("dedupe_key", sa.String()),
    sa.column("recipient", sa.String()),
    sa.column("token_id", sa.Integer()),
    sa.column("payload", sa.JSON()),
    sa.column("status", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("next_attempt_at", AT()),
    sa.column("last_error", sa.String()),
    sa.column("created_at", AT()),
    sa.column("sent_at", AT()),
)
notice = sa.table(
    "notice",
    sa.column("id", sa.Integer()),
    sa.column("org_id", sa.Integer()),
    sa.column("token_id", sa.Integer()),
    sa.column("kind", sa.String()),
    sa.column("stage", sa.Integer()),
    sa.column("cutoff_at", AT()),
    sa.column("recipient", sa.String()),
    sa.column("status", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("next_attempt_at", AT()),
    sa.column("last_error", sa.String()),
    sa.column("created_at", AT()),
    sa.column("sent_at", AT()),
)
report = sa.table(
    "ownerlessreport",
    sa.column("id", sa.Integer()),
    sa.column("org_id", sa.Integer()),
    sa.column("member", sa.String()),
    sa.column("service_users", sa.JSON()),
    sa.column("status", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("next_attempt_at", AT()),
    sa.column("created_at", AT()),
    sa.column("sent_at", AT()),
)
digest = sa.table(
    "approvaldigest",
    sa.column("org_id", sa.Integer()),
    sa.column("recipient", sa.String()),
    sa.column("day", sa.Date()),
    sa.column("sent_at", AT()),
)


def _rows(table: Any, *order: Any) -> Iterator[list[Any]]:
    """Every row of ``table``, a batch at a time, in ``order`` (a unique key)."""
    offset = 0
    while (
        batch := op.get_bind()
        .execute(sa.select(table).order_by(*order).limit(BATCH).offset(offset))
        .all()
    ):
        yield batch
        offset += len(batch)


def _notice_key(kind: str, token_id: int, stage: int, cutoff: datetime, recipient: str) -> str:
    # As storage.outbox.token_notice_key words it.
    if kind == "expired":
        return f"expired:{token_id}:{recipient}"
    return f"reminder:{token_id}:{cutoff.isoformat()}:{stage}:{recipient}"


def _digest_key(org_id: int, recipient: str, day: date) -> str:
    # As storage.outbox.digest_key words it.
    return f"digest:{org_id}:{day.isoformat()}:{recipient}"


def _create_outbox() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("dedupe_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", AT(timezone=True), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("created_at", AT(timezone=True), nullable=False),
        sa.Column("sent_at", AT(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"]),
        sa.ForeignKeyConstraint(["token_id"], ["token.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_due", ["status", "next_attempt_at"], unique=False)


def _create_old_tables() -> None:
    """``notice``, ``ownerlessreport`` and ``approvaldigest`` as revisions 0002 and 0004
    made them."""
    op.create_table(
        "notice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("cutoff_at", AT(timezone=True), nullable=False),
        sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", AT(timezone=True), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("created_at", AT(timezone=True), nullable=False),
        sa.Column("sent_at", AT(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"]),
        sa.ForeignKeyConstraint(["token_id"], ["token.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_id", "kind", "stage", "cutoff_at", "recipient"),
    )
    with op.batch_alter_table("notice", schema=None) as batch_op:
        batch_op.create_index("ix_notice_due", ["status", "next_attempt_at"], unique=False)
    op.create_table(
        "approvaldigest",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sent_at", AT(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"]),
        sa.PrimaryKeyConstraint("org_id", "recipient", "day"),
    )
    op.create_table(
        "ownerlessreport",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("member", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("service_users", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", AT(timezone=True), nullable=False),
        sa.Column("created_at", AT(timezone=True), nullable=False),
        sa.Column("sent_at", AT(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ownerlessreport", schema=None) as batch_op:
        batch_op.create_index("ix_ownerlessreport_due", ["status", "next_attempt_at"], unique=False)


def _drop_old_tables() -> None:
    with op.batch_alter_table("notice", schema=None) as batch_op:
        batch_op.drop_index("ix_notice_due")
    op.drop_table("notice")
    with op.batch_alter_table("ownerlessreport", schema=None) as batch_op:
        batch_op.drop_index("ix_ownerlessreport_due")
    op.drop_table("ownerlessreport")
    op.drop_table("approvaldigest")


def _insert(table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        op.get_bind().execute(sa.insert(table), rows)


def upgrade() -> None:
    _create_outbox()
    for batch in _rows(notice, notice.c.id):
        _insert(
            outbox,
            [
                {
                    "org_id": row.org_id,
                    "kind": row.kind,
                    "dedupe_key": _notice_key(
                        row.kind, row.token_id, row.stage, row.cutoff_at, row.recipient
                    ),
                    "recipient": row.recipient,
                    "token_id": row.token_id,
                    "payload": {"stage": row.stage, "cutoff_at": row.cutoff_at.isoformat()},
                    "status": row.status,
                    "attempts": row.attempts,
                    "next_attempt_at": row.next_attempt_at,
                    "last_error": row.last_error,
                    "created_at": row.created_at,
                    "sent_at": row.sent_at,
                }
                for row in batch
            ],
        )
    for batch in _rows(report, report.c.id):
        _insert(
            outbox,
            [
                {
                    "org_id": row.org_id,
                    "kind": "ownerless",
                    "dedupe_key": None,
                    "recipient": None,  # the organization's admins
                    "token_id": None,
                    "payload": {"member": row.member, "service_users": list(row.service_users)},
                    "status": row.status,
                    "attempts": row.attempts,
                    "next_attempt_at": row.next_attempt_at,
                    "last_error": None,
                    "created_at": row.created_at,
                    "sent_at": row.sent_at,
                }
                for row in batch
            ],
        )
    # A digest row is a day's digest taken by a sweeper: sent, or on its way.
    for batch in _rows(digest, digest.c.org_id, digest.c.recipient, digest.c.day):
        _insert(
            outbox,
            [
                {
                    "org_id": row.org_id,
                    "kind": "digest",
                    "dedupe_key": _digest_key(row.org_id, row.recipient, row.day),
                    "recipient": row.recipient,
                    "token_id": None,
                    "payload": {"day": row.day.isoformat()},
                    "status": "sent",
                    "attempts": 1,
                    "next_attempt_at": row.sent_at,
                    "last_error": None,
                    "created_at": row.sent_at,
                    "sent_at": row.sent_at,
                }
                for row in batch
            ],
        )
    _drop_old_tables()


def downgrade() -> None:
    _create_old_tables()
    for batch in _rows(outbox, outbox.c.id):
        notices, reports, digests = [], [], []
        for row in batch:
            if row.kind in ("reminder", "expired"):
                notices.append(
                    {
                        "org_id": row.org_id,
                        "token_id": row.token_id,
                        "kind": row.kind,
                        "stage": row.payload["stage"],
                        "cutoff_at": datetime.fromisoformat(row.payload["cutoff_at"]),
                        "recipient": row.recipient,
                        "status": row.status,
                        "attempts": row.attempts,
                        "next_attempt_at": row.next_attempt_at,
                        "last_error": row.last_error,
                        "created_at": row.created_at,
                        "sent_at": row.sent_at,
                    }
                )
            elif row.kind == "ownerless":
                reports.append(
                    {
                        "org_id": row.org_id,
                        "member": row.payload["member"],
                        "service_users": row.payload["service_users"],
                        "status": row.status,
                        "attempts": row.attempts,
                        "next_attempt_at": row.next_attempt_at,
                        "created_at": row.created_at,
                        "sent_at": row.sent_at,
                    }
                )
            elif row.kind == "digest" and row.status == "sent":
                # A digest not sent is not taken: the older code takes it again that day.
                digests.append(
                    {
                        "org_id": row.org_id,
                        "recipient": row.recipient,
                        "day": date.fromisoformat(row.payload["day"]),
                        "sent_at": row.sent_at,
                    }
                )
        _insert(notice, notices)
        _insert(report, reports)
        _insert(digest, digests)
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_due")
    op.drop_table("outbox")
