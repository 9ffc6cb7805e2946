"""Rotation in storage (R18): the new token, the old one's grace period, what counts under
the cap, and a rotation undone when its new token is never shown."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from storage import audit, members, sweep, tokens, usage
from storage.db import Database
from storage.errors import AlreadyRotated, CapReached, NotAllowed
from storage.models import DELIVERY_DEADLINE, Organization, Token
from storage.tokens import IssuedToken, Rotation
from tests.conftest import NOW, shown

ORG, ALICE, BOB = "T0ORG", "U0ALICE", "U0BOB"
HOUR = timedelta(hours=1)
LATER = NOW + HOUR  # when the rotations below happen


def issue(db: Database, name: str = "ci", user: str = ALICE) -> IssuedToken:
    return shown(db, ORG, tokens.issue_user_token(db, ORG, user, name, NOW))


def rotate(db: Database, old: IssuedToken, user: str = ALICE, **kw: bool) -> Rotation:
    return tokens.rotate_token(db, ORG, user, old.info.id, LATER, **kw)


def rotated(db: Database, old: IssuedToken) -> tuple[Rotation, IssuedToken]:
    """``old`` rotated an hour after it was issued, and its new token shown then."""
    rotation = rotate(db, old)
    return rotation, shown(db, ORG, rotation.issued, LATER)


def set_grace(db: Database, hours: int) -> None:
    with db.write() as session:
        session.execute(sa.update(Organization).values(rotation_grace_hours=hours))


def listed(db: Database, now=LATER) -> list[tuple[str, int]]:
    return [(t.name, t.id) for t in tokens.list_user_tokens(db, ORG, ALICE, now).tokens]


def state_of(db: Database, token: IssuedToken) -> tuple[str, str | None]:
    with db.read() as session:
        row = session.get(Token, token.info.id)
        assert row is not None
        return row.state, row.state_reason


def test_the_new_token_has_the_old_ones_owner_and_name_and_replaces_it_in_the_list(
    db: Database,
) -> None:
    old = issue(db, "Deploy Key")
    rotation, new = rotated(db, old)
    assert new.info.name == "Deploy Key" and new.info.kind == "user"
    assert new.secret != old.secret and new.info.hint != old.info.hint
    assert listed(db) == [("Deploy Key", new.info.id)]
    valid = usage.validate(db, new.secret, LATER)
    assert valid is not None and valid.owner == ALICE and valid.scopes == ["api:read", "api:write"]
    assert rotation.old.id == old.info.id and rotation.grace == timedelta(hours=24)


def test_the_old_token_works_until_the_grace_period_ends_once_the_new_one_is_shown(
    db: Database,
) -> None:
    old = issue(db)
    rotation = rotate(db, old)
    # Until the new token is shown, the old one is as it was.
    before = usage.validate(db, old.secret, LATER)
    assert before is not None and before.cutoff_at == old.info.cutoff_at
    shown(db, ORG, rotation.issued, LATER)
    during = usage.validate(db, old.secret, LATER)
    assert during is not None and during.cutoff_at == LATER + timedelta(hours=24)
    assert usage.validate(db, old.secret, LATER + timedelta(hours=24, seconds=-1)) is not None
    assert usage.validate(db, old.secret, LATER + timedelta(hours=24)) is None


def test_a_use_during_the_grace_period_is_recorded_and_extends_nothing(db: Database) -> None:
    old = issue(db)
    rotated(db, old)
    valid = usage.validate(db, old.secret, LATER + HOUR)
    assert valid is not None
    used = usage.record_use(db, valid, LATER + HOUR, "test")
    assert used.cutoff_at == LATER + timedelta(hours=24)
    again = usage.validate(db, old.secret, LATER + 2 * HOUR)
    assert again is not None
    assert again.cutoff_at == LATER + timedelta(hours=24)
    assert again.last_used_at == LATER + HOUR
    [use] = [e for e in audit.events(db, ORG) if e.action == "token.used"]
    assert use.subject == f"token:{old.info.id}"


def test_after_the_grace_period_the_sweep_revokes_it_as_rotated_and_tells_nobody(
    db: Database,
) -> None:
    old = issue(db)
    _, new = rotated(db, old)
    end = LATER + timedelta(hours=24)
    report = sweep.sweep(db, end)
    assert [t.id for _, t in report.rotated] == [old.info.id]
    assert report.expired == [] and report.undelivered == []
    assert state_of(db, old) == ("revoked", "rotated")
    assert usage.validate(db, old.secret, end) is None
    assert usage.validate(db, new.secret, end) is not None
    revoked = [e for e in audit.events(db, ORG) if e.action == "token.revoked"]
    assert [(e.subject, e.detail["reason"]) for e in revoked] == [
        (f"token:{old.info.id}", "rotated")
    ]
    assert "rotated, grace ended" in report.lines()[0]


def test_with_no_grace_period_the_old_token_is_revoked_when_the_new_one_is_shown(
    db: Database,
) -> None:
    old = issue(db)
    set_grace(db, 0)
    rotation = rotate(db, old)
    assert rotation.grace == timedelta(0)
    assert usage.validate(db, old.secret, LATER) is not None  # the new one not shown yet
    shown(db, ORG, rotation.issued, LATER)
    assert state_of(db, old) == ("revoked", "rotated")
    assert usage.validate(db, old.secret, LATER) is None


def test_a_rotation_at_the_cap_succeeds_and_the_old_token_leaves_its_place(
    db: Database,
) -> None:
    first, *_ = [issue(db, f"t{n}") for n in range(10)]
    _, new = rotated(db, first)
    assert len(listed(db)) == 10 and ("t0", new.info.id) in listed(db)
    with pytest.raises(CapReached) as refused:
        tokens.issue_user_token(db, ORG, ALICE, "eleventh", LATER)
    assert len(refused.value.active) == 10  # the old token, in its grace period, is not one
    tokens.revoke_token(db, ORG, ALICE, new.info.id, LATER)
    issue(db, "t0")  # its name is free with it, though the old one works on


def test_a_token_rotated_already_cannot_be_rotated_or_kept_again(db: Database) -> None:
    old = issue(db)
    rotated(db, old)
    with pytest.raises(AlreadyRotated, match="was rotated already"):
        rotate(db, old)
    with pytest.raises(AlreadyRotated):
        usage.keep_alive(db, ORG, ALICE, old.info.id, LATER)


def test_only_the_owner_rotates_a_personal_token_and_a_refusal_changes_nothing(
    db: Database,
) -> None:
    old = issue(db)
    with pytest.raises(NotAllowed, match="You can rotate only your own tokens"):
        rotate(db, old, BOB)
    # Not an admin either: the new token would be shown to them, not to its owner (R14).
    with pytest.raises(NotAllowed, match="Only its owner can rotate a personal token"):
        rotate(db, old, BOB, admin=True)  # the caller checked Bob is an admin now
    assert listed(db) == [("ci", old.info.id)]
    assert [e.action for e in audit.events(db, ORG)] == ["token.issued", "token.delivered"]
    rotation = rotate(db, old, ALICE)
    assert rotation.issued.info.name == "ci"
    [event] = [e for e in audit.events(db, ORG) if e.action == "token.rotated"]
    assert (event.actor, event.detail["as"]) == (ALICE, "owner")


def test_ten_rotations_at_once_leave_one_new_token(db: Database) -> None:
    old = issue(db)

    def attempt(_: int) -> str:
        try:
            rotate(db, old)
            return "rotated"
        except AlreadyRotated:
            return "refused"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(attempt, range(10)))
    assert outcomes.count("rotated") == 1 and outcomes.count("refused") == 9
    with db.read() as session:
        count = sa.select(sa.func.count()).select_from(Token)
        assert session.execute(count).scalar_one() == 2
    assert audit.verify_chain(db, ORG)


def test_each_rotation_is_audited_with_both_tokens_and_no_secret(db: Database) -> None:
    old = issue(db)
    _, new = rotated(db, old)
    events = audit.events(db, ORG)
    [event] = [e for e in events if e.action == "token.rotated"]
    assert (event.actor, event.subject) == (ALICE, f"token:{old.info.id}")
    assert event.detail["old"] == {"id": old.info.id, "hint": old.info.hint}
    assert event.detail["new"] == {"id": new.info.id, "hint": new.info.hint}
    assert event.detail["grace_hours"] == 24
    [grace] = [e for e in events if e.action == "token.grace_started"]
    assert grace.detail["until"] == (LATER + timedelta(hours=24)).isoformat()
    exported = "\n".join(audit.export_jsonl(db, ORG))
    assert old.secret not in exported and new.secret not in exported
    assert audit.verify_chain(db, ORG)


def test_a_new_token_nobody_could_be_shown_undoes_the_rotation(db: Database) -> None:
    old = issue(db)
    rotation = rotate(db, old)
    tokens.revoke_undelivered(db, ORG, rotation.issued.info.id, LATER)
    assert listed(db) == [("ci", old.info.id)]
    valid = usage.validate(db, old.secret, LATER)
    assert valid is not None and valid.cutoff_at == old.info.cutoff_at
    assert [e.action for e in audit.events(db, ORG)][-1] == "token.rotation_cancelled"
    rotate(db, old)  # and it can be rotated again


def test_a_new_token_whose_delivery_was_cut_short_undoes_the_rotation_at_the_sweep(
    db: Database,
) -> None:
    old = issue(db)
    rotation = rotate(db, old)
    after = LATER + DELIVERY_DEADLINE
    report = sweep.sweep(db, after)
    assert [t.id for _, t in report.undelivered] == [rotation.issued.info.id]
    assert listed(db, after) == [("ci", old.info.id)]
    assert usage.validate(db, old.secret, after) is not None


def test_a_token_being_rotated_gets_no_reminder(db: Database) -> None:
    old = issue(db)
    rotated(db, old)
    assert sweep.sweep(db, NOW + timedelta(days=23)).reminded == []


def test_a_deactivated_members_tokens_in_their_grace_period_are_revoked_too(
    db: Database,
) -> None:
    old = issue(db)
    _, new = rotated(db, old)
    gone = members.Profile(ALICE, "alice", "member", deleted=True, groups=[])
    synced = members.sync_member(db, ORG, gone, LATER)
    assert {t.id for t in synced.revoked} == {old.info.id, new.info.id}
    assert usage.validate(db, old.secret, LATER) is None
