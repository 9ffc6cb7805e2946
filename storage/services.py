"""Service users as their owners and admins see them (R5), who may act on their tokens
(R16), who hears about those tokens (R12, R13), and who is left owning them (R17)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from storage.db import Database
from storage.models import ADMIN_ROLES, ServiceOwner, ServiceUser, Token
from storage.orgs import MEMBER, find_org, member_id
from storage.tokens import TOKEN_INFO_COLUMNS, TokenInfo, holds_its_place, token_info

SERVICE = ServiceUser.__table__  # type: ignore[attr-defined]
OWNER = ServiceOwner.__table__  # type: ignore[attr-defined]
TOKEN = Token.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ServiceUserInfo:
    id: int
    name: str
    purpose: str
    scopes: list[str]
    owners: list[str]  # Slack user ids of its owners who are not deactivated
    tokens: list[TokenInfo]  # its active tokens, oldest first


# Owners still active in Slack: a deactivated owner neither acts nor hears.
_ACTIVE_OWNERS = (
    sa.select(OWNER.c.service_user_id, MEMBER.c.slack_user_id)
    .select_from(OWNER.join(MEMBER, OWNER.c.member_id == MEMBER.c.id))
    .where(~MEMBER.c.deleted)
)
_OWNERS_OF = (
    _ACTIVE_OWNERS.with_only_columns(MEMBER.c.slack_user_id)
    .where(OWNER.c.service_user_id == sa.bindparam("service"))
    .order_by(MEMBER.c.slack_user_id)
)
_KNOWN_ADMINS = (
    sa.select(MEMBER.c.slack_user_id)
    .where(
        MEMBER.c.org_id == sa.bindparam("org"),
        MEMBER.c.role.in_(ADMIN_ROLES),
        ~MEMBER.c.deleted,
    )
    .order_by(MEMBER.c.slack_user_id)
)


def recipients(session: Session, org_id: int, service_user_id: int) -> list[str]:
    """Who is told about a service token (reminders, expiry): its owners who are still
    active; when none is left, the organization's admins and owners as last seen."""
    owners = list(session.execute(_OWNERS_OF, {"service": service_user_id}).scalars())
    return owners or list(session.execute(_KNOWN_ADMINS, {"org": org_id}).scalars())


def solely_owned(session: Session, member: int) -> list[str]:
    """The names of the service users ``member`` owns with no other active owner: what
    admins must hear about when the member is deactivated (R17)."""
    others = (
        sa.select(OWNER.c.service_user_id)
        .select_from(OWNER.join(MEMBER, OWNER.c.member_id == MEMBER.c.id))
        .where(
            OWNER.c.service_user_id == SERVICE.c.id,
            OWNER.c.member_id != member,
            ~MEMBER.c.deleted,
        )
    )
    query = (
        sa.select(SERVICE.c.name)
        .select_from(SERVICE.join(OWNER, OWNER.c.service_user_id == SERVICE.c.id))
        .where(OWNER.c.member_id == member, ~others.exists())
        .order_by(SERVICE.c.name)
    )
    return list(session.execute(query).scalars())


def list_service_users(
    db: Database, org_slack_id: str, user_id: str, *, admin: bool, now: datetime
) -> list[ServiceUserInfo]:
    """The organization's service users with their active tokens: all of them for an
    admin, else those ``user_id`` owns (R5). Ordered by name."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return []
        query = sa.select(SERVICE).where(SERVICE.c.org_id == org.id).order_by(SERVICE.c.name)
        if not admin:
            member = member_id(session, org.id, user_id)
            if member is None:
                return []
            owned = sa.select(OWNER.c.service_user_id).where(OWNER.c.member_id == member)
            query = query.where(SERVICE.c.id.in_(owned))
        services = session.execute(query).all()
        ids = [s.id for s in services]
        owners: dict[int, list[str]] = {}
        for row in session.execute(
            _ACTIVE_OWNERS.where(OWNER.c.service_user_id.in_(ids)).order_by(MEMBER.c.slack_user_id)
        ):
            owners.setdefault(row.service_user_id, []).append(row.slack_user_id)
        tokens: dict[int, list[TokenInfo]] = {}
        for row in session.execute(
            sa.select(*TOKEN_INFO_COLUMNS, TOKEN.c.service_user_id)
            .where(
                TOKEN.c.service_user_id.in_(ids),
                holds_its_place(),  # one a rotation replaced is not (R18)
                TOKEN.c.delivered_at.is_not(None),  # one being delivered is not valid yet
                TOKEN.c.cutoff_at > now,
            )
            .order_by(TOKEN.c.created_at, TOKEN.c.id)
        ):
            tokens.setdefault(row.service_user_id, []).append(token_info(row))
        return [
            ServiceUserInfo(
                id=s.id,
                name=s.name,
                purpose=s.purpose,
                scopes=list(s.scopes),
                owners=owners.get(s.id, []),
                tokens=tokens.get(s.id, []),
            )
            for s in services
        ]
