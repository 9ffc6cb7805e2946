"""Alembic, driven from code: ``tokenbot db upgrade`` and the start of ``serve``, ``socket``
and ``sweep`` all call :func:`upgrade`, which refuses a database migrated by a newer
tokenbot. The ``alembic`` command (alembic.ini, ``make migration``) uses the same
migrations, on the database TOKENBOT_DATABASE_URL names."""

from __future__ import annotations

import os
import sys
from functools import cache

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from storage.db import Database

SCRIPT_LOCATION = "storage:migrations"
# Revision ids are numbers of this many digits, in order: 0001, 0002, ...
REVISION_DIGITS = 4
# Alembic's table, holding the revision the database is at.
_VERSION = sa.table("alembic_version", sa.column("version_num", sa.String()))


class SchemaError(Exception):
    """The database's schema is not one this code can work with; the message says what
    to do, in one line."""


def alembic_config(db: Database | None = None) -> Config:
    """The migrations' configuration; with ``db``, run on its engine."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if db is not None:
        config.attributes["engine"] = db.engine
    return config


@cache
def revisions() -> list[str]:
    """Every revision the code knows, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


@cache
def head() -> str:
    """The newest revision: the schema this code works with."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def next_revision_id() -> str:
    """The id the next migration gets: the head's number plus one (``make migration``)."""
    return f"{int(head()) + 1:0{REVISION_DIGITS}d}"


def current_revision(db: Database) -> str | None:
    """The revision the database is at; None when it has never been migrated."""
    # Read here rather than through Alembic, which logs as it starts.
    with db.engine.connect() as conn:
        if not sa.inspect(conn).has_table(_VERSION.name):
            return None
        return max(conn.execute(sa.select(_VERSION.c.version_num)).scalars(), default=None)


def _newer(at: str) -> SchemaError:
    return SchemaError(
        f"the database is at revision {at}, newer than this tokenbot ({head()}): "
        "upgrade tokenbot, or restore a backup"
    )


def refuse_newer(db: Database) -> None:
    """Raise :class:`SchemaError` if a newer tokenbot migrated the database (its revision
    is not one this code knows): the code would misread what it cannot see, and its
    migrations cannot go on from there."""
    at = current_revision(db)
    if at is not None and at not in revisions():
        raise _newer(at)


def require_current(db: Database) -> None:
    """Raise :class:`SchemaError` unless the database is at this code's revision: for the
    commands that read it without migrating it."""
    refuse_newer(db)
    at = current_revision(db)
    if at is None:
        raise SchemaError("the database has no tokenbot schema yet: run `tokenbot db upgrade`")
    if at != head():
        raise SchemaError(
            f"the database is at revision {at}, older than this tokenbot ({head()}): "
            "run `tokenbot db upgrade`"
        )


def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already. Raises
    :class:`SchemaError`, changing nothing, when the database is newer than the code."""
    refuse_newer(db)
    try:
        command.upgrade(alembic_config(db), "head")
    except CommandError:
        refuse_newer(db)  # a newer tokenbot migrated it meanwhile
        raise


def database_from_environment() -> Database:
    """The database TOKENBOT_DATABASE_URL names, for the ``alembic`` command."""
    url = os.environ.get("TOKENBOT_DATABASE_URL")
    if not url:
        sys.exit("alembic: set TOKENBOT_DATABASE_URL to the database to work on")
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return Database(parsed.render_as_string(hide_password=False))


def schema_lag(db: Database) -> str | None:
    """Why the database's schema is not the one this code needs, in one line, or None
    when it is: its revision must be the code's head. Raises when the database cannot be
    reached."""
    current = current_revision(db)
    if current == head():
        return None
    if current is None:
        return "database not migrated (run `tokenbot db upgrade`)"
    return f"database schema is at revision {current}, this code needs {head()}"


if __name__ == "__main__":  # `python -m storage.migrate next-id`, for `make migration`
    if sys.argv[1:] != ["next-id"]:
        sys.exit("usage: python -m storage.migrate next-id")
    print(next_revision_id())
