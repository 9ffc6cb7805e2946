"""Which organizations owe their approvers the reminder digest of pending requests
(R25). The digests themselves go through the outbox, at most one a day per approver."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from storage.db import Database
from storage.models import ApprovalRequest, RequestState
from storage.orgs import ORG

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
