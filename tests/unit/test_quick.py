"""Quick storage functions (storage.db.run): the calls on the path of an acknowledgement
run on the event loop over a kept SQLite connection, or over psycopg's async connections.
They give the same answers as the same functions called synchronously, never make the
loop wait for a busy database, and survive a kept connection the server has closed."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa

from storage import audit, tokens
from storage.db import Database, run
from storage.errors import CapReached, NameTaken
from tests.conftest import NOW, shown

ORG, ALICE = "T0ORG", "U0ALICE"


async def test_quick_functions_on_the_loop_answer_as_they_do_called_directly(
    db: Database,
) -> None:
    shown(db, ORG, tokens.issue_user_token(db, ORG, ALICE, "first", NOW))  # the org exists
    issued = await run(tokens.issue_user_token, db, ORG, ALICE, "ci", NOW)
    assert await run(tokens.mark_delivered, db, ORG, issued.info.id, NOW, "test") is not None
    listed = await run(tokens.list_user_tokens, db, ORG, ALICE, NOW)
    assert [t.name for t in listed.tokens] == ["first", "ci"]
    assert listed.tokens == tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens
    assert (await run(tokens.find_user_token, db, ORG, ALICE, "CI", NOW)).id == issued.info.id
    with pytest.raises(NameTaken):
        await run(tokens.issue_user_token, db, ORG, ALICE, "ci", NOW)
    # The events the database chained itself verify like those chained here.
    actions = [e.action for e in audit.events(db, ORG)]
    assert actions == ["token.issued", "token.delivered"] * 2
    assert audit.verify_chain(db, ORG)


async def test_24_quick_issues_at_once_on_the_loop_leave_exactly_10(db: Database) -> None:
    shown(db, ORG, tokens.issue_user_token(db, ORG, "U0OTHER", "x", NOW))  # the org exists
    issue = [run(tokens.issue_user_token, db, ORG, ALICE, f"t{n}", NOW) for n in range(24)]
    results = await asyncio.gather(*issue, return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 10
    assert all(isinstance(r, CapReached) for r in results if isinstance(r, BaseException))
    assert audit.verify_chain(db, ORG)


async def test_a_quick_write_waits_for_a_busy_database_in_a_thread_not_on_the_loop(
    db: Database, database_url: str
) -> None:
    if db.dialect != "sqlite":
        pytest.skip("PostgreSQL writers wait on the organization's row lock, not the loop")
    shown(db, ORG, tokens.issue_user_token(db, ORG, ALICE, "first", NOW))
    # Another process writing: a connection of its own holds SQLite's write lock.
    other = Database(database_url)
    holder = other.engine.raw_connection()
    holder.driver_connection.execute("BEGIN IMMEDIATE")
    try:
        issuing = asyncio.create_task(run(tokens.issue_user_token, db, ORG, ALICE, "ci", NOW))
        ticks = 0
        while not issuing.done() and ticks < 20:  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not issuing.done(), "the write did not wait for the lock"
        holder.driver_connection.execute("COMMIT")
        issued = await asyncio.wait_for(issuing, timeout=10)
    finally:
        holder.close()
        other.dispose()
    assert issued.info.name == "ci"
    assert audit.verify_chain(db, ORG)


async def test_a_quick_write_leaves_the_loop_while_this_process_writes_in_a_thread(
    db: Database,
) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite's single writer only")
    shown(db, ORG, tokens.issue_user_token(db, ORG, ALICE, "first", NOW))
    release = threading.Event()
    held = threading.Event()

    def hold_the_write_lock() -> None:
        with db.write():
            held.set()
            release.wait(10)

    holder = asyncio.create_task(asyncio.to_thread(hold_the_write_lock))
    assert await asyncio.to_thread(held.wait, 10)
    issuing = asyncio.create_task(run(tokens.issue_user_token, db, ORG, ALICE, "ci", NOW))
    await asyncio.sleep(0.05)
    assert not issuing.done()  # it waits, in a thread: this coroutine still runs
    release.set()
    await asyncio.wait_for(holder, timeout=10)
    assert (await asyncio.wait_for(issuing, timeout=10)).info.name == "ci"


async def test_a_kept_connection_the_server_closed_is_replaced_without_an_error(
    db: Database,
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("the loop's connections are PostgreSQL's")
    shown(db, ORG, tokens.issue_user_token(db, ORG, ALICE, "ci", NOW))
    assert len((await run(tokens.list_user_tokens, db, ORG, ALICE, NOW)).tokens) == 1
    # The loop's kept connection ends, as in a restart of the server or an idle timeout.
    assert db._async is not None
    [kept] = [conn.info.backend_pid for conn in db._async._idle]
    with db.engine.connect() as conn:
        ended = conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": kept})
        assert ended.scalar_one() is True
        gone = sa.text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :pid")
        for _ in range(100):  # ended once the server no longer lists it
            # Within a transaction the server shows the sessions as it first listed them.
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            if conn.execute(gone, {"pid": kept}).scalar_one():
                break
            # pg_stat_activity is read once per transaction: a new one looks again.
            conn.rollback()
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"backend {kept} still running 2 s after it was told to end")
    assert len((await run(tokens.list_user_tokens, db, ORG, ALICE, NOW)).tokens) == 1
