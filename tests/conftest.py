"""Each test gets a freshly migrated database: SQLite in a temporary file by default,
PostgreSQL when TOKENBOT_TEST_DATABASE_URL names one (the same tests run against both).

The migrations run once per test session. On SQLite each test then gets a copy of the
migrated file; on PostgreSQL each test finds the database as the migrations left it,
rows and sequences alike (deleting the few rows a test leaves is much faster than
TRUNCATE, or than a copy of the database made from a template).

PostgreSQL: only the database TOKENBOT_TEST_DATABASE_URL names is used. Its schema
``public`` is dropped and rebuilt; under pytest-xdist each worker uses a schema of its own
instead (``gw0``, ``gw1``...), and tests that share a server for a whole module one more
(``module``, ``gw0_module``...), each created and dropped here. Schemas rather than
databases: dropping a database makes PostgreSQL write out everything it holds first.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
        """Back to what the migrations left: no other rows, sequences where they were.

        A write the last test left running (a refresh cancelled at shutdown still ends
        the transaction its thread began) is waited for, as TRUNCATE would; should
        PostgreSQL end a deadlock with it by ending the reset, the reset starts again.
        """
        for attempt in range(3):
            try:
                self._reset()
                return
            except sa.exc.OperationalError as error:
                deadlock = getattr(error.orig, "sqlstate", None) == "40P01"
                if not deadlock or attempt == 2:
                    raise

    def _reset(self) -> None:
        tables = SQLModel.metadata.sorted_tables
        with self.engine.begin() as conn:
            # Parents first, in the order the app's transactions take their locks.
            names = ", ".join(f'"{table.name}"' for table in tables)
            conn.execute(sa.text(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE"))
            for table in reversed(tables):
                conn.execute(table.delete())
            for table, rows in self.rows.items():
                conn.execute(table.insert(), rows)
            for name, (value, called) in self.sequences.items():
                conn.execute(
                    sa.text("SELECT setval(:name, :value, :called)"),
                    {"name": name, "value": value, "called": called},
                )


def _in_schema(url: sa.URL, schema: str) -> str:
    """``url``, its connections working in ``schema`` (their search_path)."""
    if schema != "public":
        assert "options" not in url.query, "TOKENBOT_TEST_DATABASE_URL sets options already"
        url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def _migrated_schema(schema: str) -> Iterator[str]:
    """The URL of ``schema`` in the test database, new and migrated; dropped after
    unless it is ``public``, which is left as the last test left it."""
    url = _in_schema(_psycopg(sa.make_url(TEST_DATABASE_URL)), schema)
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        db = Database(url)
        upgrade(db)
        db.dispose()
        yield url
    finally:
        if schema != "public":
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def _migrated_postgres() -> Iterator[_MigratedPostgres | None]:
    if not TEST_DATABASE_URL:
        yield None
        return
    with _migrated_schema(WORKER or "public") as url:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                rows = {
                    table: [dict(row._mapping) for row in conn.execute(table.select())]
                    for table in SQLModel.metadata.sorted_tables
                }
                names = conn.execute(
                    sa.text(
                        "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"
                    )
                ).scalars()
                sequences = {
                    name: tuple(
                        conn.execute(sa.text(f'SELECT last_value, is_called FROM "{name}"')).one()
                    )
                    for name in list(names)
                }
            yield _MigratedPostgres(
                url=url,
                engine=engine,
                rows={table: found for table, found in rows.items() if found},
                sequences=sequences,  # type: ignore[arg-type]
            )
        finally:
            engine.dispose()


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


@pytest.fixture(scope="module")
def module_database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database of its own for a module's tests to share, such as a server
    they all talk to; no other test uses it."""
    if not TEST_DATABASE_URL:
        path = request.getfixturevalue("tmp_path_factory").mktemp("module") / "tokenbot.db"
        shutil.copyfile(request.getfixturevalue("_migrated_sqlite"), path)
        yield f"sqlite:///{path}"
        return
    with _migrated_schema(f"{WORKER}_module" if WORKER else "module") as url:
        yield url


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
