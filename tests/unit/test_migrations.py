"""The migrations build exactly the schema the models describe, and every test starts
from what they build."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from storage import tokens
from storage.db import Database, invalidates
from storage.migrate import upgrade
from tests.conftest import NOW


def test_migrations_match_the_models(db: Database) -> None:
    upgrade(db)  # a second upgrade is a no-op
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_a_test_starts_from_the_migrated_database_whatever_the_last_one_left(
    db: Database, request: pytest.FixtureRequest
) -> None:
    """The test database is migrated once per session; each test gets it as the
    migrations left it (a copy of the file, or the same rows and sequences)."""

    def state() -> tuple[list[tuple[int, int]], int, int]:
        with db.read() as session:
            epoch = [
                tuple(r) for r in session.execute(sa.text("SELECT id, value FROM validityepoch"))
            ]
            orgs = session.execute(sa.text("SELECT count(*) FROM organization")).scalar_one()
            version = session.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one()
        return epoch, orgs, version

    assert state() == ([(1, 0)], 0, 1)
    issued = tokens.issue_user_token(db, "T0ORG", "U0ALICE", "ci", NOW)
    with db.write() as session:
        invalidates(session)
    assert state()[0] == [(1, 1)] and state()[1] == 1
    if db.dialect == "postgresql":
        # What the next test will find: the rows gone, the ids counted from the start.
        request.getfixturevalue("_migrated_postgres").reset()
        assert state() == ([(1, 0)], 0, 1)
        assert tokens.issue_user_token(db, "T0ORG", "U0ALICE", "ci", NOW).info.id == issued.info.id
