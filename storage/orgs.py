"""Organizations and members, found or created inside the caller's transaction.

These run on every request, so they use plain SQL statements over the tables rather
than ORM objects: the ORM's bookkeeping costs more here than the queries themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from storage.models import Member, Organization

ORG = Organization.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]


@dataclass
class LockedOrg:
    """An organization's row, locked by the current transaction."""

    id: int
    slack_id: str
    user_token_cap: int
    service_token_cap: int
    inactivity_days: int
    reminder_days: list[int]
    allow_keep_alive: bool
    rotation_grace_hours: int
    audit_head: str  # advanced by storage.audit.record

    @property
    def grace(self) -> timedelta:
        """How long a rotated token works on once its replacement is shown (R18)."""
        return timedelta(hours=self.rotation_grace_hours)

    @property
    def period(self) -> timedelta:
        """The inactivity period: how long a token lives without use (R11)."""
        return timedelta(days=self.inactivity_days)

    def first_notice(self, cutoff: datetime) -> datetime:
        """When the first reminder for a window ending at ``cutoff`` falls due (R12)."""
        return cutoff - timedelta(days=max(self.reminder_days, default=0))


def insert_ignore(session: Session, table: sa.Table, values: dict[str, Any]) -> bool:
    """Insert a row unless one with the same unique key exists; True if inserted."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    key = next(iter(table.primary_key.columns))
    statement = insert(table).values(**values).on_conflict_do_nothing().returning(key)
    # RETURNING, not rowcount: psycopg reports no row count for this statement.
    return session.execute(statement).first() is not None


def unnest(name: str, **columns: sa.types.TypeEngine[Any]) -> sa.TableValuedAlias:
    """Rows passed to PostgreSQL as one array per column (each a parameter named after
    its column), read back as the table ``name``: a statement over many rows whose text
    does not grow with them, so it is compiled, parsed and planned once."""
    arrays = [sa.bindparam(c, type_=postgresql.ARRAY(t)) for c, t in columns.items()]
    return sa.func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


_SELECT_ORG = sa.select(
    ORG.c.id,
    ORG.c.slack_id,
    ORG.c.user_token_cap,
    ORG.c.service_token_cap,
    ORG.c.inactivity_days,
    ORG.c.reminder_days,
    ORG.c.allow_keep_alive,
    ORG.c.rotation_grace_hours,
    ORG.c.audit_head,
)


# Statements are built once, with named parameters: building them per call costs more
# than running them.
_ORG_BY_SLACK_ID = _SELECT_ORG.where(ORG.c.slack_id == sa.bindparam("slack_id"))
_LOCK_ORG = _ORG_BY_SLACK_ID.with_for_update()
_MEMBER_ID = sa.select(MEMBER.c.id).where(
    MEMBER.c.org_id == sa.bindparam("org_id"),
    MEMBER.c.slack_user_id == sa.bindparam("slack_user_id"),
)


def lock_org(session: Session, slack_id: str, now: datetime) -> LockedOrg:
    """The organization's row, created if new and locked until the transaction ends.

    Every write transaction takes this lock first, so writes within one organization are
    serialised: caps hold under concurrency and the audit chain never forks.
    """
    row = session.execute(_LOCK_ORG, {"slack_id": slack_id}).first()
    if row is None:
        insert_ignore(session, ORG, {**_org_defaults(), "slack_id": slack_id, "created_at": now})
        row = session.execute(_LOCK_ORG, {"slack_id": slack_id}).one()
    return LockedOrg(**row._mapping)


def _org_defaults() -> dict[str, Any]:
    # Columns that default to empty are left to the database: a schema of an older
    # revision (a migration's test) may not have them yet.
    new = Organization(slack_id="").model_dump(exclude={"id", "slack_id", "created_at"})
    return {name: value for name, value in new.items() if value is not None}


def find_org(session: Session, slack_id: str) -> LockedOrg | None:
    """The organization's row, unlocked (for reads), or None if it was never seen."""
    row = session.execute(_ORG_BY_SLACK_ID, {"slack_id": slack_id}).first()
    return LockedOrg(**row._mapping) if row else None


def member_id(session: Session, org_id: int, slack_user_id: str) -> int | None:
    params = {"org_id": org_id, "slack_user_id": slack_user_id}
    found: int | None = session.execute(_MEMBER_ID, params).scalar()
    return found


def ensure_member(session: Session, org_id: int, slack_user_id: str, now: datetime) -> int:
    """The id of the member ``slack_user_id`` of the organization, created if new."""
    found = member_id(session, org_id, slack_user_id)
    if found is None:
        values = {"org_id": org_id, "slack_user_id": slack_user_id, "created_at": now}
        insert_ignore(session, MEMBER, values)
        found = member_id(session, org_id, slack_user_id)
        assert found is not None
    return found
