"""User tokens: issue, list, find and revoke (R7, R9, R10, R11, R15, R16)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from storage import audit, tokenformat
from storage.db import Database
from storage.errors import CapReached, InvalidName, NameTaken, NotAllowed, TokenNotFound
from storage.models import DEFAULT_USER_TOKEN_CAP, Member, Organization, Token, TokenState
from storage.orgs import ensure_member, find_member, find_org, lock_org
from storage.tokenformat import TokenKind

NAME_MAX = 64


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


@dataclass(frozen=True)
class IssuedToken:
    info: TokenInfo
    secret: str = field(repr=False)


def _info(token: Token) -> TokenInfo:
    assert token.id is not None
    return TokenInfo(
        id=token.id,
        kind=token.kind,
        name=token.name,
        hint=token.hint,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        cutoff_at=token.cutoff_at,
        state=token.state,
        state_reason=token.state_reason,
    )


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


def _active(session: Session, member: Member, now: datetime) -> list[Token]:
    query = (
        select(Token)
        .where(
            Token.member_id == member.id,
            Token.state == TokenState.ACTIVE,
            Token.cutoff_at > now,
        )
        .order_by(col(Token.created_at), col(Token.id))
    )
    return list(session.exec(query))


def _active_expiring_overdue(
    session: Session, org: Organization, member: Member, now: datetime
) -> list[Token]:
    """The member's active tokens, after marking those past their cutoff as expired, so
    that they free their place under the cap and their names."""
    query = (
        select(Token)
        .where(Token.member_id == member.id, Token.state == TokenState.ACTIVE)
        .order_by(col(Token.created_at), col(Token.id))
    )
    active = []
    for token in session.exec(query):
        if token.cutoff_at <= now:
            _set_state(session, org, token, TokenState.EXPIRED, "inactive", audit.SYSTEM, now)
        else:
            active.append(token)
    return active


def _set_state(
    session: Session,
    org: Organization,
    token: Token,
    state: TokenState,
    reason: str,
    actor: str,
    now: datetime,
) -> None:
    token.state = state
    token.state_reason = reason
    token.state_changed_at = now
    session.add(token)
    action = "token.revoked" if state == TokenState.REVOKED else "token.expired"
    audit.record(
        session,
        org,
        actor=actor,
        action=action,
        subject=f"token:{token.id}",
        now=now,
        detail={"name": token.name, "hint": token.hint, "kind": token.kind, "reason": reason},
    )


def check_room_for_user_token(db: Database, org_slack_id: str, user_id: str, now: datetime) -> None:
    """CapReached when the member has no room left for another token (R9)."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return
        member = find_member(session, org, user_id)
        active = _active(session, member, now) if member else []
        if len(active) >= org.user_token_cap:
            raise CapReached(cap=org.user_token_cap, active=[_info(t) for t in active])


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
        member = ensure_member(session, org, user_id, now)
        assert org.id is not None
        active = _active_expiring_overdue(session, org, member, now)
        if any(t.name_key == key for t in active):
            raise NameTaken(f"You already have an active token named “{name}”. Pick another name.")
        if len(active) >= org.user_token_cap:
            raise CapReached(cap=org.user_token_cap, active=[_info(t) for t in active])
        secret = tokenformat.mint(TokenKind.USER)
        token = Token(
            org_id=org.id,
            kind=TokenKind.USER,
            member_id=member.id,
            name=name,
            name_key=key,
            hint=tokenformat.hint(secret),
            digest=tokenformat.digest(secret),
            created_at=now,
            created_by_id=member.id,
            cutoff_at=now + timedelta(days=org.inactivity_days),
        )
        session.add(token)
        session.flush()
        audit.record(
            session,
            org,
            actor=user_id,
            action="token.issued",
            subject=f"token:{token.id}",
            now=now,
            detail={"name": token.name, "hint": token.hint, "kind": token.kind},
        )
        return IssuedToken(info=_info(token), secret=secret)


@dataclass(frozen=True)
class TokenList:
    tokens: list[TokenInfo]
    cap: int


def list_user_tokens(db: Database, org_slack_id: str, user_id: str, now: datetime) -> TokenList:
    """The member's active tokens, oldest first, and their organization's cap (R5, R10)."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return TokenList([], DEFAULT_USER_TOKEN_CAP)
        member = find_member(session, org, user_id)
        active = _active(session, member, now) if member else []
        return TokenList([_info(t) for t in active], org.user_token_cap)


def find_user_token(
    db: Database, org_slack_id: str, user_id: str, raw_name: str, now: datetime
) -> TokenInfo:
    """The member's active token called ``raw_name`` (any case), or TokenNotFound."""
    key = name_key(raw_name.strip())
    for info in list_user_tokens(db, org_slack_id, user_id, now).tokens:
        if name_key(info.name) == key:
            return info
    raise TokenNotFound(f"You have no active token named “{raw_name.strip()}”.")


def revoke_token(
    db: Database, org_slack_id: str, actor_user_id: str, token_id: int, now: datetime
) -> TokenInfo:
    """Revoke a token at once and for good (R16). Only its owner may, for now.

    Raises TokenNotFound when the token is not the organization's or no longer active.
    """
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        token = session.get(Token, token_id, with_for_update=True)
        if token is None or token.org_id != org.id:
            raise TokenNotFound("That token does not exist in this workspace.")
        owner = session.get(Member, token.member_id) if token.member_id else None
        if owner is None or owner.slack_user_id != actor_user_id:
            raise NotAllowed("You can revoke only your own tokens.")
        if token.state != TokenState.ACTIVE or token.cutoff_at <= now:
            raise TokenNotFound(f"The token “{token.name}” is no longer active.")
        _set_state(session, org, token, TokenState.REVOKED, "revoked by owner", actor_user_id, now)
        return _info(token)


def revoke_undelivered(db: Database, org_slack_id: str, token_id: int, now: datetime) -> None:
    """Revoke a token its owner never received: a token nobody can see must not work."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        token = session.get(Token, token_id, with_for_update=True)
        if token is not None and token.org_id == org.id and token.state == TokenState.ACTIVE:
            _set_state(session, org, token, TokenState.REVOKED, "not delivered", audit.SYSTEM, now)
