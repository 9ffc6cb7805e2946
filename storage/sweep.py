"""The sweep: reminders before the cutoff (R12), expiry after it (R13), revocation of
tokens not delivered by their deadline (R14), and of rotated tokens at the end of their
grace period (R18).

Its cost follows the tokens that are due, not all tokens: it reads only through the
indexes on (state, cutoff_at) and (state, next_notice_at), in batches, one organization
at a time with the organization locked. Each step of a batch is one statement for all
of its tokens (the state change, their audit events in order, the recipients of service
tokens, the notices, next_notice_at), so a due token costs a share of a handful of
statements, not a handful of its own. Each reminder stage and each expiry is queued
once as a notice, whose unique key makes a second sweeper's attempt a no-op, across
restarts and replicas; rows another sweeper holds are skipped, not waited for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from storage import audit, outbox
from storage.db import Database
from storage.models import Member, NoticeKind, Organization, Token, TokenState, UTCDateTime
from storage.orgs import LockedOrg, lock_org, unnest
from storage.services import OWNER, recipients
from storage.tokens import TOKEN_INFO_COLUMNS, TokenInfo, lapse_all, token_info

TOKEN = Token.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
ORG = Organization.__table__  # type: ignore[attr-defined]
BATCH = 500


@dataclass
class SweepReport:
    expired: list[tuple[str, TokenInfo]] = field(default_factory=list)
    reminded: list[tuple[str, TokenInfo, int]] = field(default_factory=list)
    undelivered: list[tuple[str, TokenInfo]] = field(default_factory=list)  # revoked
    rotated: list[tuple[str, TokenInfo]] = field(default_factory=list)  # revoked, grace over

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
            f"revoked  {org}  {t.name} ({t.hint})  rotated, grace ended "
            f"{t.cutoff_at:%Y-%m-%d %H:%M}"
            for org, t in self.rotated
        ]
        out += [
            f"reminder {org}  {t.name} ({t.hint})  {stage} day(s) before "
            f"{t.cutoff_at:%Y-%m-%d %H:%M}"
            for org, t, stage in self.reminded
        ]
        return out


def _due(
    column: sa.Column[datetime], org: sa.ColumnElement[int] | None = None
) -> tuple[sa.ColumnElement[bool], ...]:
    """One organization's active tokens whose ``column`` time has come. A token a
    rotation replaced is reminded of no more (R18): it ends with its grace period."""
    due = (
        TOKEN.c.org_id == (sa.bindparam("org") if org is None else org),
        TOKEN.c.state == TokenState.ACTIVE,
        column <= sa.bindparam("now"),
    )
    return (*due, TOKEN.c.rotated_at.is_(None)) if column is TOKEN.c.next_notice_at else due


def _batch(column: sa.Column[datetime]) -> sa.Select[Any]:
    """The next batch of them, locked, skipping rows another sweeper holds."""
    return (
        sa.select(
            *TOKEN_INFO_COLUMNS, MEMBER.c.slack_user_id.label("owner"), TOKEN.c.service_user_id
        )
        .select_from(TOKEN.outerjoin(MEMBER, TOKEN.c.member_id == MEMBER.c.id))
        .where(*_due(column))
        .order_by(column)
        .limit(sa.bindparam("batch"))
        .with_for_update(of=TOKEN, skip_locked=True)
    )


# Each reads through its (org_id, state, column) index: the cost follows what is due.
# The organizations with something due are found in one statement (one index probe or
# two for each, in the database, not a round trip each).
_ORGS_DUE = (
    sa.select(ORG.c.id)
    .where(
        sa.or_(
            *(
                sa.exists().where(*_due(column, ORG.c.id))
                for column in (TOKEN.c.cutoff_at, TOKEN.c.next_notice_at)
            )
        )
    )
    .order_by(ORG.c.id)
)
_EXPIRED = _batch(TOKEN.c.cutoff_at)
_REMINDERS = _batch(TOKEN.c.next_notice_at)
_NEXT_NOTICE = (
    sa.update(TOKEN)
    .where(TOKEN.c.id == sa.bindparam("token"))
    .values(next_notice_at=sa.bindparam("next_notice"))
)
_ORG_SLACK_ID = sa.select(ORG.c.slack_id).where(ORG.c.id == sa.bindparam("org"))
# The active owners of each of a batch's service users, in one query.
_OWNERS = (
    sa.select(OWNER.c.service_user_id, MEMBER.c.slack_user_id)
    .select_from(OWNER.join(MEMBER, OWNER.c.member_id == MEMBER.c.id))
    .where(OWNER.c.service_user_id.in_(sa.bindparam("services", expanding=True)), ~MEMBER.c.deleted)
    .order_by(OWNER.c.service_user_id, MEMBER.c.slack_user_id)
)


_NEXT_NOTICES = unnest("due", token=sa.Integer(), next_notice=UTCDateTime())
_SET_NEXT_NOTICES = (
    sa.update(TOKEN)
    .where(TOKEN.c.id == _NEXT_NOTICES.c.token)
    .values(next_notice_at=_NEXT_NOTICES.c.next_notice)
)


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


def _recipients(session: Session, org: LockedOrg, rows: Sequence[Any]) -> dict[int, list[str]]:
    """Who hears about each token of the batch, by token id: its member, or its service
    user's owners (R12), as :func:`storage.services.recipients` says."""
    services = sorted({row.service_user_id for row in rows if row.owner is None} - {None})
    owners: dict[int, list[str]] = {}
    if services:
        for service, owner in session.execute(_OWNERS, {"services": services}):
            owners.setdefault(service, []).append(owner)
        ownerless = [service for service in services if service not in owners]
        if ownerless:  # the organization's admins, the same for every one of them
            admins = recipients(session, org.id, ownerless[0])
            owners.update((service, admins) for service in ownerless)
    return {
        row.id: [row.owner] if row.owner is not None else owners.get(row.service_user_id, [])
        for row in rows
    }


def _queue(
    session: Session,
    org: LockedOrg,
    kind: NoticeKind,
    due: Sequence[tuple[TokenInfo, int]],
    to: Mapping[int, list[str]],
    now: datetime,
) -> set[int]:
    """Owe a notice of ``kind`` to each of ``to[token.id]`` for each ``(token, stage)``
    of ``due``; the ids of the tokens of which at least one notice is new."""
    notices = [(token, stage, recipient) for token, stage in due for recipient in to[token.id]]
    return outbox.queue_token_notices(session, org, kind, notices, now)


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
                params = {"org": org.id, "now": now, "batch": BATCH}
                rows = session.execute(query, params).all()
                moved = handle(session, org, rows, now, report) if rows else 0
            # A full batch means there may be more; none moved means the rest is someone
            # else's (locked by another sweeper) or not this pass's business.
            if len(rows) < BATCH or dry_run or not moved:
                break


def _expire(
    session: Session, org: LockedOrg, rows: Sequence[Any], now: datetime, report: SweepReport
) -> int:
    """End the batch's tokens and queue their expiry notices; the number handled."""
    ended = lapse_all(session, org, [token_info(row) for row in rows], now)
    expired = [token for token in ended if token.state == TokenState.EXPIRED]
    # One never shown is revoked, and nobody is told (R14); nor of one rotated, whose
    # replacement its owner has (R18).
    _queue(
        session,
        org,
        NoticeKind.EXPIRED,
        [(t, 0) for t in expired],
        _recipients(session, org, rows),
        now,
    )
    for token in ended:
        if token.state == TokenState.EXPIRED:
            report.expired.append((org.slack_id, token))
        elif token.rotated_at is not None and token.delivered_at is not None:
            report.rotated.append((org.slack_id, token))
        else:
            report.undelivered.append((org.slack_id, token))
    return len(ended)


def _remind(
    session: Session, org: LockedOrg, rows: Sequence[Any], now: datetime, report: SweepReport
) -> int:
    """Queue the reminders that are due; the number of tokens handled (those past their
    cutoff are not this pass's business: the expiry pass takes them)."""
    tokens = [token for token in map(token_info, rows) if token.cutoff_at > now]
    next_notice: dict[int, datetime] = {}
    due: list[tuple[TokenInfo, int]] = []
    for token in tokens:
        stage = _due_stage(org, token.cutoff_at, now)
        if stage is None:  # reminder days changed since next_notice_at was set
            next_notice[token.id] = org.first_notice(token.cutoff_at)
        else:
            next_notice[token.id] = _next_notice(org, token.cutoff_at, stage)
            due.append((token, stage))
    _set_next_notice(session, next_notice)
    to = _recipients(session, org, rows)
    queued = _queue(session, org, NoticeKind.REMINDER, due, to, now)
    events = [
        audit.NewEvent(
            actor=audit.SYSTEM,
            action="token.reminder",
            subject=f"token:{token.id}",
            detail={
                "name": token.name,
                "hint": token.hint,
                "days_before": stage,
                "recipients": len(to[token.id]),
            },
        )
        for token, stage in due
        if token.id in queued or not to[token.id]  # nobody left to tell is on the record too
    ]
    audit.record_all(session, org, events, now)
    report.reminded += [(org.slack_id, token, stage) for token, stage in due if token.id in queued]
    return len(tokens)


def _set_next_notice(session: Session, next_notice: Mapping[int, datetime]) -> None:
    """Move each token's next_notice_at: in one statement on PostgreSQL; on SQLite, which
    runs in process, one per token costs no more."""
    if not next_notice:
        return
    if session.get_bind().dialect.name == "postgresql":
        params = {"token": list(next_notice), "next_notice": list(next_notice.values())}
        session.execute(_SET_NEXT_NOTICES, params)
    else:
        rows = [{"token": token, "next_notice": at} for token, at in next_notice.items()]
        session.execute(_NEXT_NOTICE, rows)


def sweep(db: Database, now: datetime, *, dry_run: bool = False) -> SweepReport:
    """Expire tokens past their cutoff and queue the reminders that are due, as of
    ``now``. With ``dry_run`` nothing is written; the report says what would be done."""
    report = SweepReport()
    with db.read() as session:
        orgs = list(session.execute(_ORGS_DUE, {"now": now}).scalars())
    for org_id in orgs:
        _sweep_org(db, org_id, now, dry_run, report)
    return report
