"""Which organizations have the app installed, in multi-workspace (OAuth) mode.

The bot tokens themselves are kept by slack_sdk's installation store (its tables are
registered in ``storage.slack_tables``); here each organization records whether it is
installed now, which its tokens' validity depends on in that mode, and the key of its
installation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from storage import audit
from storage.db import Database, invalidates
from storage.models import Organization
from storage.orgs import lock_org

ORG = Organization.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Installed:
    """An installed organization and the key its installation is found by."""

    org: str  # the organization's id: a team id, or an enterprise id for an org-wide install
    enterprise_id: str | None  # the enterprise it is, or belongs to

    @property
    def org_wide(self) -> bool:
        """An org-wide (Enterprise Grid) install: the organization is the enterprise."""
        return self.enterprise_id == self.org

    @property
    def team_id(self) -> str | None:
        return None if self.org_wide else self.org


_INSTALLED = sa.select(ORG.c.slack_id, ORG.c.enterprise_id).where(ORG.c.installed_at.is_not(None))


def mark_installed(
    db: Database, org: str, enterprise_id: str | None, installer: str, now: datetime
) -> None:
    """Record that ``org`` has the app installed (again), by ``installer``: its tokens are
    valid again, those not past their cutoff."""
    with db.write() as session:
        locked = lock_org(session, org, now)
        session.execute(
            sa.update(ORG)
            .where(ORG.c.id == locked.id)
            .values(installed_at=now, enterprise_id=enterprise_id)
        )
        invalidates(session)  # answers cached as inactive are not kept
        audit.record(
            session,
            locked,
            actor=installer or audit.SYSTEM,
            action="app.installed",
            subject=f"org:{org}",
            now=now,
            detail={"enterprise": enterprise_id},
        )


def mark_uninstalled(db: Database, org: str, why: str, now: datetime) -> bool:
    """Record that ``org`` no longer has the app installed (``why``: the Slack event that
    said so). Its tokens are kept, and are not valid until it is installed again. False
    when it was not installed."""
    with db.write() as session:
        locked = lock_org(session, org, now)
        changed = session.execute(
            sa.update(ORG)
            .where(ORG.c.id == locked.id, ORG.c.installed_at.is_not(None))
            .values(installed_at=None)
        ).rowcount  # type: ignore[attr-defined]
        if not changed:
            return False
        invalidates(session)
        audit.record(
            session,
            locked,
            actor=audit.SYSTEM,
            action="app.uninstalled",
            subject=f"org:{org}",
            now=now,
            detail={"why": why},
        )
        return True


def installed(db: Database) -> list[Installed]:
    """Every organization that has the app installed now."""
    with db.read() as session:
        rows = session.execute(_INSTALLED.order_by(ORG.c.slack_id)).all()
    return [Installed(row.slack_id, row.enterprise_id) for row in rows]


def installation_of(db: Database, org: str) -> Installed | None:
    """``org`` and its installation's key if it has the app installed now, else None."""
    with db.read() as session:
        row = session.execute(_INSTALLED.where(ORG.c.slack_id == org)).first()
    return Installed(row.slack_id, row.enterprise_id) if row else None
