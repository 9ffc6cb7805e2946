"""Alembic, driven from code: ``tokenbot db upgrade`` and the server's start both call this."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from storage.db import Database


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", "storage:migrations")
    config.attributes["engine"] = db.engine
    return config


def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already."""
    command.upgrade(alembic_config(db), "head")
