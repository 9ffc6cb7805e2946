"""Alembic, driven from code: ``tokenbot db upgrade`` and the server's start both call this."""

from __future__ import annotations

from functools import cache

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from storage.db import Database

SCRIPT_LOCATION = "storage:migrations"


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["engine"] = db.engine
    return config


def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already."""
    command.upgrade(alembic_config(db), "head")


@cache
def code_head() -> str | None:
    """The newest revision this code knows (read once: the code does not change)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return ScriptDirectory.from_config(config).get_current_head()


def schema_lag(db: Database) -> str | None:
    """Why the database's schema is not the one this code needs, in one line, or None
    when it is: its Alembic revision must be the code's head. Raises when the database
    cannot be reached."""
    with db.engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    head = code_head()
    if current == head:
        return None
    if current is None:
        return "database not migrated (run `tokenbot db upgrade`)"
    return f"database schema is at revision {current}, this code needs {head}"
