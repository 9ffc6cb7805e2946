"""Webhook endpoints and the events queued for them: which audit events become which
webhook events, queued in the same transaction whichever way the event is recorded,
for the endpoints of that organization alone; and what an endpoint's URL may be."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bot import webhooks as bot_webhooks
from storage import approvals, audit, outbox, sweep, tokens, webhooks
from storage.db import Database, run
from storage.errors import InvalidField, NotAllowed, WebhookNotFound
from storage.models import NoticeKind, OutboxStatus
from storage.orgs import lock_org
from storage.webhook_events import EVENT_TYPES, hook_params
from tests.conftest import NOW, shown

ORG, OTHER_ORG = "T0ORG", "T0OTHER"
ALICE, BOB, ADA = "U0ALICE", "U0BOB", "U0ADA"


def endpoint(
    db: Database, url: str = "https://hooks.example.com/tb", org: str = ORG, **kw: Any
) -> webhooks.NewEndpoint:
    return webhooks.add_endpoint(db, org, ADA, url=url, events=kw.get("events"), now=NOW)


def queued(db: Database) -> list[tuple[int, str, dict[str, Any]]]:
    """The webhook messages owed: (endpoint, event type, data), oldest first."""
    with db.read() as session:
        rows = session.execute(
            sa.select(outbox.OUTBOX.c.payload)
            .where(outbox.OUTBOX.c.kind == NoticeKind.WEBHOOK)
            .order_by(outbox.OUTBOX.c.id)
        ).scalars()
        return [(p["endpoint"], p["event"]["type"], p["event"]["data"]) for p in rows]


def issue(db: Database, name: str, user: str = ALICE, org: str = ORG) -> tokens.IssuedToken:
    return shown(db, org, tokens.issue_user_token(db, org, user, name, NOW))


# -- which audit events are webhook events -------------------------------------------------

USER, SERVICE = {"kind": "user"}, {"kind": "service"}


@pytest.mark.parametrize(
    ("action", "subject", "detail", "expected"),
    [
        ("token.delivered", "token:7", USER, ("token.created", "active")),
        ("token.issued", "token:7", SERVICE, ("token.created", "active")),
        (
            "token.revoked",
            "token:7",
            {**USER, "reason": "revoked by owner"},
            ("token.revoked", "revoked"),
        ),
        (
            "token.expired",
            "token:7",
            {**SERVICE, "reason": "inactive"},
            ("token.expired", "expired"),
        ),
        ("token.rotated", "token:7", USER, ("token.rotated", "active")),
        ("token.leaked", "token:7", USER, ("token.leaked", "revoked")),
        (
            "token.revoked",
            "token:7",
            {**SERVICE, "reason": "not delivered"},
            ("token.revoked", "revoked"),
        ),
        (
            "approval.approved",
            "request:3",
            {"service_user": "ci", "token": 7},
            ("request.decided", None),
        ),
        ("approval.denied", "request:3", {"service_user": "ci"}, ("request.decided", None)),
    ],
)
def test_audit_actions_map_to_webhook_events(
    action: str, subject: str, detail: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    params = hook_params(action, subject, ADA, detail, NOW)
    assert params is not None
    assert (params["hook_type"], params.get("hook_state")) == expected
    assert params["hook_id"].startswith("evt_")
    assert params["hook_at"] == "2026-11-28T12:00:00+00:00"


@pytest.mark.parametrize(
    ("action", "subject", "detail"),
    [
        ("token.issued", "token:7", USER),  # not valid until shown: token.delivered says so
        ("token.delivered", "token:7", SERVICE),  # announced when it was issued
        ("token.revoked", "token:7", {**USER, "reason": "not delivered"}),  # never announced
        ("token.reminder", "token:7", USER),
        ("token.kept", "token:7", USER),
        ("approval.requested", "request:3", {}),
        ("approval.cancelled", "request:3", {}),
        ("webhook.added", "webhook:1", {}),
        ("token.revoked", "token:x", USER),
    ],
)
def test_other_audit_actions_are_no_webhook_event(
    action: str, subject: str, detail: dict[str, Any]
) -> None:
    assert hook_params(action, subject, ADA, detail, NOW) is None


def test_each_event_gets_its_own_idempotency_key() -> None:
    keys = {hook_params("token.leaked", "token:1", ADA, USER, NOW)["hook_id"] for _ in range(50)}  # type: ignore[index]
    assert len(keys) == 50


# -- queued with the change, whichever way it is recorded ---------------------------------


def test_a_token_delivered_by_the_quick_write_is_announced_to_every_endpoint(
    db: Database,
) -> None:
    first, second = endpoint(db), endpoint(db, "https://other.example.com/")
    issued = issue(db, "ci")
    message = {
        "token_id": issued.info.id,
        "name": "ci",
        "hint": issued.info.hint,
        "kind": "user",
        "owner": ALICE,
        "state": "active",
        "reason": None,
    }
    assert queued(db) == [
        (first.info.id, "token.created", message),
        (second.info.id, "token.created", message),
    ]


async def test_the_quick_write_on_the_event_loop_queues_the_same(db: Database) -> None:
    endpoint(db)
    issued = await run(tokens.issue_user_token, db, ORG, ALICE, "ci", NOW)
    assert queued(db) == []  # issued, but not valid until shown
    assert await run(tokens.mark_delivered, db, ORG, issued.info.id, NOW, "test") is not None
    [(_, kind, data)] = queued(db)
    assert (kind, data["token_id"], data["owner"]) == ("token.created", issued.info.id, ALICE)


def test_a_delivery_that_does_not_happen_announces_nothing(db: Database) -> None:
    endpoint(db)
    issued = issue(db, "ci")
    assert tokens.mark_delivered(db, ORG, issued.info.id, NOW, "again") is None
    assert [kind for _, kind, _ in queued(db)] == ["token.created"]


def test_revoke_and_sweep_expiry_are_announced(db: Database) -> None:
    endpoint(db)
    one, two = issue(db, "one"), issue(db, "two")
    tokens.revoke_token(db, ORG, ALICE, one.info.id, NOW)
    sweep.sweep(db, NOW + timedelta(days=31))  # ends "two" with record_all
    events = [(kind, data["name"], data["state"], data["reason"]) for _, kind, data in queued(db)]
    assert events[2:] == [
        ("token.revoked", "one", "revoked", "revoked by owner"),
        ("token.expired", "two", "expired", "inactive"),
    ]
    assert two.info.id == queued(db)[3][2]["token_id"]


def test_a_personal_token_never_shown_is_never_announced(db: Database) -> None:
    endpoint(db)
    tokens.issue_user_token(db, ORG, ALICE, "lost", NOW)
    sweep.sweep(db, NOW + timedelta(minutes=10))  # revoked as not delivered
    assert queued(db) == []


def test_a_decision_and_the_service_token_it_issues_are_announced(db: Database) -> None:
    endpoint(db)
    request = approvals.request_service_token(
        db,
        ORG,
        ALICE,
        name="ci-deployer",
        purpose="deploys",
        scopes=["api:read"],
        justification="CI",
        now=NOW,
    )
    decision = approvals.decide(db, ORG, request.id, BOB, approve=True, reason=None, now=NOW)
    assert decision.issued is not None
    created, decided = queued(db)
    assert created[1:] == (
        "token.created",
        {
            "token_id": decision.issued.info.id,
            "name": "ci-deployer",
            "hint": decision.issued.info.hint,
            "kind": "service",
            "owner": "ci-deployer",
            "state": "active",
            "reason": None,
        },
    )
    assert decided[1:] == (
        "request.decided",
        {
            "request_id": request.id,
            "decision": "approved",
            "decider": BOB,
            "service_user": "ci-deployer",
            "token_id": decision.issued.info.id,
        },
    )
    denied = approvals.request_service_token(
        db,
        ORG,
        ALICE,
        name="billing-bot",
        purpose="bills",
        scopes=["api:read"],
        justification="invoices",
        now=NOW,
    )
    approvals.decide(db, ORG, denied.id, BOB, approve=False, reason="not now", now=NOW)
    assert queued(db)[-1][2]["decision"] == "denied"


def test_an_endpoint_hears_only_its_events_its_organizations_and_nothing_once_removed(
    db: Database,
) -> None:
    revoked_only = endpoint(db, events=["token.revoked"])
    removed = endpoint(db, "https://removed.example.com/")
    endpoint(db, "https://other-org.example.com/", org=OTHER_ORG)
    webhooks.remove_endpoint(db, ORG, ADA, removed.info.id, NOW)
    issued = issue(db, "ci")
    tokens.revoke_token(db, ORG, ALICE, issued.info.id, NOW)
    assert [(e, kind) for e, kind, _ in queued(db)] == [(revoked_only.info.id, "token.revoked")]


def test_nothing_is_queued_when_the_change_is_refused(db: Database) -> None:
    endpoint(db)
    issued = issue(db, "ci")
    before = queued(db)
    with pytest.raises(NotAllowed):
        tokens.revoke_token(db, ORG, BOB, issued.info.id, NOW)
    with pytest.raises(RuntimeError), db.write() as session:
        org = lock_org(session, ORG, NOW)
        audit.record(
            session,
            org,
            actor=ALICE,
            action="token.leaked",
            subject=f"token:{issued.info.id}",
            now=NOW,
            detail=USER,
        )
        raise RuntimeError("the transaction fails after the event was recorded")
    assert queued(db) == before


def test_queued_messages_are_claimed_like_any_other(db: Database) -> None:
    new = endpoint(db)
    issue(db, "ci")
    [message] = outbox.claim_due(db, NOW, [NoticeKind.WEBHOOK])
    assert message.org == ORG and message.payload["endpoint"] == new.info.id
    assert message.payload["event"]["org"] == ORG and message.token is None
    outbox.mark_sent(db, message, NOW)
    with db.read() as session:
        status = session.execute(sa.select(outbox.OUTBOX.c.status)).scalar_one()
    assert status == OutboxStatus.SENT


# -- endpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allow_loopback", "said"),
    [
        (None, False, "Enter the endpoint's URL"),
        ("   ", False, "Enter the endpoint's URL"),
        (["https://a.example.com/"], False, "Enter the endpoint's URL"),
        ("http://hooks.example.com/", True, "Use an https:// URL"),
        ("http://127.0.0.1:8080/", False, "Use an https:// URL"),
        ("http://10.0.0.1/", True, "Use an https:// URL"),
        ("https://alice@hooks.example.com/", False, "Leave the user name and password out"),
        ("https://:pw@hooks.example.com/", False, "Leave the user name and password out"),
        ("https://hooks.example.com/" + "x" * 1975, False, "at most 2,000 characters"),
        ("hooks.example.com/tb", False, "not a URL"),
        ("ftp://hooks.example.com/", False, "not a URL"),
        ("https:///tb", False, "not a URL"),
        ("https://hooks..example.com/", False, "not a URL"),
        ("https://hooks.example.com:0/", False, "not a URL"),
        ("https://hooks.example.com/a b", False, "not a URL"),
        ("https://hooks.example.com/\x00", False, "not a URL"),
        # The services beside tokenbot: never an endpoint.
        ("https://localhost/hooks", False, "not sent to this network's own hosts"),
        ("https://127.0.0.1/hooks", False, "not sent to this network's own hosts"),
        ("https://[::1]/hooks", False, "not sent to this network's own hosts"),
        ("https://10.0.0.8/hooks", True, "not sent to this network's own hosts"),
        ("https://192.168.1.20/hooks", False, "not sent to this network's own hosts"),
        ("https://169.254.169.254/latest/meta-data", True, "not sent to this network's own"),
        ("https://[fd00::1]/hooks", False, "not sent to this network's own hosts"),
        ("https://192.0.2.10/hooks", False, "not sent to this network's own hosts"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_sentence(
    url: object, allow_loopback: bool, said: str
) -> None:
    with pytest.raises(InvalidField, match=said) as refused:
        webhooks.validate_url(url, allow_loopback=allow_loopback)
    assert refused.value.field == "url"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/tokenbot?team=platform",
        "https://hooks.example.com:8443/",
        "https://93.184.216.34/hooks",
        "https://[2606:4700:4700::1111]/hooks",
        "https://bücher.example/hooks",
        "https://hooks.example.com/" + "x" * 1974,  # 2,000 characters
    ],
)
def test_good_urls_are_taken_as_typed(url: str) -> None:
    assert webhooks.validate_url(f"  {url} ", allow_loopback=False) == url


async def test_a_name_that_resolves_to_an_internal_address_is_sent_nothing() -> None:
    assert await bot_webhooks._resolves_inside("https://localhost/hooks", False)
    assert not await bot_webhooks._resolves_inside("https://localhost/hooks", True)
    assert not await bot_webhooks._resolves_inside("https://no-such-host.invalid/", False)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hooks", "http://127.1.2.3/", "http://[::1]:9/", "http://LocalHost/"],
)
def test_plain_http_on_loopback_only_when_allowed(url: str) -> None:
    assert webhooks.validate_url(url, allow_loopback=True) == url
    with pytest.raises(InvalidField, match="https"):
        webhooks.validate_url(url, allow_loopback=False)


def test_events_default_to_all_and_keep_their_order() -> None:
    assert webhooks.validate_events(None) == list(EVENT_TYPES)
    assert webhooks.validate_events([]) == list(EVENT_TYPES)
    assert webhooks.validate_events(["request.decided", "token.created"]) == [
        "token.created",
        "request.decided",
    ]
    with pytest.raises(InvalidField, match=r"no such event: token\.stolen") as refused:
        webhooks.validate_events(["token.stolen"])
    assert refused.value.field == "events"
    with pytest.raises(InvalidField, match="Choose events"):
        webhooks.validate_events("token.created")


def test_an_endpoint_gets_a_fresh_secret_recorded_by_host_only(db: Database) -> None:
    first = endpoint(db, "https://hooks.example.com/tb?key=receiver-secret")
    second = endpoint(db, "https://hooks.example.com/other")
    assert first.secret.startswith("whsec_") and len(first.secret) == 70
    assert first.secret != second.secret
    assert first.secret not in repr(first)
    assert [e.id for e in second.endpoints] == [first.info.id, second.info.id]
    [added, _] = [e for e in audit.events(db, ORG) if e.action == "webhook.added"]
    assert added.detail == {"host": "hooks.example.com", "events": list(EVENT_TYPES)}
    exported = "\n".join(audit.export_jsonl(db, ORG))
    assert first.secret not in exported and "receiver-secret" not in exported


def test_at_most_ten_endpoints_and_no_url_twice(db: Database) -> None:
    for n in range(webhooks.MAX_ENDPOINTS):
        endpoint(db, f"https://hooks{n}.example.com/")
    with pytest.raises(InvalidField, match="the limit is 10"):
        endpoint(db, "https://one-more.example.com/")
    webhooks.remove_endpoint(db, ORG, ADA, webhooks.list_endpoints(db, ORG)[0].id, NOW)
    with pytest.raises(InvalidField, match="endpoint already"):
        endpoint(db, "https://hooks1.example.com/")
    endpoint(db, "https://hooks0.example.com/")  # removed, so it may come back
    assert len(webhooks.list_endpoints(db, ORG)) == 10


def test_removing_forgets_the_secret_and_happens_once_in_its_own_organization(
    db: Database,
) -> None:
    new = endpoint(db)
    with pytest.raises(WebhookNotFound):
        webhooks.remove_endpoint(db, OTHER_ORG, ADA, new.info.id, NOW)
    assert webhooks.delivery_target(db, ORG, new.info.id) is not None
    assert webhooks.delivery_target(db, OTHER_ORG, new.info.id) is None
    webhooks.remove_endpoint(db, ORG, ADA, new.info.id, NOW)
    with pytest.raises(WebhookNotFound):
        webhooks.remove_endpoint(db, ORG, ADA, new.info.id, NOW)
    assert webhooks.list_endpoints(db, ORG) == []
    assert webhooks.delivery_target(db, ORG, new.info.id) is None
    with db.read() as session:
        assert session.execute(sa.select(webhooks.ENDPOINT.c.secret)).scalar_one() == ""
