"""Each test gets a freshly migrated database: SQLite in a temporary file by default,
PostgreSQL when TOKENBOT_TEST_DATABASE_URL names one (the same tests run against both).

The migrations run once per test session. On SQLite each test then gets a copy of the
migrated file; on PostgreSQL each test finds the database as the migrations left it,
rows and sequences alike (deleting the few rows a test leaves is much faster than
TRUNCATE, or than a copy of the database made from a template).

PostgreSQL: only the database TOKENBOT_TEST_DATABASE_URL names is used, its schema
dropped and rebuilt. Under pytest-xdist each worker uses a database of its own, named
after that one and the worker (``tb_tests_gw0``), which it creates and drops itself.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from bot import cli
from storage import tokens
from storage.db import Database
from storage.migrate import upgrade
from storage.tokens import IssuedToken

TEST_DATABASE_URL = os.environ.get("TOKENBOT_TEST_DATABASE_URL", "")
# Set by pytest-xdist in each of its worker processes ("gw0", "gw1", ...).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
FIXTURES = Path(__file__).parent / "fixtures" / "slack"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _psycopg(url: sa.URL) -> sa.URL:
    return url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url


@dataclass
class _MigratedPostgres:
    """A PostgreSQL database the migrations ran on, and what they left in it."""

    url: str
    engine: sa.Engine
    rows: dict[sa.Table, list[dict[str, Any]]]
    sequences: dict[str, tuple[int, bool]]  # name -> (last_value, is_called)

    def reset(self) -> None:
        """Back to what the migrations left: no other rows, sequences where they were."""
        with self.engine.begin() as conn:
            for table in reversed(SQLModel.metadata.sorted_tables):
                conn.execute(table.delete())
            for table, rows in self.rows.items():
                conn.execute(table.insert(), rows)
            for name, (value, called) in self.sequences.items():
                conn.execute(
                    sa.text("SELECT setval(:name, :value, :called)"),
                    {"name": name, "value": value, "called": called},
                )


def _create_worker_database(given: sa.URL) -> sa.URL:
    """The database of this xdist worker, named after the given one, created empty."""
    assert given.database, "TOKENBOT_TEST_DATABASE_URL names no database"
    own = given.set(database=f"{given.database}_{WORKER}")
    admin = sa.create_engine(given, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{own.database}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{own.database}"'))
    finally:
        admin.dispose()
    return own


def _drop_worker_database(given: sa.URL, own: sa.URL) -> None:
    admin = sa.create_engine(given, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{own.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def _migrated_postgres() -> Iterator[_MigratedPostgres | None]:
    if not TEST_DATABASE_URL:
        yield None
        return
    given = _psycopg(sa.make_url(TEST_DATABASE_URL))
    url = _create_worker_database(given) if WORKER else given
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        db = Database(url.render_as_string(hide_password=False))
        upgrade(db)
        db.dispose()
        with engine.connect() as conn:
            rows = {
                table: [dict(row._mapping) for row in conn.execute(table.select())]
                for table in SQLModel.metadata.sorted_tables
            }
            names = conn.execute(
                sa.text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
            ).scalars()
            sequences = {
                name: tuple(
                    conn.execute(sa.text(f'SELECT last_value, is_called FROM "{name}"')).one()
                )
                for name in list(names)
            }
        yield _MigratedPostgres(
            url=url.render_as_string(hide_password=False),
            engine=engine,
            rows={table: found for table, found in rows.items() if found},
            sequences=sequences,  # type: ignore[arg-type]
        )
    finally:
        engine.dispose()
        if WORKER:
            _drop_worker_database(given, url)


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file the migrations ran on, to be copied for each test."""
    path = tmp_path_factory.mktemp("migrated") / "tokenbot.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    db.dispose()
    # Closing the last connection folds the write-ahead log into the file: the file alone
    # is then the whole database.
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture
def database_url(
    _migrated_postgres: _MigratedPostgres | None, request: pytest.FixtureRequest, tmp_path: Path
) -> str:
    if _migrated_postgres is None:
        template: Path = request.getfixturevalue("_migrated_sqlite")
        path = tmp_path / "tokenbot.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    _migrated_postgres.reset()
    return _migrated_postgres.url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def shown(db: Database, org: str, issued: IssuedToken, now: datetime = NOW) -> IssuedToken:
    """``issued`` once its owner has been shown it, as the app records it: valid."""
    info = tokens.mark_delivered(db, org, issued.info.id, now, "test")
    assert info is not None
    return IssuedToken(info=info, secret=issued.secret)


@dataclass
class CliRun:
    """What ``tokenbot ARGS`` did: its exit status and what it wrote."""

    code: int
    stdout: str
    stderr: str


Tokenbot = Callable[..., CliRun]


@pytest.fixture
def tokenbot(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Tokenbot:
    """``tokenbot ARGS`` run in this process, through the entry point the installed
    command calls, with only the SLACK_* and TOKENBOT_* settings given in ``env``.

    It never serves: a command that would start listening fails the test instead.
    """

    def never_serve(*args: object, **kwargs: object) -> None:
        raise AssertionError("tokenbot started serving")

    monkeypatch.setattr("bot.server.serve_listeners", never_serve)
    monkeypatch.setattr("bot.cli.serve_socket_mode", never_serve)

    def run(*args: str, env: dict[str, str] | None = None) -> CliRun:
        for name in list(os.environ):
            if name.startswith(("SLACK_", "TOKENBOT_")):
                monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        # The command sets up logging for a process of its own; the test process's is
        # put back after it.
        loggers = [logging.getLogger(), *map(logging.getLogger, ("slack_sdk", "slack_bolt"))]
        saved = [(logger.handlers[:], logger.level) for logger in loggers]
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as exit_:  # argparse refusing the arguments
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        finally:
            for logger, (handlers, level) in zip(loggers, saved, strict=True):
                logger.handlers[:] = handlers
                logger.setLevel(level)
        out, err = capsys.readouterr()
        return CliRun(code, out, err)

    return run
