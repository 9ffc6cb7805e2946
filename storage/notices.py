"""The outbox of reminders and expiry notices: claimed, sent, retried (R12, R13)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from storage.db import Database
from storage.models import Notice, Organization, ServiceUser, Token, TokenState
from storage.tokens import TOKEN_INFO_COLUMNS, TokenInfo, token_info

NOTICE = Notice.__table__  # type: ignore[attr-defined]
TOKEN = Token.__table__  # type: ignore[attr-defined]
ORG = Organization.__table__  # type: ignore[attr-defined]
SERVICE = ServiceUser.__table__  # type: ignore[attr-defined]
LEASE = timedelta(minutes=5)  # a claimed notice not marked by then is tried again
MAX_ATTEMPTS = 12


@dataclass(frozen=True)
class NoticeToSend:
    id: int
    org: str  # the organization's Slack id
    kind: str
    stage: int
    recipient: str
    token: TokenInfo
    allow_keep_alive: bool
    attempts: int
    service_user: str | None = None  # its name, for a service token


_DUE = (
    sa.select(
        NOTICE.c.id.label("notice_id"),
        NOTICE.c.kind.label("notice_kind"),
        NOTICE.c.stage,
        NOTICE.c.recipient,
        NOTICE.c.attempts,
        NOTICE.c.cutoff_at.label("notice_cutoff"),
        ORG.c.slack_id.label("org"),
        ORG.c.allow_keep_alive,
        SERVICE.c.name.label("service_user"),
        *TOKEN_INFO_COLUMNS,
    )
    .select_from(
        NOTICE.join(TOKEN, NOTICE.c.token_id == TOKEN.c.id)
        .join(ORG, NOTICE.c.org_id == ORG.c.id)
        .outerjoin(SERVICE, TOKEN.c.service_user_id == SERVICE.c.id)
    )
    .where(NOTICE.c.status == "pending", NOTICE.c.next_attempt_at <= sa.bindparam("now"))
    .order_by(NOTICE.c.next_attempt_at, NOTICE.c.id)
    .limit(sa.bindparam("limit"))
    .with_for_update(of=NOTICE, skip_locked=True)
)
_UPDATE = sa.update(NOTICE).where(NOTICE.c.id == sa.bindparam("notice"))
# Only the holder of the latest claim may settle a notice: a sender whose lease ran out
# and was taken over changes nothing (it could otherwise put a sent reminder back to
# pending, or mark one failed that another sender delivered).
_SETTLE = _UPDATE.where(NOTICE.c.status == "pending", NOTICE.c.attempts == sa.bindparam("claimed"))


def claim_due(db: Database, now: datetime, limit: int = 50) -> list[NoticeToSend]:
    """Notices due at ``now``, each leased to the caller for LEASE. A reminder whose
    window has ended (the token was used, kept, revoked or expired) is dropped."""
    claimed: list[NoticeToSend] = []
    with db.write() as session:
        for row in session.execute(_DUE, {"now": now, "limit": limit}).all():
            token = token_info(row)
            stale = row.notice_kind == "reminder" and (
                token.state != TokenState.ACTIVE or token.cutoff_at != row.notice_cutoff
            )
            if stale:
                session.execute(_UPDATE.values(status="skipped"), {"notice": row.notice_id})
                continue
            session.execute(
                _UPDATE.values(next_attempt_at=now + LEASE, attempts=NOTICE.c.attempts + 1),
                {"notice": row.notice_id},
            )
            claimed.append(
                NoticeToSend(
                    id=row.notice_id,
                    org=row.org,
                    kind=row.notice_kind,
                    stage=row.stage,
                    recipient=row.recipient,
                    token=token,
                    allow_keep_alive=row.allow_keep_alive,
                    attempts=row.attempts + 1,
                    service_user=row.service_user,
                )
            )
    return claimed


def _claim(notice: NoticeToSend) -> dict[str, int]:
    return {"notice": notice.id, "claimed": notice.attempts}


def mark_sent(db: Database, notice: NoticeToSend, now: datetime) -> None:
    """The notice went out; settles it only if the caller still holds its claim."""
    with db.write() as session:
        session.execute(_SETTLE.values(status="sent", sent_at=now), _claim(notice))


def mark_retry(
    db: Database, notice: NoticeToSend, now: datetime, delay: timedelta, error: str
) -> None:
    """Try again after ``delay``; after MAX_ATTEMPTS the notice is given up as failed.
    Only the current claim holder's word counts."""
    status = "failed" if notice.attempts >= MAX_ATTEMPTS else "pending"
    with db.write() as session:
        session.execute(
            _SETTLE.values(status=status, next_attempt_at=now + delay, last_error=error[:200]),
            _claim(notice),
        )


def mark_failed(db: Database, notice: NoticeToSend, error: str) -> None:
    """Give up for good: Slack said it can never be delivered (say, the user is gone).
    Only the current claim holder's word counts."""
    with db.write() as session:
        session.execute(_SETTLE.values(status="failed", last_error=error[:200]), _claim(notice))


def pending_count(db: Database) -> int:
    with db.read() as session:
        query = sa.select(sa.func.count()).select_from(NOTICE).where(NOTICE.c.status == "pending")
        return int(session.execute(query).scalar_one())
