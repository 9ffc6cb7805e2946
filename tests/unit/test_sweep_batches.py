"""The sweep handles its due tokens by batches: one statement per step of a batch, the
audit chain as if each event were recorded alone, each notice once, and rows another
transaction holds left to it (R12, R13, R27)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from storage import audit, outbox, sweep, tokens
from storage.db import Database
from storage.models import OutboxMessage, Token
from storage.orgs import lock_org
from tests.conftest import NOW, shown

ORG = "T0ORG"
DAY = timedelta(days=1)
TOKEN = Token.__table__
OUTBOX = OutboxMessage.__table__


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "BATCH", 3)


def issue(db: Database, user: str, name: str, at: datetime, *, delivered: bool = True) -> int:
    issued = tokens.issue_user_token(db, ORG, user, name, at)
    if delivered:
        shown(db, ORG, issued, at)
    return issued.info.id


def sweep_events(db: Database, before: int) -> list[tuple[str, str]]:
    return [(e.action, e.subject) for e in audit.events(db, ORG)[before:]]


def notices_of(db: Database) -> list[tuple[int, str, int, str]]:
    with db.read() as session:
        query = sa.select(OUTBOX.c.token_id, OUTBOX.c.kind, OUTBOX.c.payload, OUTBOX.c.recipient)
        return sorted(
            (token, kind, payload["stage"], recipient)
            for token, kind, payload, recipient in session.execute(query)
        )


def test_record_all_appends_what_record_would_one_at_a_time(db: Database) -> None:
    events = [
        audit.NewEvent("U0ALICE", "token.revoked", "token:1", {"name": "ci", "reason": "x"}),
        audit.NewEvent(audit.SYSTEM, "token.expired", "token:2", {"name": "é", "hint": "…"}),
        audit.NewEvent(audit.SYSTEM, "token.reminder", "token:3"),
    ]
    with db.write() as session:
        one_by_one = lock_org(session, "T0ONE", NOW)
        singly = [
            audit.record(
                session,
                one_by_one,
                actor=e.actor,
                action=e.action,
                subject=e.subject,
                now=NOW,
                detail=e.detail,
            )
            for e in events
        ]
        together = lock_org(session, "T0ALL", NOW)
        assert audit.record_all(session, together, events, NOW) == singly
        assert together.audit_head == singly[-1]
        assert audit.record_all(session, together, [], NOW) == []
    with db.read() as session:
        assert lock_org(session, "T0ALL", NOW).audit_head == singly[-1]  # stored, too
    assert audit.verify_chain(db, "T0ALL")
    assert [e.digest for e in audit.events(db, "T0ALL")] == singly


def test_a_sweep_over_several_batches_keeps_the_chain_in_due_order(db: Database) -> None:
    # Eight tokens whose cutoffs fall a minute apart, of three members; one never shown,
    # whose delivery deadline comes first of all.
    ids = [
        issue(db, f"U0USER{n % 3}", f"t{n}", NOW + n * timedelta(minutes=1), delivered=n != 4)
        for n in range(8)
    ]
    late = NOW + 30 * DAY + timedelta(minutes=4, seconds=30)
    expired, undelivered, reminded = ids[:4], ids[4], ids[5:]  # the last at their 1-day stage
    before = len(audit.events(db, ORG))
    report = sweep.sweep(db, late)
    assert [t.id for _, t in report.expired] == expired
    assert [t.id for _, t in report.undelivered] == [undelivered]
    assert [(t.id, stage) for _, t, stage in report.reminded] == [(i, 1) for i in reminded]
    assert sweep_events(db, before) == (  # across four batches of at most three
        [("token.revoked", f"token:{undelivered}")]
        + [("token.expired", f"token:{i}") for i in expired]
        + [("token.reminder", f"token:{i}") for i in reminded]
    )
    assert audit.verify_chain(db, ORG)
    [revoked] = [e for e in audit.events(db, ORG) if e.action == "token.revoked"]
    assert (revoked.detail["name"], revoked.detail["reason"]) == ("t4", "not delivered")
    queued = notices_of(db)
    assert [(t, kind, stage) for t, kind, stage, _ in queued] == [
        (i, "expired", 0) for i in expired
    ] + [(i, "reminder", 1) for i in reminded]
    again = sweep.sweep(db, late)
    assert (again.expired, again.undelivered, again.reminded) == ([], [], [])
    assert notices_of(db) == queued


def test_a_batch_queues_only_the_notices_not_queued_yet(db: Database) -> None:
    first, second = issue(db, "U0ALICE", "a", NOW), issue(db, "U0BOB", "b", NOW)
    day23 = NOW + 23 * DAY
    assert len(sweep.sweep(db, day23).reminded) == 2
    # A third token due at the same time, and the first one's reminder due again (as a
    # sweeper would see it that had read the row before the first sweep moved it on):
    # the batch holds both; the unique key lets only the new notice in.
    third = issue(db, "U0CAROL", "c", NOW)
    with db.write() as session:
        session.execute(
            sa.update(TOKEN).where(TOKEN.c.id == first).values(next_notice_at=NOW + 23 * DAY)
        )
    report = sweep.sweep(db, day23)
    assert [t.id for _, t, _ in report.reminded] == [third]
    assert notices_of(db) == [
        (first, "reminder", 7, "U0ALICE"),
        (second, "reminder", 7, "U0BOB"),
        (third, "reminder", 7, "U0CAROL"),
    ]
    reminded = [e.subject for e in audit.events(db, ORG) if e.action == "token.reminder"]
    assert sorted(reminded) == sorted(f"token:{i}" for i in (first, second, third))
    assert audit.verify_chain(db, ORG)
    assert outbox.pending_count(db) == 3


def test_a_token_another_transaction_holds_is_left_to_it(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite has one writer at a time: no row is held while another sweeps")
    ids = [issue(db, "U0ALICE", f"t{n}", NOW + n * timedelta(minutes=1)) for n in range(5)]
    after = NOW + 31 * DAY
    held = ids[:3]  # a whole first batch
    reports: list[sweep.SweepReport] = []
    with db.engine.connect() as other, other.begin():
        other.execute(sa.select(TOKEN.c.id).where(TOKEN.c.id.in_(held)).with_for_update())
        sweeper = threading.Thread(target=lambda: reports.append(sweep.sweep(db, after)))
        sweeper.start()
        sweeper.join(timeout=30)
        assert not sweeper.is_alive(), "the sweep waited for rows another transaction holds"
    [report] = reports
    assert [t.id for _, t in report.expired] == ids[3:]
    later = sweep.sweep(db, after)
    assert [t.id for _, t in later.expired] == held
    assert [t for t, kind, _, _ in notices_of(db) if kind == "expired"] == sorted(ids)
    assert audit.verify_chain(db, ORG)


def test_sweepers_running_at_once_handle_each_token_once(db: Database, database_url: str) -> None:
    users = [f"U0USER{n}" for n in range(4)]
    ids = [
        issue(db, user, name, NOW + n * timedelta(minutes=1))
        for n, (user, name) in enumerate((u, x) for u in users for x in "abc")
    ]
    after = NOW + 31 * DAY
    replicas = [Database(database_url) for _ in range(3)]
    reports: list[sweep.SweepReport] = []
    start = threading.Barrier(len(replicas))

    def run(replica: Database) -> None:
        start.wait()
        reports.append(sweep.sweep(replica, after))

    threads = [threading.Thread(target=run, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for replica in replicas:
        replica.dispose()
    expired = [t.id for report in reports for _, t in report.expired]
    assert sorted(expired) == sorted(ids)  # each by exactly one of them
    assert [t for t, _, _, _ in notices_of(db)] == sorted(ids)
    assert [a for a, _ in sweep_events(db, 0)].count("token.expired") == len(ids)
    assert audit.verify_chain(db, ORG)
