"""The reminder digest of pending requests, at most one a day per approver (R25)."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from storage.db import Database
from storage.models import ApprovalDigest, ApprovalRequest, RequestState
from storage.orgs import ORG, find_org, insert_ignore

DIGEST = ApprovalDigest.__table__  # type: ignore[attr-defined]
REQUEST = ApprovalRequest.__table__  # type: ignore[attr-defined]
# A request is worth a reminder once it has waited this long: the approvers were sent
# the request itself when it was made.
WAITING = timedelta(days=1)
_WAITING_ORGS = (
    sa.select(ORG.c.slack_id)
    .select_from(REQUEST.join(ORG, REQUEST.c.org_id == ORG.c.id))
    .where(
        REQUEST.c.state == RequestState.PENDING,
        REQUEST.c.created_at <= sa.bindparam("since"),
    )
    .distinct()
    .order_by(ORG.c.slack_id)
)


def orgs_due(db: Database, now: datetime) -> list[str]:
    """The organizations (Slack ids) with a request pending for a day or more."""
    with db.read() as session:
        return list(session.execute(_WAITING_ORGS, {"since": now - WAITING}).scalars())


def _key(org_id: int, recipient: str, now: datetime) -> dict[str, object]:
    return {"org_id": org_id, "recipient": recipient, "day": now.date()}


def claim(db: Database, org_slack_id: str, recipient: str, now: datetime) -> bool:
    """Take ``recipient``'s digest for the day of ``now`` (UTC); False if it was taken
    already, by this process or any other."""
    with db.write() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return False
        return insert_ignore(session, DIGEST, {**_key(org.id, recipient, now), "sent_at": now})


def release(db: Database, org_slack_id: str, recipient: str, now: datetime) -> None:
    """Give the day's digest back after its delivery failed: a later sweep tries again."""
    with db.write() as session:
        org = find_org(session, org_slack_id)
        if org is not None:
            key = _key(org.id, recipient, now)
            session.execute(
                sa.delete(DIGEST).where(
                    *(DIGEST.c[column] == value for column, value in key.items())
                )
            )
