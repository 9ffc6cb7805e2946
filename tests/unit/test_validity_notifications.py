"""On PostgreSQL, a change that may end a token's validity reaches every process's
validation cache through LISTEN/NOTIFY, as soon as it commits; the one-second poll stays
for when the listening connection is down, and is all there is on SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import sqlalchemy as sa

from storage.db import VALIDITY_CHANNEL, Database, InvalidationListener, invalidates
from tests.conftest import TEST_DATABASE_URL

postgres_only = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="LISTEN/NOTIFY is PostgreSQL's; SQLite is polled"
)


class Boom(Exception):
    pass


def invalidate(db: Database) -> None:
    with db.write() as session:
        invalidates(session)


def current_epoch(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT value FROM validityepoch")).scalar_one())


async def until(done: Callable[[], bool], timeout: float = 2.0) -> float:
    """Seconds until ``done()`` holds; fails the test after ``timeout``."""
    began = time.monotonic()
    while not done():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not done after {timeout} s")
        await asyncio.sleep(0.002)
    return time.monotonic() - began


@pytest.fixture
async def heard(database_url: str) -> AsyncIterator[tuple[Database, InvalidationListener]]:
    """A second process's view of the database, listening."""
    replica = Database(database_url)
    listener = InvalidationListener(replica, first_delay=0.3)
    await listener.start()
    try:
        yield replica, listener
    finally:
        await listener.stop()
        replica.dispose()


@postgres_only
async def test_a_change_committed_elsewhere_moves_the_generation_within_100_ms(
    db: Database, heard: tuple[Database, InvalidationListener]
) -> None:
    replica, listener = heard
    assert listener.listening.is_set()
    for _ in range(5):
        before = replica.generation
        await asyncio.to_thread(invalidate, db)
        took = await until(lambda b=before: replica.generation > b)  # without any poll
        assert took < 0.1


@postgres_only
async def test_a_rolled_back_change_notifies_nobody(
    db: Database, heard: tuple[Database, InvalidationListener]
) -> None:
    replica, _ = heard
    before = replica.generation

    def rolled_back() -> None:
        with pytest.raises(Boom), db.write() as session:
            invalidates(session)
            raise Boom

    await asyncio.to_thread(rolled_back)
    await asyncio.to_thread(invalidate, db)
    epoch = current_epoch(db)
    await until(lambda: replica._epoch_seen == epoch)
    assert replica.generation == before + 1  # the committed change only


@postgres_only
async def test_another_schemas_notifications_are_ignored(
    db: Database, heard: tuple[Database, InvalidationListener]
) -> None:
    replica, _ = heard
    before = replica.generation
    with db.engine.begin() as conn:
        conn.execute(sa.select(sa.func.pg_notify(VALIDITY_CHANNEL, "another_schema 999999")))
    await asyncio.to_thread(invalidate, db)  # heard after the other one
    epoch = current_epoch(db)
    await until(lambda: replica._epoch_seen == epoch)
    assert replica.generation == before + 1


@postgres_only
async def test_a_dropped_listening_connection_is_made_again_and_catches_up(
    db: Database, heard: tuple[Database, InvalidationListener]
) -> None:
    replica, listener = heard
    cut = listener.backend_pid
    assert cut is not None
    with db.engine.begin() as conn:
        conn.execute(sa.select(sa.func.pg_terminate_backend(cut)))
    await until(lambda: not listener.listening.is_set())
    before = replica.generation
    await asyncio.to_thread(invalidate, db)  # while nobody listens
    await until(listener.listening.is_set, timeout=5)
    assert listener.backend_pid not in (None, cut)
    assert replica.generation > before  # read on reconnecting
    before = replica.generation
    await asyncio.to_thread(invalidate, db)
    await until(lambda: replica.generation > before)


async def test_on_sqlite_nothing_listens_and_the_poll_serves(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("the SQLite case")
    replica = Database(str(db.url))
    listener = InvalidationListener(replica)
    try:
        await listener.start()
        assert not listener.listening.is_set()
        replica.refresh_generation()
        before = replica.generation
        invalidate(db)
        assert replica.generation == before
        replica.refresh_generation()
        assert replica.generation == before + 1
    finally:
        await listener.stop()
        replica.dispose()
