from datetime import timedelta

import pytest
from sqlmodel import select

from storage import audit, tokenformat, tokens
from storage.db import Database
from storage.errors import CapReached, InvalidName, NameTaken, NotAllowed, TokenNotFound
from storage.models import AuditEvent, Token
from tests.conftest import NOW, shown

ORG, OTHER_ORG = "T0ORG", "T0OTHER"
ALICE, BOB = "U0ALICE", "U0BOB"


def issue(db: Database, name: str, user: str = ALICE, org: str = ORG, now=NOW):
    return shown(db, org, tokens.issue_user_token(db, org, user, name, now), now)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (None, "Enter a name"),
        ("", "Enter a name"),
        ("   \t ", "Enter a name"),
        ("x" * 65, "at most 64 characters (this name has 65)"),
        ("line\nbreak", "printable"),
        ("bell\x07", "printable"),
    ],
)
def test_invalid_names_are_refused_and_nothing_is_stored(db: Database, name, message) -> None:
    with pytest.raises(InvalidName, match=message.replace("(", r"\(").replace(")", r"\)")):
        issue(db, name)
    assert tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens == []


def test_name_is_trimmed_and_64_characters_are_allowed(db: Database) -> None:
    issued = issue(db, "  " + "n" * 64 + " ")
    assert issued.info.name == "n" * 64


def test_issue_stores_only_digest_and_hint(db: Database) -> None:
    issued = issue(db, "ci")
    with db.read() as session:
        row = session.exec(select(Token)).one()
    assert row.digest == tokenformat.digest(issued.secret)
    assert row.hint == tokenformat.hint(issued.secret)
    stored = " ".join(str(v) for v in row.model_dump().values())
    assert issued.secret not in stored
    assert issued.secret not in repr(issued)


def test_a_new_token_is_described_with_the_cutoff_it_has_once_shown(db: Database) -> None:
    # The message that shows a new token says when it expires if unused: the whole
    # inactivity period from its creation, not the few minutes it has to be delivered.
    issued = tokens.issue_user_token(db, ORG, ALICE, "ci", NOW)
    assert issued.info.cutoff_at == NOW + timedelta(days=30)
    delivered = tokens.mark_delivered(db, ORG, issued.info.id, NOW, "test")
    assert delivered is not None and delivered.cutoff_at == issued.info.cutoff_at


def test_a_name_held_by_a_token_still_being_delivered_is_refused_as_such(db: Database) -> None:
    tokens.issue_user_token(db, ORG, ALICE, "ci", NOW)  # not shown yet, so not listed
    with pytest.raises(NameTaken, match="still being delivered"):
        tokens.issue_user_token(db, ORG, ALICE, "CI", NOW)


def test_duplicate_names_are_refused_case_insensitively(db: Database) -> None:
    issue(db, "Deploy Key")
    with pytest.raises(NameTaken, match="Deploy KEY"):
        issue(db, "Deploy KEY")
    # Another member, or the same name once revoked, is fine.
    issue(db, "deploy key", user=BOB)


def test_a_revoked_name_can_be_used_again(db: Database) -> None:
    first = issue(db, "ci")
    tokens.revoke_token(db, ORG, ALICE, first.info.id, NOW)
    assert issue(db, "CI").info.name == "CI"


def test_the_eleventh_token_is_refused_with_the_cap_and_the_active_tokens(db: Database) -> None:
    for n in range(10):
        issue(db, f"t{n}")
    with pytest.raises(CapReached) as refused:
        issue(db, "t10")
    assert refused.value.cap == 10
    assert [t.name for t in refused.value.active] == [f"t{n}" for n in range(10)]
    assert "limit is 10" in str(refused.value)
    with pytest.raises(CapReached):
        tokens.check_room_for_user_token(db, ORG, ALICE, NOW)
    assert len(tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens) == 10


def test_revoking_one_makes_room_and_nothing_is_evicted(db: Database) -> None:
    issued = [issue(db, f"t{n}") for n in range(10)]
    tokens.revoke_token(db, ORG, ALICE, issued[3].info.id, NOW)
    issue(db, "replacement")
    names = {t.name for t in tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens}
    assert names == {f"t{n}" for n in range(10) if n != 3} | {"replacement"}


def test_organizations_are_separate(db: Database) -> None:
    mine = issue(db, "ci", org=ORG)
    issue(db, "ci", org=OTHER_ORG)  # same member id, other organization: no clash
    assert len(tokens.list_user_tokens(db, OTHER_ORG, ALICE, NOW).tokens) == 1
    with pytest.raises(TokenNotFound):
        tokens.revoke_token(db, OTHER_ORG, ALICE, mine.info.id, NOW)
    assert tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens[0].state == "active"


def test_only_the_owner_can_revoke(db: Database) -> None:
    mine = issue(db, "ci")
    with pytest.raises(NotAllowed):
        tokens.revoke_token(db, ORG, BOB, mine.info.id, NOW)
    assert [t.id for t in tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens] == [mine.info.id]


def test_revoking_twice_says_the_token_is_no_longer_active(db: Database) -> None:
    mine = issue(db, "ci")
    tokens.revoke_token(db, ORG, ALICE, mine.info.id, NOW)
    with pytest.raises(TokenNotFound, match="no longer active"):
        tokens.revoke_token(db, ORG, ALICE, mine.info.id, NOW)


def test_find_by_name_ignores_case_and_reports_unknown_names(db: Database) -> None:
    mine = issue(db, "Deploy")
    assert tokens.find_user_token(db, ORG, ALICE, " deploy ", NOW).id == mine.info.id
    with pytest.raises(TokenNotFound, match="no active token named “nope”"):
        tokens.find_user_token(db, ORG, ALICE, "nope", NOW)


def test_tokens_past_their_cutoff_do_not_count_and_are_marked_expired(db: Database) -> None:
    for n in range(10):
        issue(db, f"old{n}")
    later = NOW + timedelta(days=30, seconds=1)
    assert tokens.list_user_tokens(db, ORG, ALICE, later).tokens == []
    issue(db, "old0", now=later)  # the cap and the name are free again
    with db.read() as session:
        states = sorted(t.state for t in session.exec(select(Token)))
    assert states == ["active"] + ["expired"] * 10


def test_one_second_before_the_cutoff_a_token_is_still_listed(db: Database) -> None:
    issue(db, "ci")
    assert (
        len(tokens.list_user_tokens(db, ORG, ALICE, NOW + timedelta(days=30, seconds=-1)).tokens)
        == 1
    )
    assert tokens.list_user_tokens(db, ORG, ALICE, NOW + timedelta(days=30)).tokens == []


def test_every_change_writes_a_chained_audit_event_without_secrets(db: Database) -> None:
    first = issue(db, "ci")
    tokens.revoke_token(db, ORG, ALICE, first.info.id, NOW)
    events = audit.events(db, ORG)
    assert [(e.action, e.actor, e.subject) for e in events] == [
        ("token.issued", ALICE, f"token:{first.info.id}"),
        ("token.delivered", "system", f"token:{first.info.id}"),
        ("token.revoked", ALICE, f"token:{first.info.id}"),
    ]
    assert events[2].prev_digest == events[1].digest
    assert audit.verify_chain(db, ORG)
    exported = "\n".join(audit.export_jsonl(db, ORG))
    assert first.secret not in exported
    assert first.info.hint in exported


def test_tampering_with_an_audit_event_breaks_the_chain(db: Database) -> None:
    issue(db, "ci")
    issue(db, "cd")
    with db.write() as session:
        event = session.exec(select(AuditEvent).order_by(AuditEvent.id)).first()
        event.actor = "U0MALLORY"
        session.add(event)
    assert not audit.verify_chain(db, ORG)


def test_24_threads_issuing_at_once_leave_exactly_10_active(db: Database) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def attempt(n: int) -> str:
        try:
            issue(db, f"race-{n}")
            return "issued"
        except CapReached:
            return "refused"

    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(attempt, range(24)))
    assert outcomes.count("issued") == 10 and outcomes.count("refused") == 14
    assert len(tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens) == 10
    assert audit.verify_chain(db, ORG)
