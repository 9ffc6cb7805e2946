"""The sweep: reminders before the cutoff (R12), expiry after it (R13), and revocation
of tokens not delivered by their deadline (R14).

Its cost follows the tokens that are due, not all tokens: it reads only through the
indexes on (state, cutoff_at) and (state, next_notice_at), in batches, one organization
at a time with the organization locked. Each reminder stage and each expiry is queued
once as a notice, whose unique key makes a second sweeper's attempt a no-op, across
restarts and replicas.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from storage import audit, outbox
from storage.db import Database
from storage.models import Member, NoticeKind, Organization, Token, TokenState
from storage.orgs import LockedOrg, lock_org
from storage.services import recipients
from storage.tokens import TOKEN_INFO_COLUMNS, TokenInfo, lapse, token_info

TOKEN = Token.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
ORG = Organization.__table__  # type: ignore[attr-defined]
BATCH = 500


@dataclass
class SweepReport:
    expired: list[tuple[str, TokenInfo]] = field(default_factory=list)
    reminded: list[tuple[str, TokenInfo, int]] = field(default_factory=list)
    undelivered: list[tuple[str, TokenInfo]] = field(default_factory=list)  # revoked

    def lines(self) -> list[str]:
        out = [
            f"expired  {org}  {t.name} ({t.hint})  cutoff {t.cutoff_at:%Y-%m-%d %H:%M}"
            for org, t in self.expired
        ]
        out += [
            f"revoked  {org}  {t.name} ({t.hint})  not delivered by {t.cutoff_at:%Y-%m-%d %H:%M}"
            for org, t in self.undelivered
        ]
        out += [
            f"reminder {org}  {t.name} ({t.hint})  {stage} day(s) before "
            f"{t.cutoff_at:%Y-%m-%d %H:%M}"
            for org, t, stage in self.reminded
        ]
        return out


def _due(column: sa.Column[datetime]) -> tuple[sa.ColumnElement[bool], ...]:
    """One organization's active tokens whose ``column`` time has come."""
    return (
        TOKEN.c.org_id == sa.bindparam("org"),
        TOKEN.c.state == TokenState.ACTIVE,
        column <= sa.bindparam("now"),
    )


def _batch(column: sa.Column[datetime]) -> sa.Select[Any]:
    """The next batch of them, locked, skipping rows another sweeper holds."""
    return (
        sa.select(
            *TOKEN_INFO_COLUMNS, MEMBER.c.slack_user_id.label("owner"), TOKEN.c.service_user_id
        )
        .select_from(TOKEN.outerjoin(MEMBER, TOKEN.c.member_id == MEMBER.c.id))
        .where(*_due(column))
        .order_by(column)
        .limit(BATCH)
        .with_for_update(of=TOKEN, skip_locked=True)
    )


# Each reads through its (org_id, state, column) index: the cost follows what is due.
_HAS_EXPIRED = sa.select(TOKEN.c.id).where(*_due(TOKEN.c.cutoff_at)).limit(1)
_HAS_NOTICE = sa.select(TOKEN.c.id).where(*_due(TOKEN.c.next_notice_at)).limit(1)
_EXPIRED = _batch(TOKEN.c.cutoff_at)
_REMINDERS = _batch(TOKEN.c.next_notice_at)
_ORG_IDS = sa.select(ORG.c.id).order_by(ORG.c.id)
_NEXT_NOTICE = (
    sa.update(TOKEN)
    .where(TOKEN.c.id == sa.bindparam("token"))
    .values(next_notice_at=sa.bindparam("next_notice"))
)
_ORG_SLACK_ID = sa.select(ORG.c.slack_id).where(ORG.c.id == sa.bindparam("org"))


class _DryRun(Exception):
    pass


@contextmanager
def _transaction(db: Database, dry_run: bool) -> Iterator[Session]:
    """A write transaction, rolled back at the end when ``dry_run``."""
    try:
        with db.write() as session:
            yield session
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass


def _recipients(session: Session, org: LockedOrg, row: Any) -> list[str]:
    """Who hears about the token: its member, or its service user's owners (R12)."""
    if row.owner is not None:
        return [row.owner]
    if row.service_user_id is not None:
        return recipients(session, org.id, row.service_user_id)
    return []


def _queue(
    session: Session,
    org: LockedOrg,
    token: TokenInfo,
    to: list[str],
    kind: NoticeKind,
    stage: int,
    now: datetime,
) -> bool:
    """Queue a notice to each of ``to``; False if every one of them exists already."""
    queued = [
        outbox.queue_token_notice(session, org, token, kind, stage, recipient, now)
        for recipient in to
    ]
    return any(queued)


def _due_stage(org: LockedOrg, cutoff: datetime, now: datetime) -> int | None:
    """The most imminent reminder stage whose time has come (earlier ones are skipped:
    one message, not a burst, after the sweep was down)."""
    due = [d for d in org.reminder_days if cutoff - timedelta(days=d) <= now]
    return min(due) if due else None


def _next_notice(org: LockedOrg, cutoff: datetime, stage: int) -> datetime:
    later = [d for d in org.reminder_days if d < stage]
    return cutoff - timedelta(days=max(later)) if later else cutoff


def _sweep_org(
    db: Database, org_id: int, now: datetime, dry_run: bool, report: SweepReport
) -> None:
    for query, handle in ((_EXPIRED, _expire), (_REMINDERS, _remind)):
        while True:
            with _transaction(db, dry_run) as session:
                slack_id = session.execute(_ORG_SLACK_ID, {"org": org_id}).scalar_one()
                org = lock_org(session, slack_id, now)
                rows = session.execute(query, {"org": org.id, "now": now}).all()
                moved = [
                    handle(
                        session, org, token_info(row), _recipients(session, org, row), now, report
                    )
                    for row in rows
                ]
            # A full batch means there may be more; none moved means the rest is someone
            # else's (locked by another sweeper) or not this pass's business.
            if len(rows) < BATCH or dry_run or not any(moved):
                break


def _expire(
    session: Session,
    org: LockedOrg,
    token: TokenInfo,
    to: list[str],
    now: datetime,
    report: SweepReport,
) -> bool:
    ended = lapse(session, org, token, now)
    if token.delivered_at is None:  # never shown, so nobody is told (R14)
        report.undelivered.append((org.slack_id, ended))
        return True
    _queue(session, org, token, to, NoticeKind.EXPIRED, 0, now)
    report.expired.append((org.slack_id, ended))
    return True


def _remind(
    session: Session,
    org: LockedOrg,
    token: TokenInfo,
    to: list[str],
    now: datetime,
    report: SweepReport,
) -> bool:
    """Queue the reminder that is due; False if the token is not this pass's business."""
    if token.cutoff_at <= now:
        return False  # expired, not reminded: the expiry pass takes it
    stage = _due_stage(org, token.cutoff_at, now)
    if stage is None:  # reminder days changed since next_notice_at was set
        nxt = org.first_notice(token.cutoff_at)
        session.execute(_NEXT_NOTICE, {"token": token.id, "next_notice": nxt})
        return True
    session.execute(
        _NEXT_NOTICE,
        {"token": token.id, "next_notice": _next_notice(org, token.cutoff_at, stage)},
    )
    queued = _queue(session, org, token, to, NoticeKind.REMINDER, stage, now)
    if queued or not to:  # nobody left to tell is on the record too
        audit.record(
            session,
            org,
            actor=audit.SYSTEM,
            action="token.reminder",
            subject=f"token:{token.id}",
            now=now,
            detail={
                "name": token.name,
                "hint": token.hint,
                "days_before": stage,
                "recipients": len(to),
            },
        )
    if queued:
        report.reminded.append((org.slack_id, token, stage))
    return True


def sweep(db: Database, now: datetime, *, dry_run: bool = False) -> SweepReport:
    """Expire tokens past their cutoff and queue the reminders that are due, as of
    ``now``. With ``dry_run`` nothing is written; the report says what would be done."""
    report = SweepReport()
    with db.read() as session:
        orgs = [
            org
            for org in session.execute(_ORG_IDS).scalars()
            if session.execute(_HAS_EXPIRED, {"org": org, "now": now}).first()
            or session.execute(_HAS_NOTICE, {"org": org, "now": now}).first()
        ]
    for org_id in orgs:
        _sweep_org(db, org_id, now, dry_run, report)
    return report
