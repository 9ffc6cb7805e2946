"""Slack event ids already handled, so a repeated delivery has no second effect."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from storage.db import Database
from storage.models import SlackEvent
from storage.orgs import insert_ignore

EVENT = SlackEvent.__table__  # type: ignore[attr-defined]
KEPT_FOR = timedelta(days=2)  # Slack retries for hours, not days


def first_delivery(db: Database, event_id: str, now: datetime) -> bool:
    """True the first time ``event_id`` is seen; False for every later delivery."""
    with db.write() as session:
        return insert_ignore(session, EVENT, {"event_id": event_id, "received_at": now})


def forget_old_events(db: Database, now: datetime) -> int:
    with db.write() as session:
        result = session.execute(sa.delete(EVENT).where(EVENT.c.received_at < now - KEPT_FOR))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
