"""Leak response (R19): a token found pasted in a message is revoked at once, and its
owners are owed a message saying so.

The text is searched offline first (:func:`storage.tokenformat.find_tokens`): only
strings whose checksum matches are looked up, by digest. A leak of a token that is not
the organization's, or no longer active, changes nothing and says nothing. The
revocation is conditional (the token must still be active), so when several replicas see
the same message, only the one whose update changed the token records the leak and
queues the notices; the others find nothing left to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from storage import audit, outbox, tokenformat
from storage.db import Database, invalidates
from storage.models import Member, NoticeKind, Organization, Token, TokenState
from storage.orgs import lock_org
from storage.services import recipients
from storage.tokens import TOKEN_INFO_COLUMNS, TokenInfo, token_info

TOKEN = Token.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
ORG = Organization.__table__  # type: ignore[attr-defined]
REASON = "leaked"


@dataclass(frozen=True)
class Place:
    """Where a token was found: the message (its conversation and timestamp) and who
    posted it (None when the message does not say)."""

    channel: str
    ts: str
    poster: str | None


_STILL_ACTIVE = (
    TOKEN.c.state == TokenState.ACTIVE,
    TOKEN.c.cutoff_at > sa.bindparam("now"),  # past it, the token has expired already
)
# The organization's tokens among the digests that are still active: read without any
# lock, so that a leak of nothing (the usual case, once revoked) costs no write.
_ACTIVE_AMONG = (
    sa.select(TOKEN.c.id)
    .select_from(TOKEN.join(ORG, TOKEN.c.org_id == ORG.c.id))
    .where(
        ORG.c.slack_id == sa.bindparam("org"),
        TOKEN.c.digest.in_(sa.bindparam("digests", expanding=True)),
        *_STILL_ACTIVE,
    )
)
# The conditional revocation: only tokens still active change, and only those are named
# back (another replica's revocation of the same token, before this one, leaves none).
_REVOKE = (
    sa.update(TOKEN)
    .where(
        TOKEN.c.org_id == sa.bindparam("org"),
        TOKEN.c.id.in_(sa.bindparam("tokens", expanding=True)),
        *_STILL_ACTIVE,
    )
    .values(state=TokenState.REVOKED, state_reason=REASON, state_changed_at=sa.bindparam("now"))
    .returning(TOKEN.c.id)
)
_REVOKED = (
    sa.select(*TOKEN_INFO_COLUMNS, MEMBER.c.slack_user_id.label("owner"), TOKEN.c.service_user_id)
    .select_from(TOKEN.outerjoin(MEMBER, TOKEN.c.member_id == MEMBER.c.id))
    .where(TOKEN.c.id.in_(sa.bindparam("tokens", expanding=True)))
    .order_by(TOKEN.c.id)
)


def leak_notice_key(token_id: int, recipient: str | None) -> str:
    """The key that makes the message about a leaked token exist once per recipient
    (``*``: the organization's admins, as Slack lists them when it is sent)."""
    return f"leaked:{token_id}:{recipient or '*'}"


def revoke_leaked(
    db: Database, org_slack_id: str, secrets: Sequence[str], place: Place, now: datetime
) -> list[TokenInfo]:
    """Revoke at once, for good, the organization's active tokens among ``secrets``,
    found pasted in a message at ``place`` (R19); return those this call revoked.

    Each gets an audit event ``token.leaked`` (actor: the poster; the message's channel
    and timestamp, the token's hint; never the secret), and its owners are owed a
    message (the member; a service user's owners, or the admins when it has none).
    Strings whose checksum does not match are dropped before the database is asked; a
    token not the organization's, already revoked or expired changes nothing."""
    digests = sorted({tokenformat.digest(s) for s in secrets if tokenformat.has_valid_checksum(s)})
    if not digests:
        return []
    with db.read() as session:
        found = list(
            session.execute(
                _ACTIVE_AMONG, {"org": org_slack_id, "digests": digests, "now": now}
            ).scalars()
        )
    if not found:
        return []
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        params = {"org": org.id, "tokens": found, "now": now}
        revoked = list(session.execute(_REVOKE, params).scalars())
        if not revoked:
            return []  # revoked meanwhile, by another replica that saw the message too
        invalidates(session)
        rows = session.execute(_REVOKED, {"tokens": revoked}).all()
        tokens = [token_info(row) for row in rows]
        actor = place.poster or audit.SYSTEM
        detail = {"reason": REASON, "channel": place.channel, "ts": place.ts}
        events = [
            audit.NewEvent(
                actor=actor,
                action="token.leaked",
                subject=f"token:{token.id}",
                detail={"name": token.name, "hint": token.hint, "kind": token.kind, **detail},
            )
            for token in tokens
        ]
        audit.record_all(session, org, events, now)
        payload = {"channel": place.channel, "ts": place.ts, "poster": place.poster}
        for row, token in zip(rows, tokens, strict=True):
            if row.owner is not None:
                told: list[str | None] = [row.owner]
            else:  # a service token: its owners, else the admins tokenbot knows, else Slack's
                told = [*recipients(session, org.id, row.service_user_id)] or [None]
            for recipient in told:
                outbox.enqueue(
                    session,
                    org,
                    NoticeKind.LEAKED,
                    now,
                    recipient=recipient,
                    payload=payload,
                    dedupe_key=leak_notice_key(token.id, recipient),
                    token_id=token.id,
                )
        return tokens
