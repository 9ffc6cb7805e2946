"""Each test gets an empty database: SQLite in a temporary file by default, PostgreSQL
when TOKENBOT_TEST_DATABASE_URL names one (the same tests run against both)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from storage import tokens
from storage.db import Database
from storage.migrate import upgrade
from storage.tokens import IssuedToken

TEST_DATABASE_URL = os.environ.get("TOKENBOT_TEST_DATABASE_URL", "")
FIXTURES = Path(__file__).parent / "fixtures" / "slack"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _postgres_url() -> str:
    url = sa.make_url(TEST_DATABASE_URL)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _postgres_schema() -> Iterator[str | None]:
    if not TEST_DATABASE_URL:
        yield None
        return
    url = _postgres_url()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url


@pytest.fixture
def database_url(_postgres_schema: str | None, tmp_path: Path) -> str:
    if _postgres_schema is None:
        url = f"sqlite:///{tmp_path / 'tokenbot.db'}"
        db = Database(url)
        upgrade(db)
        db.dispose()
        return url
    engine = sa.create_engine(_postgres_schema)
    tables = ", ".join(t.name for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return _postgres_schema


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
