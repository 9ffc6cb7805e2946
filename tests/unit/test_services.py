"""Service users seen by owners and admins, acted on by them, and who hears of their
tokens (R5, R12, R13, R16, R17, R25)."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from storage import approvals, audit, digests, members, outbox, services, sweep, tokens, usage
from storage.db import Database
from storage.errors import NotAllowed, TokenNotFound
from storage.models import NoticeKind, OutboxMessage, ServiceOwner
from storage.orgs import ensure_member, find_org
from tests.conftest import NOW, shown

ORG = "T0ORG"
OWNER, CO_OWNER, APPROVER, OTHER = "U0OWNER", "U0COOWNER", "U0APPROVER", "U0OTHER"
DAY = timedelta(days=1)


def service_token(db: Database, name: str = "ci-deployer", requester: str = OWNER):
    """An approved service token for a new service user owned by ``requester``."""
    request = approvals.request_service_token(
        db,
        ORG,
        requester,
        name=name,
        purpose="deploys from CI",
        scopes=["api:write"],
        justification="the pipeline needs it",
        now=NOW,
    )
    decision = approvals.decide(db, ORG, request.id, APPROVER, approve=True, reason=None, now=NOW)
    return shown(db, ORG, decision.issued)


def add_owner(db: Database, service_name: str, user_id: str) -> None:
    with db.write() as session:
        org = find_org(session, ORG)
        member = ensure_member(session, org.id, user_id, NOW)
        service_id = session.execute(
            sa.select(services.SERVICE.c.id).where(services.SERVICE.c.name == service_name)
        ).scalar_one()
        session.execute(
            sa.insert(ServiceOwner.__table__), {"service_user_id": service_id, "member_id": member}
        )


def deactivate(db: Database, user_id: str) -> members.Synced:
    return members.sync_member(db, ORG, members.Profile(user_id, None, "member", True), NOW)


def test_owners_see_their_service_users_admins_see_all_others_none(db: Database) -> None:
    service_token(db, "ci-deployer", OWNER)
    service_token(db, "billing-sync", OTHER)
    mine = services.list_service_users(db, ORG, OWNER, admin=False, now=NOW)
    assert [(s.name, s.owners, s.scopes) for s in mine] == [("ci-deployer", [OWNER], ["api:write"])]
    assert [t.hint[:4] for t in mine[0].tokens] == ["tbs_"]
    every = services.list_service_users(db, ORG, APPROVER, admin=True, now=NOW)
    assert [s.name for s in every] == ["billing-sync", "ci-deployer"]
    assert services.list_service_users(db, ORG, APPROVER, admin=False, now=NOW) == []
    assert services.list_service_users(db, "T0ELSEWHERE", OWNER, admin=True, now=NOW) == []


def test_an_owner_revokes_their_service_users_token_and_it_stops_working(db: Database) -> None:
    issued = service_token(db)
    revoked = tokens.revoke_token(db, ORG, OWNER, issued.info.id, NOW)
    assert (revoked.state, revoked.state_reason) == ("revoked", "revoked by owner")
    assert usage.validate(db, issued.secret, NOW) is None
    listed = services.list_service_users(db, ORG, OWNER, admin=False, now=NOW)
    assert listed[0].tokens == []


def test_a_co_owner_may_act_on_the_token_a_stranger_may_not(db: Database) -> None:
    issued = service_token(db)
    with pytest.raises(NotAllowed, match="service users you own"):
        tokens.revoke_token(db, ORG, OTHER, issued.info.id, NOW)
    add_owner(db, "ci-deployer", CO_OWNER)
    kept = usage.keep_alive(db, ORG, CO_OWNER, issued.info.id, NOW + DAY)
    assert kept.cutoff_at == NOW + DAY + timedelta(days=30)
    tokens.revoke_token(db, ORG, CO_OWNER, issued.info.id, NOW + DAY)
    assert usage.validate(db, issued.secret, NOW + DAY) is None


def test_an_admin_revokes_any_token_of_the_organization_with_that_reason(db: Database) -> None:
    issued = service_token(db)
    personal = shown(db, ORG, tokens.issue_user_token(db, ORG, OWNER, "laptop", NOW))
    with pytest.raises(NotAllowed, match="only your own tokens"):
        tokens.revoke_token(db, ORG, APPROVER, personal.info.id, NOW)
    for token in (issued, personal):
        revoked = tokens.revoke_token(db, ORG, APPROVER, token.info.id, NOW, admin=True)
        assert revoked.state_reason == "revoked by admin"
        assert usage.validate(db, token.secret, NOW) is None
    with pytest.raises(TokenNotFound):  # R10: never across organizations
        tokens.revoke_token(db, "T0ELSEWHERE", APPROVER, issued.info.id, NOW, admin=True)
    revokes = [e for e in audit.events(db, ORG) if e.action == "token.revoked"]
    assert [e.actor for e in revokes] == [APPROVER, APPROVER]


def test_a_deactivated_owner_can_no_longer_act_on_the_token(db: Database) -> None:
    issued = service_token(db)
    deactivate(db, OWNER)
    with pytest.raises(NotAllowed):
        tokens.revoke_token(db, ORG, OWNER, issued.info.id, NOW)
    assert usage.validate(db, issued.secret, NOW) is not None  # R17: it keeps working


def notices(db: Database) -> list[tuple[str, str, int]]:
    table = OutboxMessage.__table__
    with db.read() as session:
        rows = session.execute(
            sa.select(table.c.recipient, table.c.kind, table.c.payload)
            .where(table.c.kind.in_([NoticeKind.REMINDER, NoticeKind.EXPIRED]))
            .order_by(table.c.kind, table.c.recipient)
        )
        return [(row.recipient, row.kind, row.payload["stage"]) for row in rows]


def test_service_token_reminders_and_expiry_go_to_each_active_owner(db: Database) -> None:
    service_token(db)
    add_owner(db, "ci-deployer", CO_OWNER)
    report = sweep.sweep(db, NOW + 23 * DAY)
    assert [(org, stage) for org, _, stage in report.reminded] == [(ORG, 7)]
    assert notices(db) == [(CO_OWNER, "reminder", 7), (OWNER, "reminder", 7)]
    sweep.sweep(db, NOW + 23 * DAY)  # nothing twice
    assert len(notices(db)) == 2
    deactivate(db, CO_OWNER)
    sweep.sweep(db, NOW + 31 * DAY)
    assert (CO_OWNER, "expired", 0) not in notices(db)
    assert (OWNER, "expired", 0) in notices(db)


def test_a_service_token_with_no_active_owner_is_reported_to_the_known_admins(
    db: Database,
) -> None:
    service_token(db)
    members.sync_member(db, ORG, members.Profile(APPROVER, "boss", "admin", False), NOW)
    deactivate(db, OWNER)
    sweep.sweep(db, NOW + 23 * DAY)
    assert notices(db) == [(APPROVER, "reminder", 7)]
    reminded = [e for e in audit.events(db, ORG) if e.action == "token.reminder"]
    assert [e.detail["recipients"] for e in reminded] == [1]


def test_a_reminder_nobody_can_receive_is_on_the_record(db: Database) -> None:
    service_token(db)
    deactivate(db, OWNER)  # no other owner, and no admin known to tokenbot
    sweep.sweep(db, NOW + 23 * DAY)
    assert notices(db) == []
    [reminded] = [e for e in audit.events(db, ORG) if e.action == "token.reminder"]
    assert (reminded.detail["days_before"], reminded.detail["recipients"]) == (7, 0)


def test_deactivation_names_the_service_users_the_member_solely_owned_once(
    db: Database,
) -> None:
    service_token(db, "ci-deployer", OWNER)
    service_token(db, "shared-sync", OWNER)
    add_owner(db, "shared-sync", CO_OWNER)
    synced = deactivate(db, OWNER)
    assert synced.orphaned == ["ci-deployer"]
    assert deactivate(db, OWNER).orphaned == []  # a repeated event reports nothing new
    [event] = [e for e in audit.events(db, ORG) if e.action == "member.deactivated"]
    assert event.detail["sole_owner_of"] == ["ci-deployer"]
    assert deactivate(db, CO_OWNER).orphaned == ["shared-sync"]


def waiting_request(db: Database) -> None:
    """Owner's request for ci-deployer, made at NOW."""
    approvals.request_service_token(
        db,
        ORG,
        OWNER,
        name="ci-deployer",
        purpose="deploys",
        scopes=["api:read"],
        justification="needed",
        now=NOW,
    )


def test_a_digest_is_claimed_once_a_day_per_approver(db: Database) -> None:
    waiting_request(db)
    assert digests.orgs_due(db, NOW + timedelta(hours=23)) == []
    later = NOW + DAY
    assert digests.orgs_due(db, later) == [ORG]
    assert outbox.queue_digests(db, ORG, [APPROVER], later) == 1
    assert outbox.queue_digests(db, ORG, [APPROVER], later + timedelta(hours=5)) == 0
    assert outbox.queue_digests(db, ORG, [OTHER], later) == 1
    mine, other = outbox.claim_due(db, later, [NoticeKind.DIGEST], ORG)
    outbox.mark_sent(db, mine, later)
    outbox.mark_retry(db, other, later, timedelta(minutes=1), "internal_error")
    # its delivery failed: it goes again
    again = outbox.claim_due(db, later + timedelta(minutes=1), [NoticeKind.DIGEST], ORG)
    assert [m.recipient for m in again] == [OTHER]
    assert outbox.queue_digests(db, ORG, [APPROVER], later + DAY) == 1


def test_a_digest_not_delivered_by_the_end_of_its_day_is_not_sent_the_next(
    db: Database,
) -> None:
    waiting_request(db)
    later = NOW + DAY
    outbox.queue_digests(db, ORG, [APPROVER], later)
    [first] = outbox.claim_due(db, later, [NoticeKind.DIGEST], ORG)
    outbox.mark_retry(db, first, later, timedelta(hours=1), "internal_error")
    outbox.queue_digests(db, ORG, [APPROVER], later + DAY)
    [today] = outbox.claim_due(db, later + DAY, [NoticeKind.DIGEST], ORG)
    assert today.payload["day"] == (later + DAY).date().isoformat()
    assert outbox.pending_count(db) == 1  # yesterday's was skipped, today's is on its way


def test_an_admin_keeps_service_tokens_alive_but_not_members_own(db: Database) -> None:
    issued = service_token(db)
    personal = shown(db, ORG, tokens.issue_user_token(db, ORG, OWNER, "laptop", NOW))
    kept = usage.keep_alive(db, ORG, APPROVER, issued.info.id, NOW + DAY, admin=True)
    assert kept.cutoff_at == NOW + DAY + timedelta(days=30)
    with pytest.raises(NotAllowed, match="only your own tokens"):
        usage.keep_alive(db, ORG, APPROVER, personal.info.id, NOW + DAY, admin=True)


def test_when_the_workspace_forbids_keeping_nobody_keeps(db: Database) -> None:
    from storage.errors import PolicyForbids
    from storage.models import Organization

    issued = service_token(db)
    with db.write() as session:
        session.execute(sa.update(Organization.__table__).values(allow_keep_alive=False))
    with pytest.raises(PolicyForbids, match="does not allow"):
        usage.keep_alive(db, ORG, OWNER, issued.info.id, NOW + DAY)


def test_ownerless_reports_are_claimed_per_organization_once_and_settled_by_the_claimer(
    db: Database,
) -> None:
    reports = [NoticeKind.OWNERLESS]
    service_token(db)
    deactivate(db, OWNER)
    assert outbox.claim_due(db, NOW, reports, "T0ELSEWHERE") == []  # R10
    [first] = outbox.claim_due(db, NOW, reports, ORG)
    assert (first.payload["member"], first.payload["service_users"]) == (OWNER, ["ci-deployer"])
    assert outbox.claim_due(db, NOW, reports, ORG) == []  # leased
    later = NOW + outbox.LEASE + timedelta(seconds=1)
    [second] = outbox.claim_due(db, later, reports, ORG)  # the first claimer's lease ran out
    assert second.id == first.id and second.attempts == 2
    outbox.mark_sent(db, second, later)
    outbox.mark_retry(db, first, later, timedelta(minutes=1), "timeout")  # stale: no change
    assert outbox.claim_due(db, later + DAY, reports, ORG) == []


def test_two_owners_removing_each_other_at_once_leave_one_owner(db: Database) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from storage.errors import PolicyForbids

    service_token(db, "ci-deployer", OWNER)
    [service] = services.list_service_users(db, ORG, OWNER, admin=False, now=NOW)
    services.add_owner(db, ORG, OWNER, service.id, NOW, member=CO_OWNER)

    def remove_the_other(actor: str) -> str:
        other = CO_OWNER if actor == OWNER else OWNER
        try:
            services.remove_owner(db, ORG, actor, service.id, NOW, member=other)
            return "removed"
        except (PolicyForbids, NotAllowed):  # the last owner kept, or no longer an owner
            return "refused"

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = sorted(pool.map(remove_the_other, [OWNER, CO_OWNER]))
    assert outcomes == ["refused", "removed"]
    [after] = services.list_service_users(db, ORG, OWNER, admin=True, now=NOW)
    assert len(after.owners) == 1
    assert audit.verify_chain(db, ORG)


def test_removing_a_deactivated_owner_leaves_the_active_one(db: Database) -> None:
    service_token(db, "ci-deployer", OWNER)
    [service] = services.list_service_users(db, ORG, OWNER, admin=False, now=NOW)
    services.add_owner(db, ORG, OWNER, service.id, NOW, member=CO_OWNER)
    deactivate(db, CO_OWNER)
    changed = services.remove_owner(db, ORG, OWNER, service.id, NOW, member=CO_OWNER)
    assert changed.owners == [OWNER]
    from storage.errors import InvalidField

    with pytest.raises(InvalidField, match="That member is deactivated"):
        services.add_owner(db, ORG, OWNER, service.id, NOW, member=CO_OWNER)


def test_a_service_user_of_another_organization_is_not_found(db: Database) -> None:
    from storage.errors import ServiceUserNotFound

    service_token(db, "ci-deployer", OWNER)
    [service] = services.list_service_users(db, ORG, OWNER, admin=False, now=NOW)
    with pytest.raises(ServiceUserNotFound):
        services.add_owner(db, "T0ELSEWHERE", OWNER, service.id, NOW, member=OTHER, admin=True)
    with pytest.raises(ServiceUserNotFound):
        services.take_over(db, "T0ELSEWHERE", APPROVER, "ci-deployer", NOW)
