"""Reports to the admins of service users left with no active owner (R17): an outbox,
queued in the deactivation's transaction, claimed with a lease, retried until sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from storage.db import Database
from storage.models import OwnerlessReport
from storage.orgs import ORG, LockedOrg

REPORT = OwnerlessReport.__table__  # type: ignore[attr-defined]
LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 12


@dataclass(frozen=True)
class ReportToSend:
    id: int
    member: str
    service_users: list[str]
    attempts: int


_DUE = (
    sa.select(
        REPORT.c.id,
        REPORT.c.member,
        REPORT.c.service_users,
        REPORT.c.attempts,
    )
    .select_from(REPORT.join(ORG, REPORT.c.org_id == ORG.c.id))
    .where(
        ORG.c.slack_id == sa.bindparam("org"),
        REPORT.c.status == "pending",
        REPORT.c.next_attempt_at <= sa.bindparam("now"),
    )
    .order_by(REPORT.c.next_attempt_at, REPORT.c.id)
    .limit(1)
    .with_for_update(of=REPORT, skip_locked=True)
)
_UPDATE = sa.update(REPORT).where(REPORT.c.id == sa.bindparam("report"))
# Only the holder of the latest claim may settle a report: a deliverer whose lease ran
# out and was taken over changes nothing.
_SETTLE = _UPDATE.where(REPORT.c.status == "pending", REPORT.c.attempts == sa.bindparam("claimed"))


def queue(
    session: Session, org: LockedOrg, member: str, service_users: list[str], now: datetime
) -> None:
    """Owe the admins a report, in the caller's transaction."""
    session.execute(
        sa.insert(REPORT),
        {
            "org_id": org.id,
            "member": member,
            "service_users": service_users,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
    )


def claim_next(db: Database, org_slack_id: str, now: datetime) -> ReportToSend | None:
    """The organization's next report due at ``now``, leased to the caller for LEASE."""
    with db.write() as session:
        row = session.execute(_DUE, {"org": org_slack_id, "now": now}).first()
        if row is None:
            return None
        session.execute(
            _UPDATE.values(next_attempt_at=now + LEASE, attempts=REPORT.c.attempts + 1),
            {"report": row.id},
        )
        return ReportToSend(row.id, row.member, list(row.service_users), row.attempts + 1)


def mark_sent(db: Database, report: ReportToSend, now: datetime) -> None:
    with db.write() as session:
        session.execute(
            _SETTLE.values(status="sent", sent_at=now),
            {"report": report.id, "claimed": report.attempts},
        )


def mark_retry(db: Database, report: ReportToSend, now: datetime, delay: timedelta) -> None:
    """Try again after ``delay``; after MAX_ATTEMPTS the report is given up as failed."""
    status = "failed" if report.attempts >= MAX_ATTEMPTS else "pending"
    with db.write() as session:
        session.execute(
            _SETTLE.values(status=status, next_attempt_at=now + delay),
            {"report": report.id, "claimed": report.attempts},
        )
