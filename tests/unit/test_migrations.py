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
from sqlmodel import Session, SQLModel

from storage import approvals, audit, outbox, services, settings, sweep, tokenformat, tokens, usage
from storage.db import Database, invalidates
from storage.migrate import alembic_config, current_revision, head, revisions, upgrade
from storage.models import GENESIS_DIGEST, NoticeKind, UTCDateTime
from storage.orgs import find_org, lock_org
from storage.tokenformat import TokenKind
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
# The tables as earlier revisions hold them, whatever the models say now: rows written as
# the code of a revision wrote them, since today's code writes columns added since. Each
# has the columns some revision fills without a server default; a row written at a
# revision whose table lacks one of them leaves it out (see _insert).
ORGANIZATION = sa.table(
    "organization",
    *(sa.column(c, sa.Integer()) for c in ("id", "user_token_cap", "service_token_cap")),
    sa.column("inactivity_days", sa.Integer()),
    *(sa.column(c, sa.String()) for c in ("slack_id", "audit_head")),
    sa.column("created_at", AT()),
)
MEMBER = sa.table(
    "member",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id")),
    *(sa.column(c, sa.String()) for c in ("slack_user_id", "display_name", "role")),
    sa.column("created_at", AT()),
)
TOKEN = sa.table(
    "token",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id", "member_id", "created_by_id")),
    sa.column("service_user_id", sa.Integer()),
    *(sa.column(c, sa.String()) for c in ("kind", "name", "name_key", "hint", "digest", "state")),
    sa.column("state_reason", sa.String()),
    *(sa.column(c, AT()) for c in ("created_at", "delivered_at", "cutoff_at", "next_notice_at")),
    sa.column("state_changed_at", AT()),
)
AUDIT_EVENT = sa.table(
    "auditevent",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id")),
    sa.column("at", AT()),
    *(sa.column(c, sa.String()) for c in ("actor", "action", "subject")),
    sa.column("detail", sa.JSON()),
    *(sa.column(c, sa.String()) for c in ("prev_digest", "digest")),
)
SERVICE_USER = sa.table(
    "serviceuser",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id")),
    *(sa.column(c, sa.String()) for c in ("name", "purpose")),
    sa.column("scopes", sa.JSON()),
    sa.column("created_at", AT()),
)
SERVICE_OWNER = sa.table(
    "serviceowner", *(sa.column(c, sa.Integer()) for c in ("service_user_id", "member_id"))
)
REQUEST = sa.table(
    "approvalrequest",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id", "requester_id", "service_user_id")),
    *(sa.column(c, sa.String()) for c in ("name", "purpose", "justification", "state")),
    sa.column("scopes", sa.JSON()),
    *(sa.column(c, AT()) for c in ("created_at", "expires_at")),
    *(sa.column(c, sa.String()) for c in ("response_url", "channel_id")),
)
APPROVAL_MESSAGE = sa.table(
    "approvalmessage",
    sa.column("request_id", sa.Integer()),
    *(sa.column(c, sa.String()) for c in ("channel", "ts")),
)
OUTBOX = sa.table(
    "outbox",
    *(sa.column(c, sa.Integer()) for c in ("id", "org_id", "token_id", "attempts")),
    *(sa.column(c, sa.String()) for c in ("kind", "dedupe_key", "recipient", "status")),
    sa.column("last_error", sa.String()),
    sa.column("payload", sa.JSON()),
    *(sa.column(c, AT()) for c in ("next_attempt_at", "created_at", "sent_at")),
)


@dataclass(frozen=True)
class Issued:
    id: int
    cutoff_at: datetime
    secret: str


def _insert(session: Session, table: sa.TableClause, values: dict[str, Any]) -> int | None:
    """Insert a row as the database's revision holds it: without the values of columns
    its table does not have yet (the migrations that add them fill them). The row's id,
    if its table has one."""
    held = {c["name"] for c in sa.inspect(session.connection()).get_columns(table.name)}
    statement = sa.insert(table).values({k: v for k, v in values.items() if k in held})
    if "id" not in table.c:
        session.execute(statement)
        return None
    return int(session.execute(statement.returning(table.c.id)).scalar_one())


def _alices_tokens(db: Database) -> tuple[int, Issued, Issued]:
    """The organization's id, and Alice's tokens, as any revision holds them: "ci",
    issued and shown now, and "old", a month ago and never used since."""
    period = timedelta(days=30)
    issued = []
    with db.write() as session:

        def insert(table: sa.TableClause, values: dict[str, Any]) -> int:
            row_id = _insert(session, table, values)
            assert row_id is not None
            return row_id

        org = {"slack_id": ORG, "user_token_cap": 10, "service_token_cap": 20}
        org.update(inactivity_days=30, audit_head=GENESIS_DIGEST, created_at=NOW)
        org_id = insert(ORGANIZATION, org)
        member = {"org_id": org_id, "slack_user_id": ALICE, "created_at": NOW}
        member_id = insert(MEMBER, member)
        for name, at in [("ci", NOW), ("old", NOW - timedelta(days=31))]:
            secret = tokenformat.mint(TokenKind.USER)
            token = {
                "org_id": org_id,
                "member_id": member_id,
                "created_by_id": member_id,
                "kind": "user",
                "name": name,
                "name_key": name,
                "hint": tokenformat.hint(secret),
                "digest": tokenformat.digest(secret),
                "state": "active",
                "created_at": at,
                "delivered_at": at,
                "cutoff_at": at + period,
                "next_notice_at": at + period - timedelta(days=7),
            }
            issued.append(Issued(insert(TOKEN, token), at + period, secret))
    return org_id, issued[0], issued[1]


def _rows(db: Database, table: Any) -> list[Any]:
    with db.read() as session:
        return list(session.execute(sa.select(table)).all())


def test_the_outbox_takes_over_the_notices_reports_and_digests_owed_at_0006(
    at_0006: Database,
) -> None:
    db = at_0006
    org_id, ci, old = _alices_tokens(db)
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
    _, ci, _ = _alices_tokens(db)  # the tables 0007 left are those of 0006

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
            sa.select(TOKEN.c.id, TOKEN.c.state).where(TOKEN.c.name == "ci").order_by(TOKEN.c.id)
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


# -- an upgrade from each earlier revision ----------------------------------------------

OTHER, GONE = "T0OTHER", "U0GONE"
APPROVALS, TS = "C0APPROVALS", "1764331200.000100"
# The tables whose rows every later revision keeps as they were written.
KEPT = (
    ORGANIZATION,
    MEMBER,
    TOKEN,
    AUDIT_EVENT,
    SERVICE_USER,
    SERVICE_OWNER,
    REQUEST,
    APPROVAL_MESSAGE,
    OUTBOX,
)


@dataclass(frozen=True)
class Held:
    """What a database at an earlier revision held before the upgrade."""

    ci: Issued  # Alice's, valid
    old: Issued  # Alice's, past its cutoff
    revoked: Issued  # Alice's, revoked by Bob
    service: Issued | None  # the service user's, from revision 0003 on
    request_id: int | None  # Bob's pending request, from 0003 on
    messages: bool  # a reminder sent and an expiry owed, from 0002 on
    reports: bool  # a report to the admins owed and a digest sent, from 0004 on
    events: dict[str, int]  # how many audit events each organization has


def _chain(session: Session, org_id: int, events: list[tuple[str, str, str]]) -> int:
    """Append ``events`` (actor, action, subject) to the organization's audit chain, as
    every revision's code has chained them; how many there are."""
    head = GENESIS_DIGEST
    for n, (actor, action, subject) in enumerate(events):
        at, detail = NOW + timedelta(seconds=n), {"name": subject}
        content = audit._content_of(at, actor, action, subject, detail)
        digest = audit._event_digest(head, content)
        event = {"actor": actor, "action": action, "subject": subject, "detail": detail}
        _insert(
            session,
            AUDIT_EVENT,
            {"org_id": org_id, "at": at, **event, "prev_digest": head, "digest": digest},
        )
        head = digest
    org = ORGANIZATION.c.id == org_id
    session.execute(sa.update(ORGANIZATION).where(org).values(audit_head=head))
    return len(events)


def _token(
    session: Session, kind: TokenKind, name: str, owner: dict[str, Any], **values: Any
) -> Issued:
    secret = tokenformat.mint(kind)
    row = {
        **owner,
        "kind": str(kind),
        "name": name,
        "name_key": name,
        "hint": tokenformat.hint(secret),
        "digest": tokenformat.digest(secret),
        "state": "active",
        "created_at": NOW,
        "delivered_at": NOW,
        "cutoff_at": NOW + timedelta(days=90),
        **values,
    }
    token_id = _insert(session, TOKEN, row)
    assert token_id is not None
    return Issued(token_id, row["cutoff_at"], secret)


def _holding_a_bit_of_everything(db: Database) -> Held:
    """Rows of every kind the database's revision holds, written as its code wrote them."""
    org_id, ci, old = _alices_tokens(db)
    tables = set(sa.inspect(db.engine).get_table_names())
    service, request_id = None, None
    with db.write() as session:
        alice = session.execute(
            sa.select(MEMBER.c.id).where(MEMBER.c.slack_user_id == ALICE)
        ).scalar_one()
        bob_row = {"org_id": org_id, "slack_user_id": BOB, "created_at": NOW}
        bob = _insert(session, MEMBER, {**bob_row, "display_name": "Bob", "role": "admin"})
        revoked = _token(
            session,
            TokenKind.USER,
            "gone",
            {"org_id": org_id, "member_id": alice, "created_by_id": alice},
            state="revoked",
            state_reason=f"revoked by {BOB}",
            state_changed_at=NOW,
        )
        if "serviceuser" in tables:
            deployer = _insert(
                session,
                SERVICE_USER,
                {"org_id": org_id, "name": "deployer", "purpose": "deploys"}
                | {"scopes": ["deploy"], "created_at": NOW},
            )
            _insert(session, SERVICE_OWNER, {"service_user_id": deployer, "member_id": bob})
            owner = {"org_id": org_id, "service_user_id": deployer, "created_by_id": bob}
            service = _token(session, TokenKind.SERVICE, "prod", owner)
            request_id = _insert(
                session,
                REQUEST,
                {"org_id": org_id, "requester_id": bob, "service_user_id": None}
                | {"name": "reports", "purpose": "nightly reports", "scopes": ["read"]}
                | {"justification": "the reports job", "state": "pending"}
                | {"created_at": NOW, "expires_at": NOW + timedelta(days=7)},
            )
            message = {"request_id": request_id, "channel": APPROVALS, "ts": TS}
            _insert(session, APPROVAL_MESSAGE, message)
        reminded = ci.cutoff_at - timedelta(days=7)
        sent = {"status": "sent", "attempts": 1, "last_error": None}
        sent |= {"next_attempt_at": reminded, "created_at": reminded, "sent_at": reminded}
        owed = {"status": "pending", "attempts": 2, "last_error": "ratelimited"}
        owed |= {"next_attempt_at": NOW, "created_at": NOW, "sent_at": None}
        to_alice = {"org_id": org_id, "recipient": ALICE}
        if "notice" in tables:
            reminder = {"token_id": ci.id, "kind": "reminder", "stage": 7}
            expiry = {"token_id": old.id, "kind": "expired", "stage": 0}
            _insert(session, NOTICE, {**to_alice, **reminder, "cutoff_at": ci.cutoff_at, **sent})
            _insert(session, NOTICE, {**to_alice, **expiry, "cutoff_at": old.cutoff_at, **owed})
        if "ownerlessreport" in tables:
            report = {"org_id": org_id, "member": GONE, "service_users": ["deployer"]}
            _insert(session, REPORT, {**report, **owed})
            digest = {"org_id": org_id, "recipient": BOB, "day": NOW.date(), "sent_at": NOW}
            _insert(session, DIGEST, digest)
        if "outbox" in tables:
            rows = [
                {
                    **to_alice,
                    "kind": "reminder",
                    "token_id": ci.id,
                    "dedupe_key": outbox.token_notice_key(
                        NoticeKind.REMINDER, ci.id, 7, ci.cutoff_at, ALICE
                    ),
                    "payload": {"stage": 7, "cutoff_at": ci.cutoff_at.isoformat()},
                    **sent,
                },
                {
                    **to_alice,
                    "kind": "expired",
                    "token_id": old.id,
                    "dedupe_key": outbox.token_notice_key(
                        NoticeKind.EXPIRED, old.id, 0, old.cutoff_at, ALICE
                    ),
                    "payload": {"stage": 0, "cutoff_at": old.cutoff_at.isoformat()},
                    **owed,
                },
                {
                    "org_id": org_id,
                    "kind": "ownerless",
                    "payload": {"member": GONE, "service_users": ["deployer"]},
                    **owed,
                },
                {
                    "org_id": org_id,
                    "kind": "digest",
                    "recipient": BOB,
                    "dedupe_key": outbox.digest_key(org_id, BOB, NOW.date().isoformat()),
                    "payload": {"day": NOW.date().isoformat()},
                    **sent,
                },
            ]
            for row in rows:
                _insert(session, OUTBOX, row)
        other = {"slack_id": OTHER, "user_token_cap": 5, "service_token_cap": 5}
        other |= {"inactivity_days": 60, "audit_head": GENESIS_DIGEST, "created_at": NOW}
        other_id = _insert(session, ORGANIZATION, other)
        assert other_id is not None
        events = {
            ORG: _chain(
                session,
                org_id,
                [
                    (ALICE, "token.issued", "ci"),
                    (ALICE, "token.issued", "old"),
                    (ALICE, "token.issued", "gone"),
                    (BOB, "token.revoked", "gone"),
                ],
            ),
            OTHER: _chain(session, other_id, [("system", "organization.joined", OTHER)]),
        }
    return Held(
        ci=ci,
        old=old,
        revoked=revoked,
        service=service,
        request_id=request_id,
        messages="notice" in tables or "outbox" in tables,
        reports="ownerlessreport" in tables or "outbox" in tables,
        events=events,
    )


def _held_columns(db: Database) -> dict[str, list[str]]:
    """The columns of the kept tables the database has, by table."""
    inspector = sa.inspect(db.engine)
    names = set(inspector.get_table_names())
    held = {}
    for table in KEPT:
        if table.name in names:
            has = {c["name"] for c in inspector.get_columns(table.name)}
            held[table.name] = [c.name for c in table.c if c.name in has]
    return held


def _written(db: Database, held: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    """The values of the ``held`` columns, row by row, by table."""
    written = {}
    with db.read() as session:
        for table in KEPT:
            if table.name in held:
                columns = [table.c[name] for name in held[table.name]]
                order = [c for c in columns if not isinstance(c.type, sa.JSON)]
                rows = session.execute(sa.select(*columns).order_by(*order))
                written[table.name] = [tuple(row) for row in rows]
    return written


@pytest.mark.parametrize("revision", revisions()[:-1])
def test_an_upgrade_from_each_earlier_revision_keeps_everything_the_database_held(
    revision: str, tmp_path: Path
) -> None:
    with _at_revision(revision, tmp_path) as db:
        held = _holding_a_bit_of_everything(db)
        columns = _held_columns(db)
        before = _written(db, columns)

        upgrade(db)

        assert current_revision(db) == head()
        # Every value written is there as it was: organizations, members, tokens
        # (digests, states, cutoffs), audit events, service users and their owners,
        # requests and their messages, the outbox.
        assert _written(db, columns) == before
        assert before["token"] and before["auditevent"]
        # Tokens are valid, or not, as they were.
        valid = usage.validate(db, held.ci.secret, NOW)
        assert valid is not None
        assert (valid.name, valid.owner, valid.cutoff_at) == ("ci", ALICE, held.ci.cutoff_at)
        assert usage.validate(db, held.old.secret, NOW) is None  # past its cutoff
        assert usage.validate(db, held.revoked.secret, NOW) is None
        for org, count in held.events.items():
            assert audit.verify_chain(db, org)
            assert len(audit.events(db, org)) == count
        if held.service is not None:
            valid = usage.validate(db, held.service.secret, NOW)
            assert valid is not None and valid.service_user == "deployer"
            [deployer] = services.list_service_users(db, ORG, BOB, admin=False, now=NOW)
            assert (deployer.owners, [t.id for t in deployer.tokens]) == ([BOB], [held.service.id])
            [request] = approvals.pending_requests(db, ORG)
            assert (request.id, request.requester, request.name) == (
                held.request_id,
                BOB,
                "reports",
            )
            assert approvals.messages(db, request.id) == [(APPROVALS, TS)]
        if held.messages:
            messages = sorted(
                (m.kind, m.status, m.attempts, m.recipient or "") for m in _rows(db, OUTBOX)
            )
            expected = [("expired", "pending", 2, ALICE), ("reminder", "sent", 1, ALICE)]
            if held.reports:
                expected += [("digest", "sent", 1, BOB), ("ownerless", "pending", 2, "")]
            assert messages == sorted(expected)
            [expiry] = outbox.claim_due(db, NOW, [NoticeKind.EXPIRED])
            assert (expiry.recipient, expiry.token.name) == (ALICE, "old")
        if held.reports:
            assert outbox.queue_digests(db, ORG, [BOB], NOW) == 0  # sent already
        # And today's code carries on from there.
        tokens.issue_user_token(db, ORG, ALICE, "new", NOW)
        assert audit.verify_chain(db, ORG)


def test_a_failed_upgrade_leaves_the_database_at_its_revision_with_its_rows(
    tmp_path: Path,
) -> None:
    with _at_revision("0005", tmp_path) as db:
        org_id, _, old = _alices_tokens(db)
        # Two expiry notices of one token to one member, which 0007 cannot both move
        # (the outbox keeps one expiry per token and recipient): it fails, after 0006.
        with db.write() as session:
            for cutoff in (old.cutoff_at, old.cutoff_at + timedelta(days=1)):
                expiry = {"org_id": org_id, "recipient": ALICE, "token_id": old.id}
                expiry |= {"kind": "expired", "stage": 0, "cutoff_at": cutoff}
                expiry |= {"status": "pending", "attempts": 0, "next_attempt_at": NOW}
                _insert(session, NOTICE, {**expiry, "created_at": NOW})
        before = _written(db, _held_columns(db))

        with pytest.raises(sa.exc.IntegrityError):
            upgrade(db)

        assert current_revision(db) == "0005"
        token_columns = {c["name"] for c in sa.inspect(db.engine).get_columns("token")}
        assert "delivered_at" not in token_columns  # 0006 was undone with the rest
        assert "outbox" not in sa.inspect(db.engine).get_table_names()
        assert len(_rows(db, NOTICE)) == 2
        assert _written(db, _held_columns(db)) == before
        if db.dialect == "sqlite":  # foreign keys are enforced again
            with db.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1


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
