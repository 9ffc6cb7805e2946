"""The organization's report (R6): seats, service users, and tokens by kind and state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from storage.db import Database
from storage.models import ServiceUser, Token, TokenState
from storage.orgs import find_org
from storage.tokenformat import TokenKind

TOKEN = Token.__table__  # type: ignore[attr-defined]
SERVICE = ServiceUser.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Report:
    """R6: seats (members holding an active user token) and service users, and tokens by
    kind and state."""

    seats: int
    service_users: int
    tokens: dict[str, dict[str, int]]  # kind -> state -> count


def report(db: Database, org_slack_id: str, now: datetime) -> Report:
    """The organization's seats and tokens. A token past its cutoff counts as expired (or
    revoked, if it was never delivered), whether or not a sweep has marked it."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return Report(0, 0, {})
        active = TOKEN.c.state == TokenState.ACTIVE
        delivered = TOKEN.c.delivered_at.is_not(None)
        live = sa.and_(active, delivered, TOKEN.c.cutoff_at > now)
        # Not yet shown to its owner: not valid, and never a seat (R14, R6). Past its
        # delivery deadline it is as good as revoked ("not delivered") by the next sweep.
        state = sa.case(
            (live, "active"),
            # Past the grace period of a rotation, it is as good as revoked ("rotated").
            (sa.and_(active, delivered, TOKEN.c.rotated_at.is_not(None)), TokenState.REVOKED),
            (sa.and_(active, delivered), "expired"),
            (sa.and_(active, TOKEN.c.cutoff_at > now), "being delivered"),
            (active, TokenState.REVOKED),
            else_=TOKEN.c.state,
        )
        counts: dict[str, dict[str, int]] = {}
        for row in session.execute(
            sa.select(TOKEN.c.kind, state.label("state"), sa.func.count())
            .where(TOKEN.c.org_id == org.id)
            .group_by(TOKEN.c.kind, state)
        ):
            counts.setdefault(row.kind, {})[row.state] = row[2]
        seats = session.execute(
            sa.select(sa.func.count(sa.distinct(TOKEN.c.member_id))).where(
                TOKEN.c.org_id == org.id, TOKEN.c.kind == TokenKind.USER, live
            )
        ).scalar_one()
        services = session.execute(
            sa.select(sa.func.count()).select_from(SERVICE).where(SERVICE.c.org_id == org.id)
        ).scalar_one()
        return Report(seats=seats, service_users=services, tokens=counts)
