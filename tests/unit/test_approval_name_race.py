"""A new service user's name taken between the request and its approval: the approval is
refused in words and the request closed, never a database error."""

from __future__ import annotations

from storage import approvals, audit
from storage.db import Database
from tests.conftest import NOW
from tests.unit.test_approvals import APPROVER, ORG, OTHER, ask


def test_approving_a_request_whose_name_was_taken_closes_it_with_a_sentence(
    db: Database,
) -> None:
    first = ask(db)  # both ask for a new ci-deployer
    second = ask(db, requester=OTHER)
    approvals.decide(db, ORG, second.id, APPROVER, approve=True, reason=None, now=NOW)
    decision = approvals.decide(db, ORG, first.id, APPROVER, approve=True, reason=None, now=NOW)
    assert decision.issued is None
    assert decision.refusal is not None and "the name ci-deployer was given to another" in (
        decision.refusal
    )
    closed = approvals.get_request(db, ORG, first.id)
    assert closed.state == "cancelled" and "was given to another service user" in (
        closed.reason or ""
    )
    actions = [e.action for e in audit.events(db, ORG)]
    assert actions.count("token.issued") == 1 and actions.count("approval.cancelled") == 1
    assert audit.verify_chain(db, ORG)
