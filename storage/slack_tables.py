"""The tables slack_sdk's SQLAlchemy installation and OAuth state stores read and write,
as slack_sdk defines them, registered on the models' metadata (migration 0011 creates
them). Only those stores use them."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlmodel import SQLModel

from storage.db import Database

INSTALLATIONS = SQLAlchemyInstallationStore.build_installations_table(
    SQLModel.metadata, SQLAlchemyInstallationStore.default_installations_table_name
)
BOTS = SQLAlchemyInstallationStore.build_bots_table(
    SQLModel.metadata, SQLAlchemyInstallationStore.default_bots_table_name
)
OAUTH_STATES = SQLAlchemyOAuthStateStore.build_oauth_states_table(
    SQLModel.metadata, SQLAlchemyOAuthStateStore.default_table_name
)


def forget_expired_states(db: Database, now: datetime) -> int:
    """Delete the OAuth states whose time ran out (an install begun and never finished):
    anyone can begin one, so they must not pile up. How many went."""
    # slack_sdk writes naive UTC times.
    cutoff = now.astimezone(UTC).replace(tzinfo=None)
    with db.write() as session:
        result = session.execute(sa.delete(OAUTH_STATES).where(OAUTH_STATES.c.expire_at < cutoff))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
