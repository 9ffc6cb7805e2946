"""Service users as their owners and admins see them (R5), who may act on their tokens
(R16), who hears about those tokens (R12, R13), who is left owning them (R17), and the
changes owners and admins make to who owns them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from storage import audit
from storage.db import Database
from storage.errors import InvalidField, NotAllowed, PolicyForbids, ServiceUserNotFound
from storage.models import ADMIN_ROLES, ServiceOwner, ServiceUser, Token
from storage.orgs import MEMBER, LockedOrg, ensure_member, find_org, lock_org, member_id
from storage.tokens import TOKEN_INFO_COLUMNS, TokenInfo, holds_its_place, token_info

SERVICE = ServiceUser.__table__  # type: ignore[attr-defined]
# A Slack user id, as a users_select gives it.
SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,31}")
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


# -- who owns a service user --------------------------------------------------------------

OWNER_FIELD = "owner"  # the form field a refusal about the member chosen is shown on


@dataclass(frozen=True)
class ServiceOwners:
    """A service user and its owners who are still active, by Slack user id."""

    id: int
    name: str
    owners: list[str]


_SERVICE_OF_ORG = sa.select(SERVICE.c.id, SERVICE.c.name).where(
    SERVICE.c.org_id == sa.bindparam("org")
)
_BY_ID = _SERVICE_OF_ORG.where(SERVICE.c.id == sa.bindparam("service"))
_BY_NAME = _SERVICE_OF_ORG.where(SERVICE.c.name == sa.bindparam("name"))
_OWNER_ROW = sa.select(OWNER.c.member_id).where(
    OWNER.c.service_user_id == sa.bindparam("service"),
    OWNER.c.member_id == sa.bindparam("member"),
)
_MEMBER_DELETED = sa.select(MEMBER.c.deleted).where(MEMBER.c.id == sa.bindparam("member"))


def _service(session: Session, row: Any) -> ServiceOwners:
    if row is None:
        raise ServiceUserNotFound("That service user does not exist in this workspace.")
    owners = list(session.execute(_OWNERS_OF, {"service": row.id}).scalars())
    return ServiceOwners(id=row.id, name=row.name, owners=owners)


def _managed(
    session: Session, org: LockedOrg, service_user_id: int, actor: str, admin: bool
) -> ServiceOwners:
    """The service user, if ``actor`` is one of its active owners or acts as an admin
    (the caller checked that standing in Slack); else NotAllowed."""
    found = session.execute(_BY_ID, {"org": org.id, "service": service_user_id}).first()
    service = _service(session, found)
    if not (admin or actor in service.owners):
        raise NotAllowed("You can change the owners only of service users you own.")
    return service


def owners_of(
    db: Database,
    org_slack_id: str,
    actor: str,
    service_user_id: int,
    now: datetime,
    *,
    admin: bool = False,
) -> ServiceOwners:
    """The service user and its active owners, for one of those owners or an admin
    (``admin``: the caller checked the actor's standing in Slack) about to change them.
    Raises ServiceUserNotFound or NotAllowed."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            raise ServiceUserNotFound("That service user does not exist in this workspace.")
        return _managed(session, org, service_user_id, actor, admin)


def add_owner(
    db: Database,
    org_slack_id: str,
    actor: str,
    service_user_id: int,
    now: datetime,
    *,
    member: str,
    admin: bool = False,
) -> ServiceOwners:
    """Make ``member`` an owner of the service user: they then see it, act on its tokens
    and are reminded of them. Only one of its active owners, or an admin (``admin``: the
    caller checked the actor's standing in Slack), may. Raises ServiceUserNotFound,
    NotAllowed, or InvalidField (on OWNER_FIELD) when ``member`` owns it already or is
    known to be deactivated; nothing changes when it raises."""
    if not SLACK_USER_ID.fullmatch(member):
        raise InvalidField(OWNER_FIELD, "Choose a member of the workspace.")
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        service = _managed(session, org, service_user_id, actor, admin)
        new = ensure_member(session, org.id, member, now)
        if session.execute(_MEMBER_DELETED, {"member": new}).scalar_one():
            raise InvalidField(OWNER_FIELD, "That member is deactivated: choose someone else.")
        if session.execute(_OWNER_ROW, {"service": service.id, "member": new}).first():
            raise InvalidField(OWNER_FIELD, f"That member already owns {service.name}.")
        session.execute(sa.insert(OWNER).values(service_user_id=service.id, member_id=new))
        _record(session, org, actor, "service_user.owner_added", service, now, owner=member)
        return _service(session, session.execute(_BY_ID, _key(org, service)).first())


def remove_owner(
    db: Database,
    org_slack_id: str,
    actor: str,
    service_user_id: int,
    now: datetime,
    *,
    member: str,
    admin: bool = False,
) -> ServiceOwners:
    """Remove ``member`` from the service user's owners, keeping at least one active
    owner. Only one of its active owners (themself included), or an admin (``admin``:
    the caller checked the actor's standing in Slack), may. Raises
    ServiceUserNotFound, NotAllowed, InvalidField (on OWNER_FIELD) when ``member`` is not
    an owner, or PolicyForbids when they are its last active owner; nothing changes when
    it raises."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        service = _managed(session, org, service_user_id, actor, admin)
        gone = member_id(session, org.id, member)
        if (
            gone is None
            or not session.execute(_OWNER_ROW, {"service": service.id, "member": gone}).first()
        ):
            raise InvalidField(OWNER_FIELD, f"That member does not own {service.name}.")
        if service.owners == [member]:
            raise PolicyForbids(
                f"That member is the only owner of {service.name}, and a service user keeps "
                "at least one: add another owner first."
            )
        session.execute(
            sa.delete(OWNER).where(OWNER.c.service_user_id == service.id, OWNER.c.member_id == gone)
        )
        _record(session, org, actor, "service_user.owner_removed", service, now, owner=member)
        return _service(session, session.execute(_BY_ID, _key(org, service)).first())


def take_over(
    db: Database, org_slack_id: str, actor: str, name: str, now: datetime
) -> ServiceOwners:
    """Make ``actor``, an admin (the caller checked that standing in Slack), the owner of
    the service user called ``name`` whose owners have all been deactivated (R17).
    Raises ServiceUserNotFound, or PolicyForbids when it has an active owner again."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        found = session.execute(_BY_NAME, {"org": org.id, "name": name}).first()
        service = _service(session, found)
        if service.owners:
            raise PolicyForbids(
                f"{service.name} has an active owner now, so there is nothing to take over."
            )
        admin = ensure_member(session, org.id, actor, now)
        if not session.execute(_OWNER_ROW, {"service": service.id, "member": admin}).first():
            session.execute(sa.insert(OWNER).values(service_user_id=service.id, member_id=admin))
        _record(session, org, actor, "service_user.taken_over", service, now)
        return _service(session, session.execute(_BY_ID, _key(org, service)).first())


def _key(org: LockedOrg, service: ServiceOwners) -> dict[str, int]:
    return {"org": org.id, "service": service.id}


def _record(
    session: Session,
    org: LockedOrg,
    actor: str,
    action: str,
    service: ServiceOwners,
    now: datetime,
    **detail: str,
) -> None:
    audit.record(
        session,
        org,
        actor=actor,
        action=action,
        subject=f"service_user:{service.id}",
        now=now,
        detail={"service_user": service.name, **detail},
    )
