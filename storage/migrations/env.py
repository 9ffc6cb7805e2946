"""Alembic environment: the engine comes from ``storage.migrate``, given by the code that
runs the migrations, or, for the ``alembic`` command, from TOKENBOT_DATABASE_URL (never
from a file)."""

from __future__ import annotations

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables)
from storage.migrate import database_from_environment

config = context.config
if config.cmd_opts is not None:  # the `alembic` command: say what it runs
    fileConfig(config.config_file_name, disable_existing_loggers=False)
engine: sa.Engine = config.attributes.get("engine") or database_from_environment().engine


def _sqlite_foreign_keys(connection: sa.Connection, on: bool) -> None:
    # Outside any transaction (SQLite ignores the pragma within one), on the driver's
    # connection: SQLAlchemy would begin a transaction first.
    connection.rollback()
    connection.connection.dbapi_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # A batch migration rebuilds a table (copy, drop, rename), and dropping a table
        # that other rows point at fails while foreign keys are enforced: they are
        # checked once, over the whole database, before the migrations commit.
        _sqlite_foreign_keys(connection, on=False)
    try:
        # One transaction for the whole upgrade, on SQLite too (where Alembic would
        # commit each revision): a failed upgrade leaves the schema where it was.
        connection.begin()
        if connection.dialect.name == "postgresql":
            # Replicas starting together migrate one at a time.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7366297)"))
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
            raise RuntimeError(f"the migrations left rows pointing at nothing: {broken[:5]}")
        connection.commit()
    finally:
        if sqlite:  # the pooled connection goes back as every other is
            _sqlite_foreign_keys(connection, on=True)
