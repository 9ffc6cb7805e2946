"""Tokens: issue, list, find, revoke and rotate, and who may act on one (R7, R9-R11, R15,
R16, R18).

Statements are plain SQL over the tables (no ORM objects): these functions sit on the
path of every Slack request, and each write runs while the organization is locked. Those
on the path of an acknowledgement (list, find, room under the cap, issue, delivered) are
quick (``storage.db.quick``): a read, then at most one write sent whole, whose statements
check what must hold (the cap, a free name) as they write.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from storage import audit, tokenformat
from storage.db import Database, Decline, Query, Statements, invalidates, next_id, quick
from storage.errors import (
    AlreadyRotated,
    CapReached,
    InvalidName,
    NameTaken,
    NotAllowed,
    TokenNotFound,
)
from storage.models import (
    DEFAULT_USER_TOKEN_CAP,
    DELIVERY_DEADLINE,
    Member,
    Organization,
    ServiceOwner,
    ServiceUser,
    Token,
    TokenState,
    UTCDateTime,
)
from storage.orgs import LockedOrg, ensure_member, lock_org
from storage.tokenformat import TokenKind

NAME_MAX = 64
TOKEN = Token.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
OWNER = ServiceOwner.__table__  # type: ignore[attr-defined]
ORG = Organization.__table__  # type: ignore[attr-defined]
SERVICE = ServiceUser.__table__  # type: ignore[attr-defined]
ROTATED = "rotated"  # why a rotated token ends: its grace period is over (R18)


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
    # Set when a rotation replaced it (R18): it holds neither its name nor a place under
    # the cap, and is valid only until its cutoff, the end of its grace period.
    rotated_at: datetime | None = None


@dataclass(frozen=True)
class IssuedToken:
    info: TokenInfo
    secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenList:
    tokens: list[TokenInfo]
    cap: int


@dataclass(frozen=True)
class Rotation:
    """A rotation under way (R18): the token replaced, and its replacement, to be shown
    once to whoever rotated it. Once it is shown, the old token works on for ``grace``
    (when zero, it is revoked then)."""

    old: TokenInfo
    issued: IssuedToken
    grace: timedelta
    service_user: str | None = None  # the service user's name, for a service token


TOKEN_INFO_COLUMNS = [TOKEN.c[name] for name in TokenInfo.__dataclass_fields__]


def holds_its_place(table: sa.Table = TOKEN) -> sa.ColumnElement[bool]:
    """The tokens that hold their name (R15) and a place under the cap (R7, R8): active,
    and not replaced by a rotation (R18), as the unique indexes on names say."""
    return (table.c.state == TokenState.ACTIVE) & table.c.rotated_at.is_(None)


# Built once, with named parameters: building statements per call costs more than
# running them.
_ACTIVE = (
    sa.select(*TOKEN_INFO_COLUMNS)
    .where(
        TOKEN.c.member_id == sa.bindparam("member"),
        holds_its_place(),
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
    sa.select(
        *TOKEN_INFO_COLUMNS,
        MEMBER.c.slack_user_id,
        TOKEN.c.member_id,
        TOKEN.c.service_user_id,
        TOKEN.c.replaces_id,
    )
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


_INFO_WIDTH = len(TOKEN_INFO_COLUMNS)


def _info_first(row: Any) -> TokenInfo:
    """The TokenInfo of a quick query's row that starts with TOKEN_INFO_COLUMNS."""
    return TokenInfo(*row[:_INFO_WIDTH])


# -- the statements of the quick functions -----------------------------------------------

# A member's active tokens not past their cutoff, oldest first, with their organization's
# cap and whether the member is known: one statement, no row if the organization is not.
_LISTING = (
    sa.select(*TOKEN_INFO_COLUMNS, ORG.c.user_token_cap, MEMBER.c.id.label("member"))
    .select_from(
        ORG.outerjoin(
            MEMBER,
            (MEMBER.c.org_id == ORG.c.id) & (MEMBER.c.slack_user_id == sa.bindparam("user")),
        ).outerjoin(
            TOKEN,
            (TOKEN.c.member_id == MEMBER.c.id)
            & holds_its_place()
            & (TOKEN.c.cutoff_at > sa.bindparam("now")),
        )
    )
    .where(ORG.c.slack_id == sa.bindparam("org"))
    .order_by(TOKEN.c.created_at, TOKEN.c.id)
)
_ORG_ROW = sa.select(*(ORG.c[f.name] for f in fields(LockedOrg))).where(
    ORG.c.slack_id == sa.bindparam("org")
)
_LOCK_ORG = sa.select(ORG.c.id).where(ORG.c.id == sa.bindparam("org")).with_for_update()
_MEMBER_ID = (
    sa.select(MEMBER.c.id)
    .where(MEMBER.c.org_id == sa.bindparam("org"), MEMBER.c.slack_user_id == sa.bindparam("user"))
    .scalar_subquery()
)
_CAP = sa.select(ORG.c.user_token_cap).where(ORG.c.id == sa.bindparam("org")).scalar_subquery()
_ORG_ID = sa.select(ORG.c.id).where(ORG.c.slack_id == sa.bindparam("org")).scalar_subquery()
# Before an issue: the member, if known, and the id the token will have (named in its
# audit event).
_ISSUE_IDS = sa.select(
    sa.select(MEMBER.c.id)
    .where(MEMBER.c.org_id == _ORG_ID, MEMBER.c.slack_user_id == sa.bindparam("user"))
    .scalar_subquery()
    .label("member"),
    next_id(TOKEN).label("token"),
)
# The member, if new: under the organization's lock (no other writer creates them
# meanwhile), and only if the token will be issued (a new member has no token to clash
# with, so only the cap can refuse it).
_NEW_MEMBER = sa.insert(MEMBER).from_select(
    ["org_id", "slack_user_id", "created_at", "role", "deleted"],
    sa.select(
        sa.bindparam("org", type_=sa.Integer),
        sa.bindparam("user", type_=sa.String),
        sa.bindparam("created_at", type_=UTCDateTime()),
        sa.bindparam("role", type_=sa.String),
        sa.bindparam("deleted", type_=sa.Boolean),
    ).where(~sa.exists(_MEMBER_ID.element), _CAP > 0),
)
# The defaults of the model, which an INSERT from a SELECT names itself.
_MEMBER_DEFAULTS = {"role": MEMBER.c.role.default.arg, "deleted": MEMBER.c.deleted.default.arg}
_THEIRS = TOKEN.alias("theirs")
_THEIR_ACTIVE = (_THEIRS.c.member_id == _MEMBER_ID) & holds_its_place(_THEIRS)
# The token, if the member has room under the cap, no active token of that name, and no
# token past its cutoff that must be ended first (storage.tokens.end_overdue; left to the
# full transaction): checked by the statement itself, under the organization's lock.
_ISSUE = (
    sa.insert(TOKEN)
    .from_select(
        [
            "id",
            "org_id",
            "kind",
            "member_id",
            "name",
            "name_key",
            "hint",
            "digest",
            "created_at",
            "created_by_id",
            "cutoff_at",
            "state",
        ],
        sa.select(
            sa.bindparam("token", type_=sa.Integer),
            sa.bindparam("org", type_=sa.Integer),
            sa.bindparam("kind", type_=sa.String),
            _MEMBER_ID.label("member_id"),
            sa.bindparam("name", type_=sa.String),
            sa.bindparam("name_key", type_=sa.String),
            sa.bindparam("hint", type_=sa.String),
            sa.bindparam("digest", type_=sa.String),
            sa.bindparam("created_at", type_=UTCDateTime()),
            _MEMBER_ID.label("created_by_id"),
            sa.bindparam("cutoff_at", type_=UTCDateTime()),
            sa.bindparam("state", type_=sa.String),
        ).where(
            ~sa.exists(
                sa.select(_THEIRS.c.id).where(
                    _THEIR_ACTIVE,
                    (_THEIRS.c.name_key == sa.bindparam("name_key"))
                    | (_THEIRS.c.cutoff_at <= sa.bindparam("now")),
                )
            ),
            sa.select(sa.func.count()).select_from(_THEIRS).where(_THEIR_ACTIVE).scalar_subquery()
            < _CAP,
        ),
    )
    .returning(TOKEN.c.id)
)
_ISSUED_AUDIT = audit.appending(
    sa.exists(sa.select(TOKEN.c.id).where(TOKEN.c.id == sa.bindparam("token")))
)
# After an issue that did not happen: why, as the member will be told.
_ALL_ACTIVE = (
    sa.select(*TOKEN_INFO_COLUMNS)
    .where(TOKEN.c.member_id == _MEMBER_ID, holds_its_place())
    .order_by(TOKEN.c.created_at, TOKEN.c.id)
)
_CAP_NOW = sa.select(ORG.c.user_token_cap).where(ORG.c.id == sa.bindparam("org"))
# Before a delivery is recorded: the token, if it is the organization's, and the token
# it replaces, if any.
_TOKEN_OF_ORG = sa.select(*TOKEN_INFO_COLUMNS, TOKEN.c.replaces_id).where(
    TOKEN.c.id == sa.bindparam("token"), TOKEN.c.org_id == _ORG_ID
)
_DELIVERED_RETURNING = _DELIVERED.returning(TOKEN.c.id)
# The event, the head and the webhook messages go first, under the same condition as the
# update that follows them: nothing else can change the token in between (every writer
# of tokens locks the organization).
_DELIVERED_AUDIT = audit.appending(
    sa.exists(
        sa.select(TOKEN.c.id).where(
            TOKEN.c.id == sa.bindparam("token"),
            TOKEN.c.state == TokenState.ACTIVE,
            TOKEN.c.delivered_at.is_(None),
            TOKEN.c.cutoff_at > sa.bindparam("now"),
        )
    )
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


NOT_DELIVERED = "not delivered"


def _lapse_outcome(token: TokenInfo) -> tuple[TokenState, str]:
    if token.delivered_at is None:
        return TokenState.REVOKED, NOT_DELIVERED
    if token.rotated_at is not None:
        return TokenState.REVOKED, ROTATED
    return TokenState.EXPIRED, "inactive"


def lapse(session: Session, org: LockedOrg, token: TokenInfo, now: datetime) -> TokenInfo:
    """End an active token past its cutoff: expired for inactivity (R11); revoked as
    "not delivered" if it was never delivered in time (R14), or as "rotated" at the end
    of its grace period (R18)."""
    return lapse_all(session, org, [token], now)[0]


def lapse_all(
    session: Session, org: LockedOrg, tokens: Sequence[TokenInfo], now: datetime
) -> list[TokenInfo]:
    """:func:`lapse` for many active tokens (locked by the caller) at once: one update
    per outcome, and their audit events appended in the order of ``tokens``. The tokens
    that rotations replaced with one of those never delivered go on as before."""
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
    _cancel_rotations(session, org, [t.id for t in ended if t.state_reason == NOT_DELIVERED], now)
    return ended


# The tokens that rotations replaced with one of ``tokens``, still waiting for it to be
# shown: their rotation is undone (the only rotations whose replacement can end before it
# is shown).
_NEW = TOKEN.alias("new")
_REPLACED_BY = sa.select(_NEW.c.replaces_id).where(
    _NEW.c.id.in_(sa.bindparam("tokens", expanding=True))
)
_CANCEL_ROTATIONS = (
    sa.update(TOKEN)
    .where(
        TOKEN.c.id.in_(_REPLACED_BY),
        TOKEN.c.state == TokenState.ACTIVE,
        TOKEN.c.rotated_at.is_not(None),
    )
    .values(rotated_at=None)
    .returning(*TOKEN_INFO_COLUMNS)
)


def _cancel_rotations(
    session: Session, org: LockedOrg, undelivered: list[int], now: datetime
) -> None:
    """Undo the rotations whose new tokens ``undelivered`` were never shown, now ended:
    the tokens they were to replace hold their names and places again, and go on as if
    never rotated (R14: nobody lost a working token for one they never saw)."""
    if not undelivered:
        return
    restored = [
        token_info(row) for row in session.execute(_CANCEL_ROTATIONS, {"tokens": undelivered})
    ]
    events = [
        audit.NewEvent(
            actor=audit.SYSTEM,
            action="token.rotation_cancelled",
            subject=f"token:{token.id}",
            detail={"name": token.name, "hint": token.hint, "reason": "new token not delivered"},
        )
        for token in restored
    ]
    audit.record_all(session, org, events, now)


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


async def _listing(
    statements: Statements, org_slack_id: str, user_id: str, now: datetime
) -> tuple[int | None, bool, list[TokenInfo]]:
    """The organization's cap (None: not known), whether the member is known, and their
    active tokens not past their cutoff, oldest first."""
    params = {"org": org_slack_id, "user": user_id, "now": now}
    (rows,) = await statements.read(Query(_LISTING, params))
    if not rows:
        return None, False, []
    return (
        rows[0].user_token_cap,
        rows[0].member is not None,
        [_info_first(row) for row in rows if row.id is not None],
    )


@quick(writes=False)
async def check_room_for_user_token(
    statements: Statements, org_slack_id: str, user_id: str, now: datetime
) -> None:
    """CapReached when the member has no room left for another token (R9)."""
    cap, known, active = await _listing(statements, org_slack_id, user_id, now)
    if cap is not None and known and len(active) >= cap:
        raise CapReached(cap=cap, active=_shown(active))


def _name_taken(name: str, clash: TokenInfo) -> NameTaken:
    if clash.delivered_at is None:
        # Not listed yet, so "you already have one" would contradict /token list.
        return NameTaken(
            f"A token named “{name}” is still being delivered to you; if it never "
            "arrives, the name is free again within a few minutes. Pick another name."
        )
    return NameTaken(f"You already have an active token named “{name}”. Pick another name.")


@quick(writes=True)
async def issue_user_token(
    statements: Statements,
    org_slack_id: str,
    user_id: str,
    raw_name: str | None,
    now: datetime,
) -> IssuedToken:
    """Mint a personal token for ``user_id`` named ``raw_name``, in one transaction.

    Raises InvalidName, NameTaken or CapReached; nothing is written when it raises.
    """
    name = validate_token_name(raw_name)
    key = name_key(name)
    org_rows, (ids,) = await statements.read(
        Query(_ORG_ROW, {"org": org_slack_id}),
        Query(_ISSUE_IDS, {"org": org_slack_id, "user": user_id}),
    )

    def in_full(db: Database) -> IssuedToken:
        return _issue_user_token(db, org_slack_id, user_id, name, now)

    if not org_rows:  # the organization's first request: it is created on the way
        raise Decline(in_full)
    org = LockedOrg(**org_rows[0]._asdict())
    secret = tokenformat.mint(TokenKind.USER)
    values = _new_token(org.id, TokenKind.USER, name, secret, now)
    params = {**values, "token": ids.token, "org": org.id, "user": user_id, "now": now}
    event = audit.appended(
        org.id,
        actor=user_id,
        action="token.issued",
        subject=f"token:{ids.token}",
        now=now,
        detail={"name": name, "hint": values["hint"], "kind": TokenKind.USER},
    )
    who = {"org": org.id, "user": user_id}
    new_member = (
        [Query(_NEW_MEMBER, {**who, **_MEMBER_DEFAULTS, "created_at": now})]
        if ids.member is None
        else []
    )
    answers = await statements.write(
        Query(_LOCK_ORG, {"org": org.id}),
        *new_member,
        Query(_ISSUE, params),
        *_ISSUED_AUDIT.queries({**event, "token": ids.token}),
        Query(_ALL_ACTIVE, who),
        Query(_CAP_NOW, who),
    )
    issued, (active_rows, (cap,)) = answers[1 + len(new_member)], answers[-2:]
    if issued:
        info = TokenInfo(id=ids.token, **{k: values[k] for k in _TOKEN_INFO_VALUES})
        # Described as its owner will have it once shown: the whole inactivity period ahead.
        return IssuedToken(info=replace(info, cutoff_at=now + org.period), secret=secret)
    active = [_info_first(row) for row in active_rows]
    if any(t.cutoff_at <= now for t in active):
        raise Decline(in_full)  # tokens past their cutoff are ended first
    clash = next((t for t in active if name_key(t.name) == key), None)
    if clash is not None:
        raise _name_taken(name, clash)
    if len(active) >= cap.user_token_cap:
        raise CapReached(cap=cap.user_token_cap, active=_shown(active))
    raise Decline(in_full)  # (the cap changed meanwhile)


def _issue_user_token(
    db: Database, org_slack_id: str, user_id: str, name: str, now: datetime
) -> IssuedToken:
    """:func:`issue_user_token` in full, for what its quick form leaves: an organization
    to create, tokens past their cutoff to end first."""
    key = name_key(name)
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        member = ensure_member(session, org.id, user_id, now)
        end_overdue(session, org, now, member=member)
        active = _active(session, member, now)
        clash = next((t for t in active if name_key(t.name) == key), None)
        if clash is not None:
            raise _name_taken(name, clash)
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
    replaces: int | None = None,
    detail: dict[str, Any] | None = None,
) -> IssuedToken:
    """Mint a token and store its digest, with its audit event: the one place tokens are
    created. The caller holds the organization's lock and has checked cap and name.
    ``replaces``: the token a rotation replaces with this one (R18).

    The token is not valid until :func:`mark_delivered` says its owner was shown it; if
    that does not happen within DELIVERY_DEADLINE, the sweep revokes it (R14)."""
    secret = tokenformat.mint(kind)
    values = _new_token(org.id, kind, name, secret, now)
    values.update(
        member_id=member, service_user_id=service_user, created_by_id=member, replaces_id=replaces
    )
    token_id = session.execute(_INSERT, values).scalar_one()
    info = TokenInfo(id=token_id, **{k: values[k] for k in _TOKEN_INFO_VALUES})
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


def _new_token(
    org_id: int, kind: TokenKind, name: str, secret: str, now: datetime
) -> dict[str, Any]:
    """The row of a new token, but for its owner (member or service user) and id."""
    return {
        "org_id": org_id,
        "kind": kind,
        "name": name,
        "name_key": name_key(name),
        "hint": tokenformat.hint(secret),
        "digest": tokenformat.digest(secret),
        "created_at": now,
        "last_used_at": None,
        "delivered_at": None,
        "cutoff_at": now + DELIVERY_DEADLINE,
        "next_notice_at": None,  # nothing to remind of before it is delivered
        "state": TokenState.ACTIVE,
        "state_reason": None,
        "rotated_at": None,
    }


_TOKEN_INFO_VALUES = [name for name in TokenInfo.__dataclass_fields__ if name != "id"]


@quick(writes=False)
async def list_user_tokens(
    statements: Statements, org_slack_id: str, user_id: str, now: datetime
) -> TokenList:
    """The member's active tokens, oldest first, and their organization's cap (R5, R10).
    A token still being delivered is not listed (it counts against the cap all the same).
    """
    cap, _, active = await _listing(statements, org_slack_id, user_id, now)
    if cap is None:
        return TokenList([], DEFAULT_USER_TOKEN_CAP)
    return TokenList(_shown(active), cap)


@quick(writes=False)
async def find_user_token(
    statements: Statements, org_slack_id: str, user_id: str, raw_name: str, now: datetime
) -> TokenInfo:
    """The member's active token called ``raw_name`` (any case), or TokenNotFound."""
    key = name_key(raw_name.strip())
    for info in (await list_user_tokens.body(statements, org_slack_id, user_id, now)).tokens:
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

    A member whose token an admin revoked is owed a message saying who revoked which
    token, queued in the same transaction (the outbox sends it).

    Raises TokenNotFound when the token is not the organization's or no longer active,
    NotAllowed when the actor may not revoke it.
    """
    # Imported here: the outbox reads this module's columns to describe its messages.
    from storage import outbox

    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        token, row, as_owner = _permitted(
            session, org, token_id, actor_user_id, now, "revoke", admin
        )
        member: str | None = row.slack_user_id if row.service_user_id is None else None
        reason = "revoked by owner" if as_owner else "revoked by admin"
        ended = end_token(session, org, token, TokenState.REVOKED, reason, actor_user_id, now)
        if member is not None and member != actor_user_id:
            outbox.queue_revoked_notice(session, org, ended, member, actor_user_id, now)
        return ended


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


_ROTATING = (
    sa.update(TOKEN)
    .where(TOKEN.c.id == sa.bindparam("token"))
    .values(rotated_at=sa.bindparam("now"))
)
_SERVICE_NAME = sa.select(SERVICE.c.name).where(SERVICE.c.id == sa.bindparam("service"))


def rotate_token(
    db: Database,
    org_slack_id: str,
    actor_user_id: str,
    token_id: int,
    now: datetime,
    *,
    admin: bool = False,
) -> Rotation:
    """Start rotating a token (R18): a new token with the same owner (member or service
    user), name and permissions, to be shown once to ``actor_user_id``. Who may: as for
    :func:`revoke_token`, except that an admin rotates only service tokens (a member's
    new token is shown to them alone, R14); a service token needs no new approval, its
    grant unchanged.

    From now on the old token holds neither its name nor a place under the cap, so a
    rotation never fails for lack of room; it stays valid as it was until the new one is
    shown (:func:`mark_delivered`), then for the organization's grace period. If the
    new token is never shown, the rotation is undone. One transaction under the
    organization's lock: of rotations of one token at once, the first wins and the
    others find it rotated already.

    Raises TokenNotFound, NotAllowed, or AlreadyRotated when a rotation replaced it
    already.
    """
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        old, row, as_owner = _permitted(session, org, token_id, actor_user_id, now, "rotate", admin)
        if not as_owner and old.kind != TokenKind.SERVICE:
            # The new token is shown to whoever rotates: a member's token only to them (R14).
            raise NotAllowed(
                "Only its owner can rotate a personal token, since the new one is shown to "
                "whoever rotates it. You can revoke it instead."
            )
        if old.delivered_at is None:
            raise TokenNotFound(f"The token “{old.name}” is not in use yet.")
        if old.rotated_at is not None:
            raise AlreadyRotated(
                f"The token “{old.name}” ({old.hint}) was rotated already and stops working "
                "when its grace period ends. Its replacement, of the same name, is the one "
                "to use and to rotate."
            )
        session.execute(_ROTATING, {"token": old.id, "now": now})
        invalidates(session)  # a cached answer about it would move its cutoff on a use
        issued = insert_token(
            session,
            org,
            TokenKind(old.kind),
            old.name,
            actor_user_id,
            now,
            member=row.member_id,
            service_user=row.service_user_id,
            replaces=old.id,
            detail={"replaces": old.id},
        )
        audit.record(
            session,
            org,
            actor=actor_user_id,
            action="token.rotated",
            subject=f"token:{old.id}",
            now=now,
            detail={
                "name": old.name,
                "kind": old.kind,
                "old": {"id": old.id, "hint": old.hint},
                "new": {"id": issued.info.id, "hint": issued.info.hint},
                "grace_hours": org.rotation_grace_hours,
                "as": "owner" if as_owner else "admin",
            },
        )
        service_user = (
            session.execute(_SERVICE_NAME, {"service": row.service_user_id}).scalar_one()
            if row.service_user_id is not None
            else None
        )
        return Rotation(replace(old, rotated_at=now), issued, org.grace, service_user)


_GRACE = (
    sa.update(TOKEN)
    .where(TOKEN.c.id == sa.bindparam("token"))
    .values(cutoff_at=sa.bindparam("cutoff"), next_notice_at=None)
)


def _start_grace(session: Session, org: LockedOrg, old_id: int, new_id: int, now: datetime) -> None:
    """``new_id``, which replaces ``old_id``, was just shown: the old token works on
    until the end of the grace period (no reminder, and no use moves that end), or, with
    no grace period, is revoked now (R18)."""
    found = _locked_token(session, org, old_id)
    if found is None:
        return
    old = found[0]
    if old.state != TokenState.ACTIVE or old.rotated_at is None or old.cutoff_at <= now:
        return  # ended meanwhile: nothing is left to overlap
    if org.grace <= timedelta(0):
        end_token(session, org, old, TokenState.REVOKED, ROTATED, audit.SYSTEM, now)
        return
    until = now + org.grace
    session.execute(_GRACE, {"token": old.id, "cutoff": until})
    invalidates(session)  # its cutoff moved: cached answers would say otherwise
    audit.record(
        session,
        org,
        actor=audit.SYSTEM,
        action="token.grace_started",
        subject=f"token:{old.id}",
        now=now,
        detail={
            "name": old.name,
            "hint": old.hint,
            "until": until.isoformat(),
            "replaced_by": new_id,
        },
    )


def _permitted(
    session: Session,
    org: LockedOrg,
    token_id: int,
    actor_user_id: str,
    now: datetime,
    verb: str,
    admin: bool,
) -> tuple[TokenInfo, Any, bool]:
    """The one permission check for a member acting on a token: the token, locked, its
    row with its owner's ids (``_LOCKED``), and whether the actor acts as its owner
    (False: as an admin)."""
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
    return token, row, owns


@quick(writes=True)
async def mark_delivered(
    statements: Statements, org_slack_id: str, token_id: int, now: datetime, via: str
) -> TokenInfo | None:
    """The token was shown to its owner: from now on it is valid, with the full
    inactivity period from its creation (R11, R14); a rotation's new token starts the
    old one's grace period (R18). None when it can no longer become valid (revoked
    meanwhile, or past its delivery deadline)."""
    org_rows, found = await statements.read(
        Query(_ORG_ROW, {"org": org_slack_id}),
        Query(_TOKEN_OF_ORG, {"token": token_id, "org": org_slack_id}),
    )
    if not org_rows:  # created on the way, as ever: left to the full transaction
        raise Decline(lambda db: _mark_delivered(db, org_slack_id, token_id, now, via))
    org = LockedOrg(**org_rows[0]._asdict())
    if not found:
        return None
    token = _info_first(found[0])
    if token.state != TokenState.ACTIVE or token.delivered_at is not None or token.cutoff_at <= now:
        return None  # for good: no token becomes deliverable again
    if found[0].replaces_id is not None:  # a rotation's: its old token changes too
        raise Decline(lambda db: _mark_delivered(db, org_slack_id, token_id, now, via))
    params, detail = _delivery(org, token, now, via)
    event = audit.appended(
        org.id,
        actor=audit.SYSTEM,
        action="token.delivered",
        subject=f"token:{token_id}",
        now=now,
        detail=detail,
    )
    condition = {"token": token_id, "now": now}
    *_, delivered = await statements.write(
        Query(_LOCK_ORG, {"org": org.id}),
        *_DELIVERED_AUDIT.queries({**event, **condition}),
        Query(_DELIVERED_RETURNING, params),
    )
    return replace(token, delivered_at=now, cutoff_at=params["cutoff"]) if delivered else None


def _delivery(
    org: LockedOrg, token: TokenInfo, now: datetime, via: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters of the update that records ``token``'s delivery, and the detail of
    its audit event."""
    cutoff = token.created_at + org.period
    params = {
        "token": token.id,
        "now": now,
        "cutoff": cutoff,
        "next_notice": org.first_notice(cutoff),
    }
    return params, {"name": token.name, "hint": token.hint, "kind": token.kind, "via": via}


def _mark_delivered(
    db: Database, org_slack_id: str, token_id: int, now: datetime, via: str
) -> TokenInfo | None:
    """:func:`mark_delivered` in full, for an organization not seen before, or a token
    that replaces another."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        found = _locked_token(session, org, token_id)
        if found is None:
            return None
        token, row = found
        params, detail = _delivery(org, token, now, via)
        if not session.execute(_DELIVERED, params).rowcount:  # type: ignore[attr-defined]
            return None
        audit.record(
            session,
            org,
            actor=audit.SYSTEM,
            action="token.delivered",
            subject=f"token:{token_id}",
            now=now,
            detail=detail,
        )
        if row.replaces_id is not None:
            _start_grace(session, org, row.replaces_id, token_id, now)
        return replace(token, delivered_at=now, cutoff_at=params["cutoff"])


def revoke_undelivered(db: Database, org_slack_id: str, token_id: int, now: datetime) -> None:
    """Revoke a token its owner never received: a token nobody can see must not work. A
    rotation it was to complete is undone: the old token goes on as before (R18)."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        found = _locked_token(session, org, token_id)
        if found is not None and found[0].state == TokenState.ACTIVE and not found[0].delivered_at:
            end_token(session, org, found[0], TokenState.REVOKED, NOT_DELIVERED, audit.SYSTEM, now)
            _cancel_rotations(session, org, [token_id], now)
