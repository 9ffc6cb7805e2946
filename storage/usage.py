"""Token use: is a presented token valid, whose is it, and moving its cutoff (R1, R4, R11)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from storage import audit, tokenformat
from storage.db import Database
from storage.errors import AlreadyRotated, NotAllowed, PolicyForbids, TokenNotFound
from storage.models import Member, Organization, ServiceUser, Token, TokenState
from storage.orgs import lock_org
from storage.tokenformat import TokenKind
from storage.tokens import TokenInfo, owned_active_token

TOKEN = Token.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
ORG = Organization.__table__  # type: ignore[attr-defined]
SERVICE = ServiceUser.__table__  # type: ignore[attr-defined]
USE_WRITE_INTERVAL = timedelta(minutes=1)  # last-use writes, at most one per token


@dataclass(frozen=True)
class ValidToken:
    """A token that is valid now, and what its use carries (never the secret)."""

    id: int
    kind: str
    org: str  # the organization's Slack id
    name: str
    created_at: datetime
    last_used_at: datetime | None
    cutoff_at: datetime
    owner: str | None  # the member's Slack user id, for user tokens
    service_user: str | None  # the service user's name, for service tokens
    display_name: str | None
    role: str
    groups: tuple[str, ...]
    profile_at: datetime | None
    role_scopes: dict[str, list[str]]
    service_scopes: tuple[str, ...] = ()
    # Replaced by a rotation (R18): valid until its cutoff, the end of its grace period,
    # which no use moves.
    rotated_at: datetime | None = None

    @property
    def scopes(self) -> list[str]:
        """A service token: its service user's permissions (R2). A user token: the
        member's permissions as they are now, from their current role (R1)."""
        if self.kind == TokenKind.SERVICE:
            return list(self.service_scopes)
        return list(self.role_scopes.get(self.role, []))

    @property
    def subject(self) -> str:
        """Who acts with this token: the member, or the service user (R4)."""
        return self.owner or self.service_user or ""


_LOOKUP = (
    sa.select(
        TOKEN.c.id,
        TOKEN.c.kind,
        TOKEN.c.name,
        TOKEN.c.created_at,
        TOKEN.c.last_used_at,
        TOKEN.c.cutoff_at,
        TOKEN.c.state,
        TOKEN.c.delivered_at,
        TOKEN.c.rotated_at,
        ORG.c.slack_id.label("org"),
        ORG.c.role_scopes,
        ORG.c.installed_at.label("org_installed_at"),
        MEMBER.c.slack_user_id.label("owner"),
        MEMBER.c.display_name,
        MEMBER.c.role,
        MEMBER.c.groups,
        MEMBER.c.profile_at,
        MEMBER.c.deleted,
        SERVICE.c.name.label("service_user"),
        SERVICE.c.scopes.label("service_scopes"),
    )
    .select_from(
        TOKEN.join(ORG, TOKEN.c.org_id == ORG.c.id)
        .outerjoin(MEMBER, TOKEN.c.member_id == MEMBER.c.id)
        .outerjoin(SERVICE, TOKEN.c.service_user_id == SERVICE.c.id)
    )
    .where(TOKEN.c.digest == sa.bindparam("digest"))
)
_USED = sa.update(TOKEN).where(
    TOKEN.c.id == sa.bindparam("token"),
    TOKEN.c.state == TokenState.ACTIVE,
    TOKEN.c.delivered_at.is_not(None),
    TOKEN.c.cutoff_at > sa.bindparam("now"),
    sa.or_(TOKEN.c.last_used_at.is_(None), TOKEN.c.last_used_at <= sa.bindparam("stale")),
)
_MOVE_CUTOFF = _USED.where(TOKEN.c.rotated_at.is_(None)).values(
    last_used_at=sa.bindparam("now"),
    cutoff_at=sa.bindparam("cutoff"),
    next_notice_at=sa.bindparam("next_notice"),
)
# A token in its grace period (R18): the use is on record, and moves nothing.
_USED_IN_GRACE = _USED.where(TOKEN.c.rotated_at.is_not(None)).values(
    last_used_at=sa.bindparam("now")
)
_KEEP_ALIVE = (
    sa.update(TOKEN)
    .where(TOKEN.c.id == sa.bindparam("token"))
    .values(cutoff_at=sa.bindparam("cutoff"), next_notice_at=sa.bindparam("next_notice"))
)


def validate(
    db: Database, secret: str, now: datetime, *, installed_only: bool = False
) -> ValidToken | None:
    """The token ``secret`` if it is valid at ``now``, else None.

    A token past its cutoff is invalid at once, whether or not a sweep has marked it;
    a token not yet delivered to its owner is not valid yet (R14). With
    ``installed_only`` (multi-workspace mode), a token of an organization that does not
    have the app installed now is not valid either.
    """
    if not tokenformat.has_valid_checksum(secret):
        return None  # no database round trip for strings that are not tokens
    with db.read() as session:
        row = session.execute(_LOOKUP, {"digest": tokenformat.digest(secret)}).first()
    if (
        row is None
        or row.state != TokenState.ACTIVE
        or row.delivered_at is None
        or row.cutoff_at <= now
        or row.deleted
        or (installed_only and row.org_installed_at is None)
    ):
        return None
    return ValidToken(
        id=row.id,
        kind=row.kind,
        org=row.org,
        name=row.name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        cutoff_at=row.cutoff_at,
        owner=row.owner,
        service_user=row.service_user,
        display_name=row.display_name,
        role=row.role or "member",
        groups=tuple(row.groups or ()),
        profile_at=row.profile_at,
        role_scopes=row.role_scopes,
        service_scopes=tuple(row.service_scopes or ()),
        rotated_at=row.rotated_at,
    )


def record_use(db: Database, token: ValidToken, now: datetime, via: str) -> ValidToken:
    """Count a successful use: the cutoff moves to ``now`` + the inactivity period (R11),
    except for a token in its grace period after a rotation, whose cutoff stays the end
    of that period (R18).

    Writes are coalesced: within a minute of the last recorded use nothing is written,
    so a busy token costs one write a minute, and each write is an audit event (R27).
    """
    if token.last_used_at is not None and now - token.last_used_at < USE_WRITE_INTERVAL:
        return token
    with db.write() as session:
        org = lock_org(session, token.org, now)
        params: dict[str, object] = {"token": token.id, "now": now}
        params["stale"] = now - USE_WRITE_INTERVAL
        if token.rotated_at is not None:
            cutoff, statement = token.cutoff_at, _USED_IN_GRACE
        else:
            cutoff, statement = now + org.period, _MOVE_CUTOFF
            params.update(cutoff=cutoff, next_notice=org.first_notice(cutoff))
        if session.execute(statement, params).rowcount:  # type: ignore[attr-defined]
            audit.record(
                session,
                org,
                actor=token.subject or audit.SYSTEM,
                action="token.used",
                subject=f"token:{token.id}",
                now=now,
                detail={"name": token.name, "via": via, "cutoff": cutoff.isoformat()},
            )
        return replace(token, last_used_at=now, cutoff_at=cutoff)


def keep_alive(
    db: Database,
    org_slack_id: str,
    actor_user_id: str,
    token_id: int,
    now: datetime,
    *,
    admin: bool = False,
) -> TokenInfo:
    """Give an unused token another full period (R12). Not a use: last use is unchanged.
    Its owner may; so may an admin (``admin``: the caller checked the standing in Slack)
    for a service token, as admins are reminded of those no owner is left to keep.
    Raises PolicyForbids when the organization does not allow it."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        if not org.allow_keep_alive:
            raise PolicyForbids("This workspace does not allow keeping unused tokens.")
        token = owned_active_token(session, org, token_id, actor_user_id, now, "keep", admin)
        if token.delivered_at is None:  # its cutoff is its delivery deadline: not moved
            raise TokenNotFound(f"The token “{token.name}” is not in use yet.")
        if token.rotated_at is not None:  # its grace period ends when it ends (R18)
            raise AlreadyRotated(
                f"The token “{token.name}” was rotated: it stops working when its grace "
                "period ends, and its replacement is the one to keep."
            )
        if admin and token.kind != TokenKind.SERVICE:
            raise NotAllowed("You can keep only your own tokens.")
        cutoff = now + org.period
        session.execute(
            _KEEP_ALIVE,
            {"token": token_id, "cutoff": cutoff, "next_notice": org.first_notice(cutoff)},
        )
        audit.record(
            session,
            org,
            actor=actor_user_id,
            action="token.keep_alive",
            subject=f"token:{token_id}",
            now=now,
            detail={"name": token.name, "hint": token.hint, "cutoff": cutoff.isoformat()},
        )
        return replace(token, cutoff_at=cutoff)
