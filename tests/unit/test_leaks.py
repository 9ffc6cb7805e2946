"""Revoking tokens found pasted in messages (R19): once, on the record, with their owners
owed a message; strings that are not the organization's active tokens change nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from bot.listeners.payload import Posted, is_idle_message, malformed, posted_message
from storage import audit, leaks, members, tokenformat, tokens, usage
from storage.db import Database
from storage.models import NoticeKind, OutboxMessage, TokenState
from storage.tokenformat import TokenKind
from tests.conftest import FIXTURES, NOW, shown
from tests.unit.test_services import APPROVER, CO_OWNER, OWNER, add_owner, deactivate, service_token

ORG = "T0ORG"
ALICE, BOB = "U0ALICE", "U0BOB"
PLACE = leaks.Place(channel="C0GENERAL", ts="1700000000.000100", poster=BOB)


def user_token(db: Database, user: str = ALICE, name: str = "ci") -> tokens.IssuedToken:
    return shown(db, ORG, tokens.issue_user_token(db, ORG, user, name, NOW))


def leak_notices(db: Database) -> list[tuple[str | None, int, dict[str, Any]]]:
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    with db.read() as session:
        rows = session.execute(
            sa.select(table.c.recipient, table.c.token_id, table.c.payload)
            .where(table.c.kind == NoticeKind.LEAKED)
            .order_by(table.c.id)
        )
        return [(row.recipient, row.token_id, row.payload) for row in rows]


def leaked(db: Database) -> list[audit.AuditEvent]:
    return [e for e in audit.events(db, ORG) if e.action == "token.leaked"]


class NoDatabase:
    """A database that fails the test if it is asked anything."""

    def read(self) -> Any:
        raise AssertionError("the database was asked")

    write = read


def test_a_lookalike_with_a_bad_checksum_never_reaches_the_database() -> None:
    token = tokenformat.mint(TokenKind.USER)
    lookalike = token[:-1] + ("A" if token[-1] != "A" else "B")
    text = f"try {lookalike} or tbu_{'x' * 36}"
    assert tokenformat.find_tokens(text) == []
    nothing = cast(Database, NoDatabase())
    assert leaks.revoke_leaked(nothing, ORG, [lookalike], PLACE, NOW) == []
    with pytest.raises(AssertionError, match="asked"):  # a real token is looked up
        leaks.revoke_leaked(nothing, ORG, tokenformat.find_tokens(f"{text} {token}"), PLACE, NOW)


def test_a_pasted_token_is_revoked_once_on_the_record_and_its_owner_is_owed_a_dm(
    db: Database,
) -> None:
    issued = user_token(db)
    [revoked] = leaks.revoke_leaked(db, ORG, [issued.secret], PLACE, NOW)
    assert (revoked.id, revoked.state, revoked.state_reason) == (
        issued.info.id,
        TokenState.REVOKED,
        "leaked",
    )
    assert usage.validate(db, issued.secret, NOW) is None
    [event] = leaked(db)
    assert (event.actor, event.subject) == (BOB, f"token:{issued.info.id}")
    assert event.detail == {
        "name": "ci",
        "hint": issued.info.hint,
        "kind": "user",
        "reason": "leaked",
        "channel": PLACE.channel,
        "ts": PLACE.ts,
    }
    payload = {"channel": PLACE.channel, "ts": PLACE.ts, "poster": BOB}
    assert leak_notices(db) == [(ALICE, issued.info.id, payload)]
    # Seen again (an edit, another replica, a repost): nothing more.
    assert leaks.revoke_leaked(db, ORG, [issued.secret], PLACE, NOW) == []
    assert len(leaked(db)) == 1 and len(leak_notices(db)) == 1
    assert issued.secret not in "\n".join(audit.export_jsonl(db, ORG))
    assert audit.verify_chain(db, ORG)


def test_every_token_of_a_message_is_revoked_and_the_unknown_poster_is_the_system(
    db: Database,
) -> None:
    first, second = user_token(db, ALICE, "one"), user_token(db, BOB, "two")
    place = leaks.Place(channel="C0GENERAL", ts="1.2", poster=None)
    revoked = leaks.revoke_leaked(db, ORG, [first.secret, second.secret], place, NOW)
    assert sorted(t.name for t in revoked) == ["one", "two"]
    assert [e.actor for e in leaked(db)] == [audit.SYSTEM, audit.SYSTEM]
    assert sorted(r for r, _, _ in leak_notices(db)) == [ALICE, BOB]


def test_a_pasted_service_token_is_owed_to_each_of_its_active_owners(db: Database) -> None:
    issued = service_token(db)
    add_owner(db, "ci-deployer", CO_OWNER)
    [revoked] = leaks.revoke_leaked(db, ORG, [issued.secret], PLACE, NOW)
    assert revoked.kind == "service"
    assert sorted(r for r, _, _ in leak_notices(db)) == [CO_OWNER, OWNER]


def test_a_service_token_without_owners_is_owed_to_the_admins(db: Database) -> None:
    first, second = service_token(db, "ci-deployer"), service_token(db, "billing-sync")
    deactivate(db, OWNER)  # their only owner
    leaks.revoke_leaked(db, ORG, [first.secret], PLACE, NOW)
    assert [r for r, _, _ in leak_notices(db)] == [None]  # the admins, as Slack lists them
    members.sync_member(db, ORG, members.Profile(APPROVER, "boss", "admin", False), NOW)
    leaks.revoke_leaked(db, ORG, [second.secret], PLACE, NOW)
    assert [r for r, _, _ in leak_notices(db)] == [None, APPROVER]  # the admins it knows


def test_a_token_not_active_or_not_the_organizations_changes_nothing(db: Database) -> None:
    revoked = user_token(db, ALICE, "revoked")
    tokens.revoke_token(db, ORG, ALICE, revoked.info.id, NOW)
    lapsed = user_token(db, ALICE, "lapsed")  # past its cutoff, not yet swept
    foreign = shown(db, "T0OTHER", tokens.issue_user_token(db, "T0OTHER", ALICE, "x", NOW), NOW)
    unknown = tokenformat.mint(TokenKind.USER)
    before = audit.events(db, ORG)
    secrets = [revoked.secret, foreign.secret, unknown, lapsed.secret]
    later = NOW + timedelta(days=31)
    assert leaks.revoke_leaked(db, ORG, secrets, PLACE, later) == []
    assert audit.events(db, ORG) == before and leak_notices(db) == []
    assert usage.validate(db, foreign.secret, NOW) is not None


class Interleaved:
    """The database as one replica sees it while another replica handles the same
    message: the other's whole revocation runs between this one's read and its write."""

    def __init__(self, db: Database, other: Callable[[], None]) -> None:
        self.db, self.other = db, other

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.db.read() as session:
            yield session
        self.other()

    def write(self) -> Any:
        return self.db.write()


def test_of_two_replicas_revoking_the_same_leak_only_the_first_update_goes_on(
    db: Database,
) -> None:
    issued = user_token(db)
    theirs: list[list[tokens.TokenInfo]] = []

    def other_replica() -> None:
        theirs.append(leaks.revoke_leaked(db, ORG, [issued.secret], PLACE, NOW))

    ours = leaks.revoke_leaked(
        cast(Database, Interleaved(db, other_replica)), ORG, [issued.secret], PLACE, NOW
    )
    assert [[t.id for t in found] for found in theirs] == [[issued.info.id]]
    assert ours == []  # the token was active when read, but revoked before our update
    assert len(leaked(db)) == 1 and len(leak_notices(db)) == 1


def test_slacks_own_message_events_are_read_as_the_leak_listener_needs() -> None:
    def body(fixture: str) -> dict[str, Any]:
        return dict(json.loads((FIXTURES / fixture).read_text()))

    new = body("message__channel__bolt_python_fixture.json")
    edit = body("message_changed__bolt_python_fixture.json")
    bot = body("message__bot_message__bolt_python_fixture.json")
    assert [malformed(b) for b in (new, edit, bot)] == [None, None, None]
    assert posted_message(new) == Posted("Hello World!", "C111", "1596183880.004200", "W111", False)
    # An edit: the text as it is now, by its author, at the ts the message was posted with.
    assert posted_message(edit) == Posted(
        "updated message", "C111", "1665102338.901939", "U111", False
    )
    assert posted_message(bot) is None
    deleted = {**new, "event": {**new["event"], "subtype": "message_deleted"}}
    assert posted_message(deleted) is None
    # Only a person's message with a token in it is remembered against repeats.
    assert is_idle_message(new) and is_idle_message(bot)
    token = tokenformat.mint(TokenKind.USER)
    assert not is_idle_message({**new, "event": {**new["event"], "text": token}})
    assert not is_idle_message({"type": "event_callback", "event": {"type": "user_change"}})
