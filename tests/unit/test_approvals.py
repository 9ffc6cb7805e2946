from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from storage import approvals, audit, reports, tokens, usage
from storage.db import Database
from storage.errors import AlreadyDecided, CapReached, InvalidField, NotAllowed
from storage.models import DELIVERY_DEADLINE
from tests.conftest import NOW, shown

ORG = "T0ORG"
REQUESTER, APPROVER, OTHER = "U0REQ", "U0APPROVER", "U0OTHER"


def ask(db: Database, name: str = "ci-deployer", requester: str = REQUESTER, **overrides):
    fields = {
        "purpose": "deploys from CI",
        "scopes": ["api:write"],
        "justification": "the pipeline needs it",
    } | overrides
    return approvals.request_service_token(db, ORG, requester, name=name, now=NOW, **fields)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "CI Deployer"}, "name"),
        ({"name": "x"}, "name"),
        ({"purpose": "  "}, "purpose"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["root"]}, "scopes"),
        ({"justification": ""}, "justification"),
    ],
)
def test_a_bad_request_names_the_field_and_nothing_is_stored(db: Database, overrides, field):
    with pytest.raises(InvalidField) as bad:
        ask(db, **overrides)
    assert bad.value.field == field and str(bad.value)
    assert [e.action for e in audit.events(db, ORG)] == []


def test_approval_mints_one_service_token_that_introspects_as_the_service_user(db: Database):
    request = ask(db)
    decision = approvals.decide(db, ORG, request.id, APPROVER, approve=True, reason=None, now=NOW)
    assert decision.request.state == "approved" and decision.request.decided_by == APPROVER
    secret = shown(db, ORG, decision.issued).secret
    assert secret.startswith("tbs_")
    valid = usage.validate(db, secret, NOW)
    assert (valid.kind, valid.subject, valid.owner, valid.scopes) == (
        "service",
        "ci-deployer",
        None,
        ["api:write"],
    )
    assert valid.groups == ()


def test_the_first_decision_wins_and_later_ones_change_nothing(db: Database) -> None:
    request = ask(db)
    approvals.decide(db, ORG, request.id, APPROVER, approve=True, reason=None, now=NOW)
    with pytest.raises(AlreadyDecided, match="already approved"):
        approvals.decide(db, ORG, request.id, OTHER, approve=False, reason="no", now=NOW)
    with pytest.raises(AlreadyDecided):
        approvals.decide(db, ORG, request.id, OTHER, approve=True, reason=None, now=NOW)
    assert [e.action for e in audit.events(db, ORG)].count("token.issued") == 1


def test_concurrent_approvals_of_one_request_mint_one_token(db: Database) -> None:
    request = ask(db)

    def click(approver: str) -> str:
        try:
            approvals.decide(db, ORG, request.id, approver, approve=True, reason=None, now=NOW)
            return "decided"
        except AlreadyDecided:
            return "too late"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(click, [f"U0APP{n}" for n in range(8)]))
    assert outcomes.count("decided") == 1
    assert [e.action for e in audit.events(db, ORG)].count("token.issued") == 1


def test_a_requester_can_never_decide_their_own_request(db: Database) -> None:
    request = ask(db)
    with pytest.raises(NotAllowed, match="your own request"):
        approvals.decide(db, ORG, request.id, REQUESTER, approve=True, reason=None, now=NOW)


def test_a_denial_needs_a_reason_which_is_kept(db: Database) -> None:
    request = ask(db)
    with pytest.raises(InvalidField) as bad:
        approvals.decide(db, ORG, request.id, APPROVER, approve=False, reason=" ", now=NOW)
    assert bad.value.field == "reason"
    denied = approvals.decide(
        db, ORG, request.id, APPROVER, approve=False, reason="use the shared deployer", now=NOW
    )
    assert denied.issued is None and denied.request.reason == "use the shared deployer"


def test_only_the_requester_cancels_and_only_while_pending(db: Database) -> None:
    request = ask(db)
    with pytest.raises(NotAllowed):
        approvals.cancel_request(db, ORG, OTHER, request.id, NOW)
    assert approvals.cancel_request(db, ORG, REQUESTER, request.id, NOW).state == "cancelled"
    with pytest.raises(AlreadyDecided):
        approvals.decide(db, ORG, request.id, APPROVER, approve=True, reason=None, now=NOW)


def test_a_second_request_for_an_existing_service_user_needs_an_owner(db: Database) -> None:
    first = ask(db)
    approvals.decide(db, ORG, first.id, APPROVER, approve=True, reason=None, now=NOW)
    with pytest.raises(InvalidField, match="not one of its owners"):
        ask(db, requester=OTHER)
    again = ask(db, scopes=["billing:read"])  # an owner; its permissions stay as they are
    assert again.service_user_id is not None and again.scopes == ["api:write"]
    second = approvals.decide(db, ORG, again.id, APPROVER, approve=True, reason=None, now=NOW)
    assert second.issued.info.name == f"ci-deployer-{again.id}"


def test_an_approval_after_an_undelivered_token_lapsed_but_before_the_sweep_succeeds(
    db: Database,
) -> None:
    first = ask(db)
    approvals.decide(db, ORG, first.id, APPROVER, approve=True, reason=None, now=NOW)
    # Never delivered (the server died); asked for again and approved after the delivery
    # deadline, before any sweep has revoked the first token: its name is free again.
    later = NOW + DELIVERY_DEADLINE + timedelta(seconds=1)
    again = approvals.request_service_token(
        db,
        ORG,
        REQUESTER,
        name="ci-deployer",
        purpose="p",
        scopes=["api:write"],
        justification="again",
        now=later,
    )
    second = approvals.decide(db, ORG, again.id, APPROVER, approve=True, reason=None, now=later)
    assert second.request.state == "approved" and second.issued.info.name == "ci-deployer"
    ended = [e for e in audit.events(db, ORG) if e.action == "token.revoked"]
    assert [e.detail.get("reason") for e in ended] == ["not delivered"]


def test_30_concurrent_approvals_leave_exactly_20_active_service_tokens(db: Database) -> None:
    # from 30 members: each may have only 5 requests pending at once
    requests = [ask(db, name=f"svc-{n:02d}", requester=f"U0REQ{n:02d}") for n in range(30)]

    def approve(request_id: int) -> str:
        try:
            approvals.decide(db, ORG, request_id, APPROVER, approve=True, reason=None, now=NOW)
            return "issued"
        except CapReached as full:
            assert full.cap == 20 and "limit is 20 per organization" in str(full)
            return "refused"

    with ThreadPoolExecutor(max_workers=30) as pool:
        outcomes = list(pool.map(approve, [r.id for r in requests]))
    assert outcomes.count("issued") == 20 and outcomes.count("refused") == 10
    assert [e.action for e in audit.events(db, ORG)].count("token.issued") == 20
    assert audit.verify_chain(db, ORG)


def test_a_service_token_outlives_its_requesters_deactivation(db: Database) -> None:
    from storage import members

    request = ask(db)
    decision = approvals.decide(db, ORG, request.id, APPROVER, approve=True, reason=None, now=NOW)
    shown(db, ORG, decision.issued)
    gone = members.Profile(REQUESTER, "req", "member", deleted=True)
    assert members.sync_member(db, ORG, gone, NOW).revoked == []
    assert usage.validate(db, decision.issued.secret, NOW) is not None


def test_pending_requests_expire_after_seven_days(db: Database) -> None:
    from datetime import timedelta

    request = ask(db)
    assert approvals.expire_requests(db, NOW + timedelta(days=6)) == []
    [expired] = approvals.expire_requests(db, NOW + timedelta(days=7))
    assert (expired.id, expired.state) == (request.id, "expired")
    assert approvals.expire_requests(db, NOW + timedelta(days=8)) == []
    with pytest.raises(AlreadyDecided, match="already expired"):
        approvals.decide(db, ORG, request.id, APPROVER, approve=True, reason=None, now=NOW)


def test_a_deactivated_requesters_pending_requests_are_cancelled(db: Database) -> None:
    from storage import members

    request = ask(db)
    gone = members.Profile(REQUESTER, "req", "member", deleted=True)
    synced = members.sync_member(db, ORG, gone, NOW)
    assert [(r.id, r.state, r.reason) for r in synced.cancelled] == [
        (request.id, "cancelled", "requester deactivated")
    ]
    assert members.sync_member(db, ORG, gone, NOW).cancelled == []


def test_the_report_counts_no_seat_or_active_token_before_it_is_shown(db: Database) -> None:
    tokens.issue_user_token(db, ORG, REQUESTER, "in-flight", NOW)  # not shown yet
    shown(db, ORG, tokens.issue_user_token(db, ORG, OTHER, "shown", NOW))
    report = reports.report(db, ORG, NOW)
    assert report.seats == 1
    assert report.tokens["user"] == {"active": 1, "being delivered": 1}
    late = reports.report(db, ORG, NOW + DELIVERY_DEADLINE)  # never shown in time
    assert late.tokens["user"] == {"active": 1, "revoked": 1}
