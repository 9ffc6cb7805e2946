"""The outbox: every message that must eventually arrive in Slack, whatever it says
(reminders R12, expiry notices R13, reports to the admins R17, approvers' digests R25,
a member told that an admin revoked their token R16).

A message is queued in the transaction that makes it owed, so it is never lost and,
where it must exist once, never doubled: its dedupe key makes a second sweeper's, a
restarted one's or a replica's attempt a no-op. A deliverer claims the messages that
are due, each with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so deliverers
never wait for one another); what a message says is rendered when it is sent, from its
payload. Only the holder of a message's latest claim settles it: sent, retried after a
backoff, or given up as the dead letter after MAX_ATTEMPTS or an error that will never
pass. A deliverer whose lease ran out and was taken over changes nothing: it could
otherwise put a sent message back to pending, or give up one another deliverer sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from storage.db import Database
from storage.models import NoticeKind, OutboxMessage, OutboxStatus, ServiceUser, Token, TokenState
from storage.orgs import ORG, LockedOrg, find_org, insert_ignore, unnest
from storage.tokens import TOKEN_INFO_COLUMNS, TokenInfo, token_info

OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
TOKEN = Token.__table__  # type: ignore[attr-defined]
SERVICE = ServiceUser.__table__  # type: ignore[attr-defined]
LEASE = timedelta(minutes=5)  # a claimed message not settled by then is claimed again
MAX_ATTEMPTS = 12
EVERY_KIND: tuple[NoticeKind, ...] = tuple(NoticeKind)
ERROR_MAX = 200  # characters of the last error kept


@dataclass(frozen=True)
class Message:
    """A claimed message. ``attempts`` counts this claim: settling it names the claim.
    For a message about a token, ``token`` is the token as it is now, with its
    organization's policy and its service user's name."""

    id: int
    org: str  # the organization's Slack id
    kind: NoticeKind
    recipient: str | None  # None: the organization's admins
    payload: dict[str, Any] = field(hash=False)
    attempts: int
    token: TokenInfo | None = None
    allow_keep_alive: bool = True
    service_user: str | None = None


def enqueue(
    session: Session,
    org: LockedOrg,
    kind: NoticeKind,
    now: datetime,
    *,
    recipient: str | None = None,
    payload: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    token_id: int | None = None,
) -> bool:
    """Owe a message, due at once, in the caller's transaction; False when one with the
    same ``dedupe_key`` is owed (or was sent) already."""
    return insert_ignore(
        session,
        OUTBOX,
        {
            "org_id": org.id,
            "kind": kind,
            "dedupe_key": dedupe_key,
            "recipient": recipient,
            "token_id": token_id,
            "payload": payload or {},
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
    )


def token_notice_key(
    kind: NoticeKind, token_id: int, stage: int, cutoff: datetime, recipient: str
) -> str:
    """The key that makes a reminder stage exist once per inactivity window (identified
    by its cutoff) and recipient, and an expiry once per recipient."""
    if kind == NoticeKind.EXPIRED:
        return f"expired:{token_id}:{recipient}"
    return f"reminder:{token_id}:{cutoff.isoformat()}:{stage}:{recipient}"


def queue_token_notice(
    session: Session,
    org: LockedOrg,
    token: TokenInfo,
    kind: NoticeKind,
    stage: int,
    recipient: str,
    now: datetime,
) -> bool:
    """Owe ``recipient`` a reminder (``stage`` days before the cutoff) or an expiry
    notice about ``token``; False if it is owed already."""
    return bool(queue_token_notices(session, org, kind, [(token, stage, recipient)], now))


def queue_token_notices(
    session: Session,
    org: LockedOrg,
    kind: NoticeKind,
    notices: Sequence[tuple[TokenInfo, int, str]],
    now: datetime,
) -> set[int]:
    """Owe each ``(token, stage, recipient)`` of ``notices`` a reminder or an expiry
    notice, in one statement however many there are; the ids of the tokens of which at
    least one notice is new (the others were owed already)."""
    if not notices:
        return set()
    varying: dict[str, list[Any]] = {
        "token_id": [token.id for token, _, _ in notices],
        "recipient": [recipient for _, _, recipient in notices],
        "dedupe_key": [
            token_notice_key(kind, token.id, stage, token.cutoff_at, recipient)
            for token, stage, recipient in notices
        ],
        "payload": [
            {"stage": stage, "cutoff_at": token.cutoff_at.isoformat()}
            for token, stage, _ in notices
        ],
    }
    same = {
        "org_id": org.id,
        "kind": kind,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    insert: Any
    params: Any
    if session.get_bind().dialect.name == "postgresql":
        # What differs from message to message goes as arrays, the rest once.
        rows = unnest(
            "notices",
            token_id=sa.Integer(),
            recipient=sa.String(),
            dedupe_key=sa.String(),
            payload=sa.String(),
        )
        constants = {c: sa.bindparam(c, type_=OUTBOX.c[c].type) for c in same}
        insert = postgresql.insert(OUTBOX).from_select(
            [*constants, "token_id", "recipient", "dedupe_key", "payload"],
            sa.select(
                *constants.values(),
                rows.c.token_id,
                rows.c.recipient,
                rows.c.dedupe_key,
                sa.cast(rows.c.payload, postgresql.JSON),
            ),
        )
        varying["payload"] = [json.dumps(p) for p in varying["payload"]]
        params = same | varying
    else:  # SQLite runs in process: many rows to one statement cost nothing
        insert = sqlite.insert(OUTBOX)
        params = [
            same | {column: values[n] for column, values in varying.items()}
            for n in range(len(notices))
        ]
    # RETURNING, not rowcount: it names the rows the dedupe key let in.
    insert = insert.on_conflict_do_nothing().returning(OUTBOX.c.token_id)
    return set(session.execute(insert, params).scalars())


def queue_ownerless_report(
    session: Session, org: LockedOrg, member: str, service_users: list[str], now: datetime
) -> None:
    """Owe the admins a report that ``member``, now deactivated, was the only owner of
    ``service_users``, in the caller's transaction (the deactivation's)."""
    payload = {"member": member, "service_users": service_users}
    enqueue(session, org, NoticeKind.OWNERLESS, now, payload=payload)


def queue_revoked_notice(
    session: Session, org: LockedOrg, token: TokenInfo, member: str, by: str, now: datetime
) -> None:
    """Owe ``member`` a message that ``by`` (an admin) revoked their ``token``, in the
    caller's transaction (the revocation's). A token is revoked once, so it is owed once."""
    enqueue(
        session,
        org,
        NoticeKind.REVOKED,
        now,
        recipient=member,
        payload={"by": by},
        dedupe_key=f"revoked:{token.id}",
        token_id=token.id,
    )


def digest_key(org_id: int, recipient: str, day: str) -> str:
    """The key that makes an approver's digest exist once a day (in UTC)."""
    return f"digest:{org_id}:{day}:{recipient}"


def queue_digests(db: Database, org_slack_id: str, approvers: Iterable[str], now: datetime) -> int:
    """Owe each of ``approvers`` the digest of the day of ``now`` (UTC); how many were
    newly queued (the others were queued already today, here or by another replica)."""
    day = now.date().isoformat()
    with db.write() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return 0
        return sum(
            enqueue(
                session,
                org,
                NoticeKind.DIGEST,
                now,
                recipient=approver,
                payload={"day": day},
                dedupe_key=digest_key(org.id, approver, day),
            )
            for approver in approvers
        )


def _due(in_org: bool) -> sa.Select[Any]:
    query = (
        sa.select(
            OUTBOX.c.id.label("message_id"),
            OUTBOX.c.kind.label("message_kind"),
            OUTBOX.c.recipient,
            OUTBOX.c.payload,
            OUTBOX.c.attempts,
            OUTBOX.c.token_id.label("about_token"),
            ORG.c.slack_id.label("org"),
            ORG.c.allow_keep_alive,
            SERVICE.c.name.label("service_user"),
            *TOKEN_INFO_COLUMNS,
        )
        .select_from(
            OUTBOX.join(ORG, OUTBOX.c.org_id == ORG.c.id)
            .outerjoin(TOKEN, OUTBOX.c.token_id == TOKEN.c.id)
            .outerjoin(SERVICE, TOKEN.c.service_user_id == SERVICE.c.id)
        )
        .where(
            OUTBOX.c.status == OutboxStatus.PENDING,
            OUTBOX.c.next_attempt_at <= sa.bindparam("now"),
            OUTBOX.c.kind.in_(sa.bindparam("kinds", expanding=True)),
        )
        .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id)
        .limit(sa.bindparam("limit"))
        .with_for_update(of=OUTBOX, skip_locked=True)
    )
    return query.where(ORG.c.slack_id == sa.bindparam("org")) if in_org else query


_DUE = {in_org: _due(in_org) for in_org in (False, True)}
_MESSAGES = OUTBOX.c.id.in_(sa.bindparam("messages", expanding=True))
_SKIP = sa.update(OUTBOX).where(_MESSAGES).values(status=OutboxStatus.SKIPPED)
_LEASE = (
    sa.update(OUTBOX)
    .where(_MESSAGES)
    .values(next_attempt_at=sa.bindparam("until"), attempts=OUTBOX.c.attempts + 1)
)
_SETTLE = sa.update(OUTBOX).where(
    OUTBOX.c.id == sa.bindparam("message"),
    OUTBOX.c.status == OutboxStatus.PENDING,
    OUTBOX.c.attempts == sa.bindparam("claimed"),
)


def _stale(
    kind: NoticeKind, payload: dict[str, Any], token: TokenInfo | None, now: datetime
) -> bool:
    """True when the message is no longer worth sending: a reminder whose window ended
    (the token was used, kept, revoked or expired since), a digest of a day gone by."""
    if kind == NoticeKind.REMINDER:
        return (
            token is None
            or token.state != TokenState.ACTIVE
            or token.rotated_at is not None  # replaced: it ends with its grace period
            or token.cutoff_at != datetime.fromisoformat(payload["cutoff_at"])
        )
    if kind == NoticeKind.DIGEST:
        return bool(payload["day"] != now.date().isoformat())
    return False


def claim_due(
    db: Database,
    now: datetime,
    kinds: Iterable[NoticeKind] = EVERY_KIND,
    org: str | None = None,
    limit: int = 50,
) -> list[Message]:
    """The messages of ``kinds`` due at ``now`` (of the organization ``org`` alone, when
    given), oldest first, each leased to the caller for LEASE. A message no longer worth
    sending is settled as skipped instead of claimed."""
    params: dict[str, Any] = {"now": now, "limit": limit, "kinds": list(kinds)}
    if org is not None:
        params["org"] = org
    claimed: list[Message] = []
    skipped: list[int] = []
    with db.write() as session:
        for row in session.execute(_DUE[org is not None], params).all():
            kind = NoticeKind(row.message_kind)
            token = token_info(row) if row.about_token is not None else None
            if _stale(kind, row.payload, token, now):
                skipped.append(row.message_id)
                continue
            claimed.append(
                Message(
                    id=row.message_id,
                    org=row.org,
                    kind=kind,
                    recipient=row.recipient,
                    payload=dict(row.payload),
                    attempts=row.attempts + 1,
                    token=token,
                    allow_keep_alive=row.allow_keep_alive,
                    service_user=row.service_user,
                )
            )
        if skipped:
            session.execute(_SKIP, {"messages": skipped})
        if claimed:
            session.execute(_LEASE, {"messages": [m.id for m in claimed], "until": now + LEASE})
    return claimed


def _settle(db: Database, message: Message, **values: Any) -> None:
    with db.write() as session:
        session.execute(
            _SETTLE.values(**values), {"message": message.id, "claimed": message.attempts}
        )


def mark_sent(db: Database, message: Message, now: datetime) -> None:
    """The message went out. Only the current claim holder's word counts."""
    _settle(db, message, status=OutboxStatus.SENT, sent_at=now)


def mark_skipped(db: Database, message: Message) -> None:
    """The message has nothing left to say (say, the requests of a digest were all
    decided meanwhile). Only the current claim holder's word counts."""
    _settle(db, message, status=OutboxStatus.SKIPPED)


def backoff(attempts: int) -> timedelta:
    """How long a message waits after its ``attempts``-th failed attempt, when the other
    side gave no time of its own: a minute, doubling with each attempt, up to an hour."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


def mark_retry(db: Database, message: Message, now: datetime, delay: timedelta, error: str) -> None:
    """Try again after ``delay``; after MAX_ATTEMPTS the message is given up as the dead
    letter. Only the current claim holder's word counts."""
    status = OutboxStatus.FAILED if message.attempts >= MAX_ATTEMPTS else OutboxStatus.PENDING
    _settle(db, message, status=status, next_attempt_at=now + delay, last_error=error[:ERROR_MAX])


def mark_failed(db: Database, message: Message, error: str) -> None:
    """Give up for good, as the dead letter: Slack said it can never be delivered (say,
    the user is gone). Only the current claim holder's word counts."""
    _settle(db, message, status=OutboxStatus.FAILED, last_error=error[:ERROR_MAX])


def pending_count(db: Database) -> int:
    """How many messages wait to be sent (or sent again)."""
    with db.read() as session:
        query = (
            sa.select(sa.func.count())
            .select_from(OUTBOX)
            .where(OUTBOX.c.status == OutboxStatus.PENDING)
        )
        return int(session.execute(query).scalar_one())


@dataclass(frozen=True)
class Backlog:
    """The messages waiting to be sent: how many, and when the oldest was queued."""

    pending: int
    oldest_queued_at: datetime | None


def backlog(db: Database) -> Backlog:
    """How many messages wait to be sent (or sent again), and when the oldest of them was
    queued: one query, for the metrics."""
    query = sa.select(sa.func.count(), sa.func.min(OUTBOX.c.created_at)).where(
        OUTBOX.c.status == OutboxStatus.PENDING
    )
    with db.read() as session:
        pending, oldest = session.execute(query).one()
    return Backlog(int(pending), oldest)
