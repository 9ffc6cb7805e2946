"""The tables slack_sdk's SQLAlchemy installation and OAuth state stores read and write,
as slack_sdk defines them, registered on the models' metadata (migration 0011 creates
them). Only those stores use them."""

from __future__ import annotations

from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlmodel import SQLModel

INSTALLATIONS = SQLAlchemyInstallationStore.build_installations_table(
    SQLModel.metadata, SQLAlchemyInstallationStore.default_installations_table_name
)
BOTS = SQLAlchemyInstallationStore.build_bots_table(
    SQLModel.metadata, SQLAlchemyInstallationStore.default_bots_table_name
)
OAUTH_STATES = SQLAlchemyOAuthStateStore.build_oauth_states_table(
    SQLModel.metadata, SQLAlchemyOAuthStateStore.default_table_name
)
