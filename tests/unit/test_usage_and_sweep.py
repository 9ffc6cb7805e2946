from datetime import timedelta

import pytest

from bot.members import role_of
from storage import audit, events, members, outbox, sweep, tokens, usage
from storage.db import Database
from storage.errors import CapReached, NameTaken, NotAllowed
from storage.models import DELIVERY_DEADLINE
from tests.conftest import NOW, shown

ORG, ALICE, BOB = "T0ORG", "U0ALICE", "U0BOB"
DAY = timedelta(days=1)


def issue(db: Database, name: str = "ci", user: str = ALICE, now=NOW):
    return shown(db, ORG, tokens.issue_user_token(db, ORG, user, name, now), now)


def actions(db: Database) -> list[str]:
    return [e.action for e in audit.events(db, ORG)]


def test_a_valid_token_is_recognised_with_its_owner_and_scopes(db: Database) -> None:
    issued = issue(db)
    valid = usage.validate(db, issued.secret, NOW)
    assert valid is not None
    assert (valid.owner, valid.org, valid.name, valid.kind) == (ALICE, ORG, "ci", "user")
    assert valid.scopes == ["api:read", "api:write"]  # a member's default


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),
        lambda s: s.upper(),
        lambda s: "",
        lambda s: s + "x",
    ],
)
def test_anything_but_the_exact_token_is_invalid(db: Database, mangle) -> None:
    issued = issue(db)
    assert usage.validate(db, mangle(issued.secret), NOW) is None


def test_a_token_is_valid_one_second_before_its_cutoff_and_not_one_second_after(
    db: Database,
) -> None:
    issued = issue(db)
    cutoff = issued.info.cutoff_at
    assert usage.validate(db, issued.secret, cutoff - timedelta(seconds=1)) is not None
    assert usage.validate(db, issued.secret, cutoff + timedelta(seconds=1)) is None


def test_a_revoked_token_is_invalid(db: Database) -> None:
    issued = issue(db)
    tokens.revoke_token(db, ORG, ALICE, issued.info.id, NOW)
    assert usage.validate(db, issued.secret, NOW) is None


def test_use_moves_the_cutoff_with_one_write_a_minute(db: Database) -> None:
    issued = issue(db)
    later = NOW + 10 * DAY
    used = usage.record_use(db, usage.validate(db, issued.secret, later), later, via="gw")
    assert used.cutoff_at == later + 30 * DAY
    again = later + timedelta(seconds=30)
    usage.record_use(db, usage.validate(db, issued.secret, again), again, via="gw")
    assert actions(db).count("token.used") == 1
    stored = usage.validate(db, issued.secret, again)
    assert stored.last_used_at == later and stored.cutoff_at == later + 30 * DAY
    minute_later = later + timedelta(seconds=61)
    usage.record_use(db, usage.validate(db, issued.secret, minute_later), minute_later, "gw")
    assert actions(db).count("token.used") == 2
    assert audit.verify_chain(db, ORG)


def test_reminders_are_queued_once_per_stage_and_window(db: Database) -> None:
    issue(db)
    assert sweep.sweep(db, NOW + 22 * DAY).reminded == []
    day23 = NOW + 23 * DAY
    first = sweep.sweep(db, day23)
    assert [(stage, t.name) for _, t, stage in first.reminded] == [(7, "ci")]
    assert sweep.sweep(db, day23).reminded == []  # a second sweep: nothing new
    assert sweep.sweep(db, day23 + DAY).reminded == []
    assert [s for _, _, s in sweep.sweep(db, NOW + 29 * DAY).reminded] == [1]
    assert outbox.pending_count(db) == 2
    assert actions(db).count("token.reminder") == 2


def test_a_late_sweep_sends_only_the_most_imminent_stage(db: Database) -> None:
    issue(db)
    report = sweep.sweep(db, NOW + 29 * DAY + timedelta(hours=12))
    assert [s for _, _, s in report.reminded] == [1]


def test_expiry_marks_the_token_and_queues_one_notice(db: Database) -> None:
    issued = issue(db)
    after = NOW + 30 * DAY + timedelta(seconds=1)
    report = sweep.sweep(db, after)
    assert [t.id for _, t in report.expired] == [issued.info.id]
    assert sweep.sweep(db, after).expired == []
    assert tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens == []  # expired for good
    due = outbox.claim_due(db, after)
    assert [(n.kind, n.recipient, n.token.name) for n in due] == [("expired", ALICE, "ci")]


def test_only_the_current_claim_holder_settles_a_notice(db: Database) -> None:
    issue(db)
    after = NOW + 30 * DAY + timedelta(seconds=1)
    sweep.sweep(db, after)
    [first] = outbox.claim_due(db, after)
    assert outbox.claim_due(db, after) == []  # leased to the first sender
    later = after + outbox.LEASE + timedelta(seconds=1)
    [second] = outbox.claim_due(db, later)  # the first sender's lease ran out
    outbox.mark_sent(db, second, later)
    # The slow first sender reports back: it must not put the sent notice back to pending.
    outbox.mark_retry(db, first, later, timedelta(minutes=1), "timeout")
    assert outbox.pending_count(db) == 0
    assert outbox.claim_due(db, later + DAY) == []


def test_a_stale_claim_cannot_give_up_a_notice_another_sender_holds(db: Database) -> None:
    issue(db)
    after = NOW + 30 * DAY + timedelta(seconds=1)
    sweep.sweep(db, after)
    [first] = outbox.claim_due(db, after)
    later = after + outbox.LEASE + timedelta(seconds=1)
    [second] = outbox.claim_due(db, later)
    outbox.mark_failed(db, first, "user_not_found")  # the stale sender gives up
    assert outbox.pending_count(db) == 1  # the second sender's claim still stands
    outbox.mark_retry(db, second, later, timedelta(minutes=1), "ratelimited")
    [third] = outbox.claim_due(db, later + timedelta(minutes=2))  # still owed
    assert third.id == first.id


def test_a_notice_never_delivered_ends_as_the_dead_letter_after_the_last_attempt(
    db: Database,
) -> None:
    issue(db)
    after = NOW + 30 * DAY + timedelta(seconds=1)
    sweep.sweep(db, after)
    for attempt in range(1, outbox.MAX_ATTEMPTS + 1):
        [notice] = outbox.claim_due(db, after)
        assert notice.attempts == attempt
        outbox.mark_retry(db, notice, after, timedelta(0), "internal_error")
    assert outbox.claim_due(db, after + DAY) == []
    assert outbox.pending_count(db) == 0


def test_a_dry_run_writes_nothing(db: Database) -> None:
    issue(db)
    report = sweep.sweep(db, NOW + 31 * DAY, dry_run=True)
    assert len(report.expired) == 1
    assert outbox.pending_count(db) == 0
    assert len(tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens) == 1


def test_a_use_after_a_reminder_drops_it_and_starts_a_new_window(db: Database) -> None:
    issued = issue(db)
    day23 = NOW + 23 * DAY
    sweep.sweep(db, day23)
    usage.record_use(db, usage.validate(db, issued.secret, day23), day23, via="gw")
    assert outbox.claim_due(db, day23) == []  # the reminder's window is over
    assert [s for _, _, s in sweep.sweep(db, day23 + 23 * DAY).reminded] == [7]


def test_keep_alive_extends_without_counting_as_a_use(db: Database) -> None:
    issued = issue(db)
    day25 = NOW + 25 * DAY
    kept = usage.keep_alive(db, ORG, ALICE, issued.info.id, day25)
    assert kept.cutoff_at == day25 + 30 * DAY
    valid = usage.validate(db, issued.secret, day25)
    assert valid.last_used_at is None and valid.cutoff_at == day25 + 30 * DAY
    assert "token.keep_alive" in actions(db) and "token.used" not in actions(db)
    with pytest.raises(NotAllowed):
        usage.keep_alive(db, ORG, BOB, issued.info.id, day25)


def test_deactivation_revokes_user_tokens_once(db: Database) -> None:
    issued = issue(db)
    gone = members.Profile(user_id=ALICE, display_name="alice", role="member", deleted=True)
    first = members.sync_member(db, ORG, gone, NOW)
    assert [t.id for t in first.revoked] == [issued.info.id] and first.newly_deactivated
    assert first.revoked[0].state_reason == "owner deactivated"
    second = members.sync_member(db, ORG, gone, NOW)
    assert second.revoked == [] and not second.newly_deactivated
    assert usage.validate(db, issued.secret, NOW) is None
    assert actions(db).count("member.deactivated") == 1


def test_role_and_groups_come_from_the_current_profile(db: Database) -> None:
    issued = issue(db)
    admin = members.Profile(ALICE, "alice", "admin", False, groups=["platform"])
    members.sync_member(db, ORG, admin, NOW)
    valid = usage.validate(db, issued.secret, NOW)
    assert valid.scopes == ["api:read", "api:write", "api:admin"]
    assert valid.groups == ("platform",)


def test_slack_roles_map_to_tokenbot_roles() -> None:
    assert role_of({"is_owner": True, "is_admin": True}) == "owner"
    assert role_of({"is_admin": True}) == "admin"
    assert role_of({"is_restricted": True}) == "guest"
    assert role_of({"is_ultra_restricted": True}) == "guest"
    assert role_of({}) == "member"


def test_an_event_id_is_handled_once(db: Database) -> None:
    assert events.first_delivery(db, "Ev1", NOW)
    assert not events.first_delivery(db, "Ev1", NOW)
    assert events.first_delivery(db, "Ev2", NOW)
    assert events.forget_old_events(db, NOW + 3 * DAY) == 2


def test_generation_moves_after_invalidating_writes_here_and_after_a_refresh_elsewhere(
    db: Database, database_url: str
) -> None:
    other = Database(database_url)
    try:
        issued = issue(db)
        other.refresh_generation()
        seen_here, seen_there = db.generation, other.generation
        issue(db, "cd")  # issuing invalidates nothing
        assert db.generation == seen_here
        tokens.revoke_token(db, ORG, ALICE, issued.info.id, NOW)
        assert db.generation == seen_here + 1  # at once, where it happened
        assert other.generation == seen_there  # elsewhere, not until it looks
        other.refresh_generation()
        assert other.generation == seen_there + 1
        other.refresh_generation()
        assert other.generation == seen_there + 1  # nothing new
    finally:
        other.dispose()


def test_a_profile_without_groups_is_stored_but_not_counted_as_fresh(db: Database) -> None:
    issued = issue(db)
    members.sync_member(db, ORG, members.Profile(ALICE, "alice", "member", False, ["ops"]), NOW)
    later = NOW + DAY
    members.sync_member(db, ORG, members.Profile(ALICE, "alice", "admin", False), later)
    valid = usage.validate(db, issued.secret, later)
    assert valid.role == "admin" and valid.groups == ("ops",)
    assert valid.profile_at == NOW  # the groups are as old as they were


def test_a_token_not_yet_delivered_is_not_valid_and_not_listed_but_holds_its_place(
    db: Database,
) -> None:
    pending = tokens.issue_user_token(db, ORG, ALICE, "ci", NOW)
    assert usage.validate(db, pending.secret, NOW) is None
    assert tokens.list_user_tokens(db, ORG, ALICE, NOW).tokens == []
    with pytest.raises(NameTaken):
        tokens.issue_user_token(db, ORG, ALICE, "CI", NOW)
    for n in range(9):
        issue(db, f"t{n}")
    with pytest.raises(CapReached):  # nine listed, one on its way: the cap is reached
        tokens.issue_user_token(db, ORG, ALICE, "eleventh", NOW)
    assert tokens.mark_delivered(db, ORG, pending.info.id, NOW + timedelta(seconds=2), "dm")
    valid = usage.validate(db, pending.secret, NOW + timedelta(seconds=2))
    assert valid is not None and valid.cutoff_at == NOW + 30 * DAY  # R11: from its creation


def test_the_sweep_revokes_a_token_not_delivered_in_time_and_reminds_nobody(
    db: Database,
) -> None:
    pending = tokens.issue_user_token(db, ORG, ALICE, "ci", NOW)
    almost = NOW + DELIVERY_DEADLINE - timedelta(seconds=1)
    assert sweep.sweep(db, almost).undelivered == []
    assert "token.revoked" not in actions(db)
    report = sweep.sweep(db, NOW + DELIVERY_DEADLINE)
    assert [t.id for _, t in report.undelivered] == [pending.info.id]
    revoked = [e for e in audit.events(db, ORG) if e.action == "token.revoked"]
    assert [e.detail["reason"] for e in revoked] == ["not delivered"]
    assert tokens.mark_delivered(db, ORG, pending.info.id, NOW + DELIVERY_DEADLINE, "dm") is None
    assert usage.validate(db, pending.secret, NOW + DELIVERY_DEADLINE) is None
    later = sweep.sweep(db, NOW + 23 * DAY)  # when a delivered token would be reminded
    assert later.reminded == [] and later.expired == [] and outbox.pending_count(db) == 0


def test_a_late_delivery_is_not_valid_either(db: Database) -> None:
    pending = tokens.issue_user_token(db, ORG, ALICE, "ci", NOW)
    late = NOW + DELIVERY_DEADLINE
    assert tokens.mark_delivered(db, ORG, pending.info.id, late, "dm") is None
    assert usage.validate(db, pending.secret, late) is None
    issue(db, "ci", now=late)  # the name and the place under the cap are free again
    revoked = [e for e in audit.events(db, ORG) if e.action == "token.revoked"]
    assert [e.detail["reason"] for e in revoked] == ["not delivered"]
