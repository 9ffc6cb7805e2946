"""Tokens: issue, list, find and revoke, and who may act on one (R7, R9-R11, R15, R16).

Statements are plain SQL over the tables (no ORM objects): these functions sit on the
path of every Slack request, and each write runs while the organization is locked.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from storage import audit, tokenformat
from storage.db import Database, invalidates
from storage.errors import CapReached, InvalidName, NameTaken, NotAllowed, TokenNotFound
from storage.models import (
    DEFAULT_USER_TOKEN_CAP,
    DELIVERY_DEADLINE,
    Member,
    ServiceOwner,
    Token,
    TokenState,
)
from storage.orgs import LockedOrg, ensure_member, find_org, lock_org, member_id
from storage.tokenformat import TokenKind

NAME_MAX = 64
TOKEN = Token.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
OWNER = ServiceOwner.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never the secret."""

    id: int
    kind: str
    name: str
    hint: str
    created_at: datetime
    last_used_at: datetime | None
    cutoff_at: datetime
    state: str
    state_reason: str | None = None
    delivered_at: datetime | None = None  # None: not shown to its owner yet, not valid


@dataclass(frozen=True)
class IssuedToken:
    info: TokenInfo
    secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenList:
    tokens: list[TokenInfo]
    cap: int


TOKEN_INFO_COLUMNS = [TOKEN.c[name] for name in TokenInfo.__dataclass_fields__]


# Built once, with named parameters: building statements per call costs more than
# running them.
_ACTIVE = (
    sa.select(*TOKEN_INFO_COLUMNS)
    .where(
        TOKEN.c.member_id == sa.bindparam("member"),
        TOKEN.c.state == TokenState.ACTIVE,
        TOKEN.c.cutoff_at > sa.bindparam("now"),
    )
    .order_by(TOKEN.c.created_at, TOKEN.c.id)
)
_OVERDUE = {
    owner: sa.select(*TOKEN_INFO_COLUMNS).where(
        TOKEN.c[owner] == sa.bindparam("owner"),
        TOKEN.c.state == TokenState.ACTIVE,
        TOKEN.c.cutoff_at <= sa.bindparam("now"),
    )
    for owner in ("member_id", "service_user_id")
}
_INSERT = sa.insert(TOKEN).returning(TOKEN.c.id)
_DELIVERED = (
    sa.update(TOKEN)
    .where(
        TOKEN.c.id == sa.bindparam("token"),
        TOKEN.c.state == TokenState.ACTIVE,
        TOKEN.c.delivered_at.is_(None),
        TOKEN.c.cutoff_at > sa.bindparam("now"),
    )
    .values(
        delivered_at=sa.bindparam("now"),
        cutoff_at=sa.bindparam("cutoff"),
        next_notice_at=sa.bindparam("next_notice"),
    )
)
_END = sa.update(TOKEN).where(TOKEN.c.id == sa.bindparam("token"))
_END_ALL = sa.update(TOKEN).where(TOKEN.c.id.in_(sa.bindparam("tokens", expanding=True)))
_LOCKED = (
    sa.select(*TOKEN_INFO_COLUMNS, MEMBER.c.slack_user_id, TOKEN.c.service_user_id)
    .select_from(TOKEN.outerjoin(MEMBER, TOKEN.c.member_id == MEMBER.c.id))
    .where(TOKEN.c.id == sa.bindparam("token"), TOKEN.c.org_id == sa.bindparam("org"))
    .with_for_update(of=TOKEN)
)


# An owner of the service user, still active: they act on its tokens (R16).
_SERVICE_OWNER = (
    sa.select(OWNER.c.member_id)
    .select_from(OWNER.join(MEMBER, OWNER.c.member_id == MEMBER.c.id))
    .where(
        OWNER.c.service_user_id == sa.bindparam("service"),
        MEMBER.c.org_id == sa.bindparam("org"),
        MEMBER.c.slack_user_id == sa.bindparam("actor"),
        ~MEMBER.c.deleted,
    )
)


def token_info(row: Any) -> TokenInfo:
    return TokenInfo(**{name: row._mapping[name] for name in TokenInfo.__dataclass_fields__})


def validate_token_name(raw: str | None) -> str:
    """The name as it will be stored (trimmed), or InvalidName saying what is wrong (R15)."""
    name = (raw or "").strip()
    if not name:
        raise InvalidName("Enter a name for the token.")
    if len(name) > NAME_MAX:
        raise InvalidName(f"Use at most {NAME_MAX} characters (this name has {len(name)}).")
    if not name.isprintable():
        raise InvalidName("Use printable characters only: no line breaks or control characters.")
    return name


def name_key(name: str) -> str:
    """The form in which names are compared: case-insensitive and Unicode-normalised."""
    return unicodedata.normalize("NFKC", name).casefold()


def _active(session: Session, member: int, now: datetime) -> list[TokenInfo]:
    """The member's tokens that are active and not past their cutoff, oldest first;
    those still being delivered among them: they hold their place under the cap."""
    return [token_info(row) for row in session.execute(_ACTIVE, {"member": member, "now": now})]


def _shown(active: list[TokenInfo]) -> list[TokenInfo]:
    """What a member is shown of their tokens: a token being delivered is not, as it is
    not valid yet, and either becomes valid within moments or is revoked by the sweep."""
    return [t for t in active if t.delivered_at is not None]


def end_token(
    session: Session,
    org: LockedOrg,
    token: TokenInfo,
    state: TokenState,
    reason: str,
    actor: str,
    now: datetime,
) -> TokenInfo:
    """Move an active token to ``state`` for good, with an audit event."""
    params = {"token": token.id, "state": state, "state_reason": reason, "state_changed_at": now}
    session.execute(_END, params)
    invalidates(session)
    ended = replace(token, state=state, state_reason=reason)
    audit.record_all(session, org, [_end_event(ended, actor)], now)
    return ended


def _end_event(ended: TokenInfo, actor: str) -> audit.NewEvent:
    """The audit event of a token's end."""
    action = "token.revoked" if ended.state == TokenState.REVOKED else "token.expired"
    detail = {
        "name": ended.name,
        "hint": ended.hint,
        "kind": ended.kind,
        "reason": ended.state_reason,
    }
    return audit.NewEvent(actor=actor, action=action, subject=f"token:{ended.id}", detail=detail)


def _lapse_outcome(token: TokenInfo) -> tuple[TokenState, str]:
    if token.delivered_at is None:
        return TokenState.REVOKED, "not delivered"
    return TokenState.EXPIRED, "inactive"


def lapse(session: Session, org: LockedOrg, token: TokenInfo, now: datetime) -> TokenInfo:
    """End an active token past its cutoff: expired for inactivity (R11), or, if it was
    never delivered in time, revoked as "not delivered" (R14)."""
    state, reason = _lapse_outcome(token)
    return end_token(session, org, token, state, reason, audit.SYSTEM, now)


def lapse_all(
    session: Session, org: LockedOrg, tokens: Sequence[TokenInfo], now: datetime
) -> list[TokenInfo]:
    """:func:`lapse` for many active tokens (locked by the caller) at once: one update
    per outcome, and their audit events appended in the order of ``tokens``."""
    ended = [
        replace(token, state=state, state_reason=reason)
        for token in tokens
        for state, reason in [_lapse_outcome(token)]
    ]
    for state, reason in dict.fromkeys((t.state, t.state_reason) for t in ended):
        ids = [t.id for t in ended if (t.state, t.state_reason) == (state, reason)]
        params = {"tokens": ids, "state": state, "state_reason": reason, "state_changed_at": now}
        session.execute(_END_ALL, params)
    if ended:
        invalidates(session)
    audit.record_all(session, org, [_end_event(t, audit.SYSTEM) for t in ended], now)
    return ended


def end_overdue(
    session: Session,
    org: LockedOrg,
    now: datetime,
    *,
    member: int | None = None,
    service_user: int | None = None,
) -> None:
    """End the tokens of a member, or of a service user, that are past their cutoff but
    not yet swept, so that they free their place under the cap and their names (the
    unique index on names counts every token still marked active)."""
    owner, key = ("member_id", member) if member is not None else ("service_user_id", service_user)
    for row in session.execute(_OVERDUE[owner], {"owner": key, "now": now}).all():
        lapse(session, org, token_info(row), now)


def check_room_for_user_token(db: Database, org_slack_id: str, user_id: str, now: datetime) -> None:
    """CapReached when the member has no room left for another token (R9)."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        member = member_id(session, org.id, user_id) if org is not None else None
        if org is None or member is None:
            return
        active = _active(session, member, now)
        if len(active) >= org.user_token_cap:
            raise CapReached(cap=org.user_token_cap, active=_shown(active))


def issue_user_token(
    db: Database, org_slack_id: str, user_id: str, raw_name: str | None, now: datetime
) -> IssuedToken:
    """Mint a personal token for ``user_id`` named ``raw_name``, in one transaction.

    Raises InvalidName, NameTaken or CapReached; nothing is written when it raises.
    """
    name = validate_token_name(raw_name)
    key = name_key(name)
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        member = ensure_member(session, org.id, user_id, now)
        end_overdue(session, org, now, member=member)
        active = _active(session, member, now)
        clash = next((t for t in active if name_key(t.name) == key), None)
        if clash is not None and clash.delivered_at is None:
            # Not listed yet, so "you already have one" would contradict /token list.
            raise NameTaken(
                f"A token named “{name}” is still being delivered to you; if it never "
                "arrives, the name is free again within a few minutes. Pick another name."
            )
        if clash is not None:
            raise NameTaken(f"You already have an active token named “{name}”. Pick another name.")
        if len(active) >= org.user_token_cap:
            raise CapReached(cap=org.user_token_cap, active=_shown(active))
        return insert_token(session, org, TokenKind.USER, name, user_id, now, member=member)


def insert_token(
    session: Session,
    org: LockedOrg,
    kind: TokenKind,
    name: str,
    actor: str,
    now: datetime,
    *,
    member: int | None = None,
    service_user: int | None = None,
    detail: dict[str, Any] | None = None,
) -> IssuedToken:
    """Mint a token and store its digest, with its audit event: the one place tokens are
    created. The caller holds the organization's lock and has checked cap and name.

    The token is not valid until :func:`mark_delivered` says its owner was shown it; if
    that does not happen within DELIVERY_DEADLINE, the sweep revokes it (R14)."""
    secret = tokenformat.mint(kind)
    values: dict[str, Any] = {
        "org_id": org.id,
        "kind": kind,
        "member_id": member,
        "service_user_id": service_user,
        "name": name,
        "name_key": name_key(name),
        "hint": tokenformat.hint(secret),
        "digest": tokenformat.digest(secret),
        "created_at": now,
        "created_by_id": member,
        "last_used_at": None,
        "delivered_at": None,
        "cutoff_at": now + DELIVERY_DEADLINE,
        "next_notice_at": None,  # nothing to remind of before it is delivered
        "state": TokenState.ACTIVE,
        "state_reason": None,
    }
    token_id = session.execute(_INSERT, values).scalar_one()
    info = TokenInfo(
        id=token_id, **{k: v for k, v in values.items() if k in TokenInfo.__dataclass_fields__}
    )
    audit.record(
        session,
        org,
        actor=actor,
        action="token.issued",
        subject=f"token:{token_id}",
        now=now,
        detail={"name": name, "hint": info.hint, "kind": kind, **(detail or {})},
    )
    # Described as its owner will have it once shown: the whole inactivity period ahead.
    return IssuedToken(info=replace(info, cutoff_at=now + org.period), secret=secret)


def list_user_tokens(db: Database, org_slack_id: str, user_id: str, now: datetime) -> TokenList:
    """The member's active tokens, oldest first, and their organization's cap (R5, R10).
    A token still being delivered is not listed (it counts against the cap all the same).
    """
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return TokenList([], DEFAULT_USER_TOKEN_CAP)
        member = member_id(session, org.id, user_id)
        active = _active(session, member, now) if member is not None else []
        return TokenList(_shown(active), org.user_token_cap)


def find_user_token(
    db: Database, org_slack_id: str, user_id: str, raw_name: str, now: datetime
) -> TokenInfo:
    """The member's active token called ``raw_name`` (any case), or TokenNotFound."""
    key = name_key(raw_name.strip())
    for info in list_user_tokens(db, org_slack_id, user_id, now).tokens:
        if name_key(info.name) == key:
            return info
    raise TokenNotFound(f"You have no active token named “{raw_name.strip()}”.")


def _locked_token(session: Session, org: LockedOrg, token_id: int) -> tuple[TokenInfo, Any] | None:
    """The organization's token ``token_id`` and its owner (the row), locked; or None."""
    row = session.execute(_LOCKED, {"token": token_id, "org": org.id}).first()
    return (token_info(row), row) if row else None


def revoke_token(
    db: Database,
    org_slack_id: str,
    actor_user_id: str,
    token_id: int,
    now: datetime,
    *,
    admin: bool = False,
) -> TokenInfo:
    """Revoke a token at once and for good (R16): the member's own, a token of a service
    user they own, or, when ``admin`` (the caller checked the actor's standing in Slack),
    any token of the organization.

    Raises TokenNotFound when the token is not the organization's or no longer active,
    NotAllowed when the actor may not revoke it.
    """
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        token, as_owner = _permitted(session, org, token_id, actor_user_id, now, "revoke", admin)
        reason = "revoked by owner" if as_owner else "revoked by admin"
        return end_token(session, org, token, TokenState.REVOKED, reason, actor_user_id, now)


def owned_active_token(
    session: Session,
    org: LockedOrg,
    token_id: int,
    actor_user_id: str,
    now: datetime,
    verb: str,
    admin: bool = False,
) -> TokenInfo:
    """The organization's active token ``token_id``, locked, if ``actor_user_id`` owns it
    (their own user token, or a token of a service user they own) or acts as an admin.
    Else TokenNotFound or NotAllowed, each with a sentence for the member."""
    return _permitted(session, org, token_id, actor_user_id, now, verb, admin)[0]


def _permitted(
    session: Session,
    org: LockedOrg,
    token_id: int,
    actor_user_id: str,
    now: datetime,
    verb: str,
    admin: bool,
) -> tuple[TokenInfo, bool]:
    """The one permission check for a member acting on a token: the token, locked, and
    whether the actor acts as its owner (False: as an admin)."""
    found = _locked_token(session, org, token_id)
    if found is None:
        raise TokenNotFound("That token does not exist in this workspace.")
    token, row = found
    if row.service_user_id is not None:
        params = {"service": row.service_user_id, "org": org.id, "actor": actor_user_id}
        owns = session.execute(_SERVICE_OWNER, params).first() is not None
        refusal = f"You can {verb} only tokens of service users you own."
    else:
        owns = row.slack_user_id == actor_user_id
        refusal = f"You can {verb} only your own tokens."
    if not (owns or admin):
        raise NotAllowed(refusal)
    if token.state != TokenState.ACTIVE or token.cutoff_at <= now:
        raise TokenNotFound(f"The token “{token.name}” is no longer active.")
    return token, owns


def mark_delivered(
    db: Database, org_slack_id: str, token_id: int, now: datetime, via: str
) -> TokenInfo | None:
    """The token was shown to its owner: from now on it is valid, with the full
    inactivity period from its creation (R11, R14). None when it can no longer become
    valid (revoked meanwhile, or past its delivery deadline)."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        found = _locked_token(session, org, token_id)
        if found is None:
            return None
        token = found[0]
        cutoff = token.created_at + org.period
        params = {
            "token": token_id,
            "now": now,
            "cutoff": cutoff,
            "next_notice": org.first_notice(cutoff),
        }
        if not session.execute(_DELIVERED, params).rowcount:  # type: ignore[attr-defined]
            return None
        audit.record(
            session,
            org,
            actor=audit.SYSTEM,
            action="token.delivered",
            subject=f"token:{token_id}",
            now=now,
            detail={"name": token.name, "hint": token.hint, "kind": token.kind, "via": via},
        )
        return replace(token, delivered_at=now, cutoff_at=cutoff)


def revoke_undelivered(db: Database, org_slack_id: str, token_id: int, now: datetime) -> None:
    """Revoke a token its owner never received: a token nobody can see must not work."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        found = _locked_token(session, org, token_id)
        if found is not None and found[0].state == TokenState.ACTIVE and not found[0].delivered_at:
            end_token(
                session, org, found[0], TokenState.REVOKED, "not delivered", audit.SYSTEM, now
            )
