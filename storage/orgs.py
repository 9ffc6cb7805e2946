"""Organizations and members: found or created inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from storage.models import Member, Organization


def _insert_ignore(session: Session, model: type[Any], values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing())


def lock_org(session: Session, slack_id: str, now: datetime) -> Organization:
    """The organization's row, created if new and locked until the transaction ends.

    Every write transaction takes this lock first, so writes within one organization are
    serialised: caps hold under concurrency and the audit chain never forks.
    """
    query = select(Organization).where(Organization.slack_id == slack_id).with_for_update()
    org = session.exec(query).first()
    if org is None:
        _insert_ignore(session, Organization, {"slack_id": slack_id, "created_at": now})
        org = session.exec(query).one()
    return org


def find_org(session: Session, slack_id: str) -> Organization | None:
    return session.exec(select(Organization).where(Organization.slack_id == slack_id)).first()


def ensure_member(session: Session, org: Organization, slack_user_id: str, now: datetime) -> Member:
    """The member row for ``slack_user_id`` in ``org``, created if new."""
    assert org.id is not None
    member = find_member(session, org, slack_user_id)
    if member is None:
        values = {"org_id": org.id, "slack_user_id": slack_user_id, "created_at": now}
        _insert_ignore(session, Member, values)
        member = find_member(session, org, slack_user_id)
        assert member is not None
    return member


def find_member(session: Session, org: Organization, slack_user_id: str) -> Member | None:
    return session.exec(
        select(Member).where(Member.org_id == org.id, Member.slack_user_id == slack_user_id)
    ).first()
