"""The migrations build exactly the schema the models describe, carry the data, and every
test starts from what they build."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from storage import outbox, settings, sweep, tokens
from storage.db import Database, invalidates
from storage.migrate import alembic_config, upgrade
from storage.models import GENESIS_DIGEST, NoticeKind, UTCDateTime
from storage.orgs import find_org, lock_org
from tests.conftest import NOW, TEST_DATABASE_URL, WORKER, _in_schema, _psycopg, shown
from tests.unit.test_settings import typed

ORG, ALICE, BOB, CAROL = "T0ORG", "U0ALICE", "U0BOB", "U0CAROL"


def test_migrations_match_the_models(db: Database) -> None:
    upgrade(db)  # a second upgrade is a no-op
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


@contextmanager
def _at_revision(revision: str, tmp_path: Path) -> Iterator[Database]:
    """An empty database of its own, at ``revision``: a SQLite file, or on PostgreSQL a
    schema of its own, so the shared one stays at the newest revision."""
    schema = f"{WORKER}_at_{revision}" if WORKER else f"at_{revision}"
    if not TEST_DATABASE_URL:
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = _in_schema(_psycopg(sa.make_url(TEST_DATABASE_URL)), schema)
        admin = sa.create_engine(url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    db = Database(url)
    command.upgrade(alembic_config(db), revision)
    yield db
    db.dispose()
    if TEST_DATABASE_URL:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def at_0006(tmp_path: Path) -> Iterator[Database]:
    with _at_revision("0006", tmp_path) as db:
        yield db


@pytest.fixture
def at_0007(tmp_path: Path) -> Iterator[Database]:
    with _at_revision("0007", tmp_path) as db:
        yield db


AT = UTCDateTime
NOTICE = sa.table(
    "notice",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id", "token_id", "stage", "attempts")),
    *(sa.column(c, sa.String()) for c in ("kind", "recipient", "status", "last_error")),
    *(sa.column(c, AT()) for c in ("cutoff_at", "next_attempt_at", "created_at", "sent_at")),
)
REPORT = sa.table(
    "ownerlessreport",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id", "attempts")),
    *(sa.column(c, sa.String()) for c in ("member", "status")),
    sa.column("service_users", sa.JSON()),
    *(sa.column(c, AT()) for c in ("next_attempt_at", "created_at", "sent_at")),
)
DIGEST = sa.table(
    "approvaldigest",
    sa.column("org_id", sa.Integer()),
    sa.column("recipient", sa.String()),
    sa.column("day", sa.Date()),
    sa.column("sent_at", AT()),
)
OLD_TABLES = {"notice", "ownerlessreport", "approvaldigest"}
# Organizations, members and tokens as revision 0006 left them (the columns without a
# server default): rows written as the code of that revision wrote them, since today's
# code writes columns added since.
ORGANIZATION_AT_0006 = sa.table(
    "organization",
    *(sa.column(c, sa.Integer()) for c in ("id", "user_token_cap", "service_token_cap")),
    sa.column("inactivity_days", sa.Integer()),
    *(sa.column(c, sa.String()) for c in ("slack_id", "audit_head")),
    sa.column("created_at", AT()),
)
MEMBER_AT_0006 = sa.table(
    "member",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id")),
    sa.column("slack_user_id", sa.String()),
    sa.column("created_at", AT()),
)
TOKEN_AT_0006 = sa.table(
    "token",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id", "member_id", "created_by_id")),
    *(sa.column(c, sa.String()) for c in ("kind", "name", "name_key", "hint", "digest", "state")),
    *(sa.column(c, AT()) for c in ("created_at", "delivered_at", "cutoff_at", "next_notice_at")),
)


@dataclass(frozen=True)
class Issued:
    id: int
    cutoff_at: datetime


def _alices_tokens_at_0006(db: Database) -> tuple[int, Issued, Issued]:
    """The organization's id, and Alice's tokens at revision 0006: "ci", issued and shown
    now, and "old", a month ago and never used since."""
    period = timedelta(days=30)
    issued = []
    with db.write() as session:

        def insert(table: Any, values: dict[str, Any]) -> int:
            return int(session.execute(sa.insert(table).returning(table.c.id), values).scalar_one())

        org = {"slack_id": ORG, "user_token_cap": 10, "service_token_cap": 20}
        org.update(inactivity_days=30, audit_head=GENESIS_DIGEST, created_at=NOW)
        org_id = insert(ORGANIZATION_AT_0006, org)
        member = {"org_id": org_id, "slack_user_id": ALICE, "created_at": NOW}
        member_id = insert(MEMBER_AT_0006, member)
        for n, (name, at) in enumerate([("ci", NOW), ("old", NOW - timedelta(days=31))], 1):
            token = {
                "org_id": org_id,
                "member_id": member_id,
                "created_by_id": member_id,
                "kind": "user",
                "name": name,
                "name_key": name,
                "hint": f"tbu_…{n:04d}",
                "digest": f"{n:064x}",
                "state": "active",
                "created_at": at,
                "delivered_at": at,
                "cutoff_at": at + period,
                "next_notice_at": at + period - timedelta(days=7),
            }
            issued.append(Issued(insert(TOKEN_AT_0006, token), at + period))
    return org_id, issued[0], issued[1]


def _rows(db: Database, table: Any) -> list[Any]:
    with db.read() as session:
        return list(session.execute(sa.select(table)).all())


def test_the_outbox_takes_over_the_notices_reports_and_digests_owed_at_0006(
    at_0006: Database,
) -> None:
    db = at_0006
    org_id, ci, old = _alices_tokens_at_0006(db)
    reminded = NOW + timedelta(days=23)
    with db.write() as session:
        common = {"org_id": org_id, "recipient": ALICE, "last_error": None}
        session.execute(
            sa.insert(NOTICE),
            [
                {  # the 7-day reminder of "ci", sent
                    **common,
                    "token_id": ci.id,
                    "kind": "reminder",
                    "stage": 7,
                    "cutoff_at": ci.cutoff_at,
                    "status": "sent",
                    "attempts": 1,
                    "next_attempt_at": reminded,
                    "created_at": reminded,
                    "sent_at": reminded,
                },
                {  # the expiry of "old", not yet delivered
                    **common,
                    "token_id": old.id,
                    "kind": "expired",
                    "stage": 0,
                    "cutoff_at": old.cutoff_at,
                    "status": "pending",
                    "attempts": 2,
                    "next_attempt_at": NOW,
                    "created_at": NOW,
                    "sent_at": None,
                    "last_error": "ratelimited",
                },
            ],
        )
        session.execute(
            sa.insert(REPORT),
            {
                "org_id": org_id,
                "member": "U0GONE",
                "service_users": ["ci-deployer"],
                "status": "pending",
                "attempts": 1,
                "next_attempt_at": NOW,
                "created_at": NOW,
                "sent_at": None,
            },
        )
        session.execute(
            sa.insert(DIGEST),
            {"org_id": org_id, "recipient": BOB, "day": NOW.date(), "sent_at": NOW},
        )

    upgrade(db)

    assert not OLD_TABLES & set(sa.inspect(db.engine).get_table_names())
    # The expiry is still owed, where it was, with the attempts it has had.
    [expiry] = outbox.claim_due(db, NOW, [NoticeKind.EXPIRED])
    assert (expiry.recipient, expiry.token.name, expiry.attempts) == (ALICE, "old", 3)
    # The report is owed to the admins.
    [report] = outbox.claim_due(db, NOW, [NoticeKind.OWNERLESS], ORG)
    assert report.recipient is None
    assert report.payload == {"member": "U0GONE", "service_users": ["ci-deployer"]}
    # What was sent is not sent again: the reminder stage and the day's digest hold.
    assert sweep.sweep(db, reminded).reminded == []
    assert outbox.queue_digests(db, ORG, [BOB], NOW) == 0
    assert outbox.queue_digests(db, ORG, [CAROL], NOW) == 1
    assert outbox.pending_count(db) == 3  # the expiry, the report, carol's digest

    command.downgrade(alembic_config(db), "0006")

    assert "outbox" not in sa.inspect(db.engine).get_table_names()
    notices = sorted((n.kind, n.stage, n.status, n.attempts) for n in _rows(db, NOTICE))
    assert notices == [("expired", 0, "pending", 3), ("reminder", 7, "sent", 1)]
    [back] = _rows(db, REPORT)
    assert (back.member, back.service_users, back.status) == ("U0GONE", ["ci-deployer"], "pending")
    assert [(d.recipient, d.day) for d in _rows(db, DIGEST)] == [(BOB, NOW.date())]
    upgrade(db)  # and up again
    assert outbox.queue_digests(db, ORG, [BOB], NOW) == 0


def test_rotation_comes_with_0008_and_goes_with_its_grace_periods_ended(
    at_0007: Database,
) -> None:
    db = at_0007
    _, ci, _ = _alices_tokens_at_0006(db)  # the tables 0007 left are those of 0006

    upgrade(db)

    # Tokens issued before are not being rotated, and the grace period is the default.
    old = tokens.find_user_token(db, ORG, ALICE, "ci", NOW)
    assert (old.id, old.rotated_at) == (ci.id, None)
    with db.read() as session:
        org = find_org(session, ORG)
        assert org is not None and org.grace == timedelta(hours=24)
    rotation = tokens.rotate_token(db, ORG, ALICE, ci.id, NOW)
    new = shown(db, ORG, rotation.issued)  # "ci" twice: the old one in its grace period

    command.downgrade(alembic_config(db), "0007")

    with db.read() as session:
        rows = session.execute(
            sa.select(TOKEN_AT_0006.c.id, TOKEN_AT_0006.c.state)
            .where(TOKEN_AT_0006.c.name == "ci")
            .order_by(TOKEN_AT_0006.c.id)
        ).all()
    assert [tuple(r) for r in rows] == [(ci.id, "revoked"), (new.info.id, "active")]
    upgrade(db)  # and up again
    assert tokens.find_user_token(db, ORG, ALICE, "ci", NOW).id == new.info.id


def test_0009_adds_the_approval_routing_empty_and_takes_it_away_keeping_the_rest(
    at_0007: Database,
) -> None:
    db = at_0007
    command.upgrade(alembic_config(db), "0008")
    with db.write() as session:
        lock_org(session, ORG, NOW)
        session.execute(sa.text("UPDATE organization SET user_token_cap = 3"))

    upgrade(db)

    assert settings.approval_routing(db, ORG) == (None, None)  # the server's apply
    form = typed(settings.current_settings(db, ORG), approvals_channel="C0A")
    settings.save_settings(db, ORG, ALICE, form, known_groups=None, seen=None, now=NOW)
    assert settings.approval_routing(db, ORG) == (None, "C0A")

    command.downgrade(alembic_config(db), "0008")

    columns = {c["name"] for c in sa.inspect(db.engine).get_columns("organization")}
    assert not {"approver_group", "approvals_channel"} & columns
    with db.read() as session:
        caps = session.execute(sa.text("SELECT slack_id, user_token_cap FROM organization")).all()
    assert [tuple(row) for row in caps] == [(ORG, 3)]
    upgrade(db)  # and up again, empty
    assert settings.approval_routing(db, ORG) == (None, None)


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
