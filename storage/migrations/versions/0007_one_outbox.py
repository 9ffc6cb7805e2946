"""one outbox for every message that must arrive

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 10:00:00.000000

Reminders and expiry notices (``notice``), reports to the admins (``ownerlessreport``)
and the approvers' daily digests (``approvaldigest``) move into ``outbox``, keeping their
status, attempts and times. Each moved notice and digest gets the dedupe key the code
gives it when queuing, so nothing already queued or sent is queued again.
"""

from collections.abc import Callable, Iterator, Sequence
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
STR = sqlmodel.sql.sqltypes.AutoString


# The tables as this revision knows them, whatever the models say later: the columns
# and constraints to create each one, or to read and write it.
def _on_its_way() -> list[Any]:
    """What the outbox and the notices both keep of a message on its way."""
    return [
        sa.Column("status", STR(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", AT(timezone=True), nullable=False),
        sa.Column("last_error", STR(length=200), nullable=True),
        sa.Column("created_at", AT(timezone=True), nullable=False),
        sa.Column("sent_at", AT(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"]),
        sa.ForeignKeyConstraint(["token_id"], ["token.id"]),
        sa.PrimaryKeyConstraint("id"),
    ]


def _outbox() -> list[Any]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("kind", STR(length=16), nullable=False),
        sa.Column("dedupe_key", STR(length=200), nullable=True),
        sa.Column("recipient", STR(length=32), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        *_on_its_way(),
        sa.UniqueConstraint("dedupe_key"),
    ]


def _notice() -> list[Any]:  # as revision 0002 made it
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("kind", STR(length=16), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("cutoff_at", AT(timezone=True), nullable=False),
        sa.Column("recipient", STR(length=32), nullable=False),
        *_on_its_way(),
        sa.UniqueConstraint("token_id", "kind", "stage", "cutoff_at", "recipient"),
    ]


def _ownerlessreport() -> list[Any]:  # as revision 0004 made it
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("member", STR(length=32), nullable=False),
        sa.Column("service_users", sa.JSON(), nullable=False),
        sa.Column("status", STR(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", AT(timezone=True), nullable=False),
        sa.Column("created_at", AT(timezone=True), nullable=False),
        sa.Column("sent_at", AT(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"]),
        sa.PrimaryKeyConstraint("id"),
    ]


def _approvaldigest() -> list[Any]:  # as revision 0004 made it
    return [
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("recipient", STR(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sent_at", AT(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organization.id"]),
        sa.PrimaryKeyConstraint("org_id", "recipient", "day"),
    ]


# Each table with the index that finds what is due, if it has one.
TABLES: dict[str, tuple[Callable[[], list[Any]], str | None]] = {
    "outbox": (_outbox, "ix_outbox_due"),
    "notice": (_notice, "ix_notice_due"),
    "ownerlessreport": (_ownerlessreport, "ix_ownerlessreport_due"),
    "approvaldigest": (_approvaldigest, None),
}


def _create(name: str) -> sa.Table:
    schema, due = TABLES[name]
    table = op.create_table(name, *schema())
    if due is not None:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.create_index(due, ["status", "next_attempt_at"], unique=False)
    return table


def _existing(name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), *TABLES[name][0]())


def _drop(name: str) -> None:
    due = TABLES[name][1]
    if due is not None:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_index(due)
    op.drop_table(name)


def _rows(table: sa.Table, *order: Any) -> Iterator[list[Any]]:
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


PROGRESS = ("status", "attempts", "next_attempt_at", "created_at", "sent_at")


def _progress(row: Any) -> dict[str, Any]:
    """How far a message has come, in the names the outbox and the old tables share."""
    return {name: row._mapping[name] for name in PROGRESS}


def _insert(table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        op.get_bind().execute(sa.insert(table), rows)


def upgrade() -> None:
    outbox = _create("outbox")
    notice, report = _existing("notice"), _existing("ownerlessreport")
    digest = _existing("approvaldigest")
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
                    **_progress(row),
                    "last_error": row.last_error,
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
                    **_progress(row),
                    "last_error": None,
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
    for name in ("notice", "ownerlessreport", "approvaldigest"):
        _drop(name)


def downgrade() -> None:
    notice, report = _create("notice"), _create("ownerlessreport")
    digest = _create("approvaldigest")
    outbox = _existing("outbox")
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
                        **_progress(row),
                        "last_error": row.last_error,
                    }
                )
            elif row.kind == "ownerless":
                reports.append(
                    {
                        "org_id": row.org_id,
                        "member": row.payload["member"],
                        "service_users": row.payload["service_users"],
                        **_progress(row),
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
    _drop("outbox")
