"""A member may have only a few service-token requests pending at once (a per-organization
setting, 5 by default)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from storage import approvals
from storage.db import Database
from storage.errors import InvalidField
from storage.orgs import ORG as ORG_TABLE
from tests.conftest import NOW
from tests.unit.test_approvals import APPROVER, ORG, OTHER, REQUESTER, ask


def test_a_sixth_pending_request_is_refused_saying_the_limit(db: Database) -> None:
    for n in range(5):
        ask(db, name=f"svc-{n}")
    with pytest.raises(InvalidField) as refused:
        ask(db, name="svc-5")
    assert refused.value.field == "name"
    assert "5 requests waiting for a decision" in str(refused.value)
    assert "the limit is 5 per member" in str(refused.value)
    assert len(approvals.pending_requests(db, ORG)) == 5
    ask(db, name="svc-5", requester=OTHER)  # the limit is each member's own


def test_a_decided_cancelled_or_lapsed_request_no_longer_counts(db: Database) -> None:
    first, second, *_ = [ask(db, name=f"svc-{n}") for n in range(5)]
    approvals.decide(db, ORG, first.id, APPROVER, approve=True, reason=None, now=NOW)
    approvals.cancel_request(db, ORG, REQUESTER, second.id, NOW)
    ask(db, name="svc-5")
    ask(db, name="svc-6")
    with pytest.raises(InvalidField):
        ask(db, name="svc-7")
    later = NOW + timedelta(days=8)  # all past their time, whether or not a sweep ran
    approvals.request_service_token(
        db,
        ORG,
        REQUESTER,
        name="svc-7",
        purpose="p",
        scopes=["api:read"],
        justification="j",
        now=later,
    )


def test_the_limit_is_a_setting_of_the_organization(db: Database) -> None:
    ask(db, name="svc-0")
    with db.write() as session:
        session.execute(sa.update(ORG_TABLE).values(pending_request_cap=1))
    with pytest.raises(InvalidField, match="the limit is 1 per member"):
        ask(db, name="svc-1")


def test_concurrent_requests_cannot_pass_the_limit_together(db: Database) -> None:
    def request(n: int) -> str:
        try:
            ask(db, name=f"svc-{n:02d}")
            return "pending"
        except InvalidField:
            return "refused"

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(request, range(12)))
    assert outcomes.count("pending") == 5 and outcomes.count("refused") == 7
