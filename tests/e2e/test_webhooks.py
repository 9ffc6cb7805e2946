"""Outbound webhooks: admins add endpoints in Slack; token events reach them signed, at
least once, through the outbox. A receiver on loopback checks every signature the way
Slack's own requests are checked (slack_sdk's SignatureVerifier)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import pytest
import sqlalchemy as sa
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot import webhooks as sending
from bot.jobs import sweep_and_deliver
from bot.notify import deliver
from bot.standin.harness import Clock, Running
from bot.standin.server import Call, free_port, serve_in_background
from storage import audit, outbox, tokens, webhooks
from storage.models import OutboxStatus
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import eventually, generate, run_command, until_valid
from tests.e2e.gateways import readme_block
from tests.e2e.test_secrets import kept_by_slack
from tests.e2e.test_service_requests import approve, requested

ORG = "T0TOKENBOT"
ADA = "U0ADA"  # a workspace admin
SECRET = re.compile(r"whsec_[0-9a-f]{64}")
ALL_EVENTS = [
    "token.created",
    "token.rotated",
    "token.revoked",
    "token.expired",
    "token.leaked",
    "request.decided",
]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def signed_with(self, secret: str) -> bool:
        """Slack's own check, with tokenbot's header names: the signature matches and the
        timestamp is within five minutes of now."""
        return SignatureVerifier(secret).is_valid(
            self.body,
            self.headers["x-tokenbot-request-timestamp"],
            self.headers["x-tokenbot-signature"],
        )


@dataclass
class Receiver:
    """An endpoint on loopback that records what it is sent, and answers each request
    with the next of ``answers`` (status, headers), then 200."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        self.received.append(Received(dict(request.headers), await request.body()))
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return Response(status_code=status, headers=headers)

    def types(self) -> list[str]:
        return [r.event["type"] for r in self.received]


@pytest.fixture(autouse=True)
def _loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver is plain http on loopback, which only this setting allows."""
    monkeypatch.setenv("TOKENBOT_WEBHOOKS_ALLOW_LOOPBACK", "true")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    port = free_port()
    found.url = f"http://127.0.0.1:{port}/hooks/tokenbot?team=platform"
    app = Starlette(routes=[Route("/hooks/tokenbot", found.hook, methods=["POST"])])
    async with serve_in_background(app, port):
        yield found


@pytest.fixture
def admin(env: Running) -> str:
    env.standin.add_user(ADA, "ada", is_admin=True)
    return ADA


async def open_add_modal(env: Running, user: str, listing: Call) -> str:
    """Click Add endpoint on ``listing``; the id of the modal it opened."""
    mark = len(env.standin.calls)
    response = await env.slack.click(listing, "add_webhook", user)
    assert response.status_code == 200
    opened = await env.standin.wait_for("views.open", after=mark)
    assert opened.view["callback_id"] == "add_webhook_endpoint"
    return str(opened.result["view"]["id"])


async def submit_url(
    env: Running, view_id: str, user: str, url: str, events: list[str] | None = None
) -> httpx.Response:
    """Submit the Add endpoint modal with ``url`` typed and, if given, ``events`` ticked."""
    body = env.slack.view_submission_body(view_id, user, {"url": {"value": url}})
    if events is not None:  # checkboxes carry selected_options, not a value
        payload = json.loads(parse_qs(body)["payload"][0])
        payload["view"]["state"]["values"]["events"] = {
            "value": {
                "type": "checkboxes",
                "selected_options": [
                    {"value": e, "text": {"type": "plain_text", "text": e}} for e in events
                ],
            }
        }
        body = "payload=" + quote(json.dumps(payload))
    return await env.slack.post(body, "application/x-www-form-urlencoded")


async def add_endpoint(
    env: Running, url: str, events: list[str] | None = None, user: str = ADA
) -> tuple[str, Call]:
    """An admin adds ``url`` through ``/token webhooks``: the secret, and the one
    message that showed it."""
    listing = await run_command(env, "webhooks", user)
    view_id = await open_add_modal(env, user, listing)
    mark = len(env.standin.calls)
    response = await submit_url(env, view_id, user, url, events)
    assert response.status_code == 200 and response.content == b"", response.text
    shown = await env.standin.wait_for(
        "response_url", lambda c: "whsec_" in c.text_content(), after=mark
    )
    [secret] = SECRET.findall(shown.text_content())
    return secret, shown


async def send_webhooks(env: Running) -> int:
    """What the deliverer does every few seconds: send the webhook messages due."""
    return await deliver(env.deps, env.slack_app_client, sending.KINDS)


def endpoint_ids(env: Running) -> list[int]:
    return [e.id for e in webhooks.list_endpoints(env.db, ORG)]


def webhook_messages(env: Running) -> list[Any]:
    with env.db.read() as session:
        query = sa.select(outbox.OUTBOX).where(outbox.OUTBOX.c.kind == "webhook")
        return list(session.execute(query.order_by(outbox.OUTBOX.c.id)).all())


# -- adding, listing, removing ---------------------------------------------------------


async def test_an_admin_adds_an_endpoint_and_sees_its_secret_once_ephemerally(
    env: Running, admin: str, receiver: Receiver
) -> None:
    empty = await run_command(env, "webhooks", admin)
    assert empty.args["response_type"] == "ephemeral"
    assert "No webhook endpoints yet" in empty.text_content()

    secret, shown = await add_endpoint(env, receiver.url)

    assert shown.args["response_type"] == "ephemeral" and not kept_by_slack(shown)
    carrying = [c for c in env.standin.calls if secret in c.text_content()]
    assert carrying == [shown]
    listing = await run_command(env, "webhooks", admin)
    text = listing.text_content()
    assert secret not in text
    assert "127.0.0.1" in text and "every event" in text and "no delivery yet" in text
    assert f"<@{ADA}>" in text and "(1 of 10)" in text
    [remove] = [b["accessory"] for b in listing.blocks if b.get("accessory", {}).get("action_id")]
    assert remove["action_id"] == "remove_webhook" and remove["confirm"]["title"]["text"]
    [endpoint] = webhooks.list_endpoints(env.db, ORG)
    assert (endpoint.url, endpoint.events, endpoint.created_by) == (receiver.url, ALL_EVENTS, ADA)
    [added] = [e for e in audit.events(env.db, ORG) if e.action == "webhook.added"]
    assert added.actor == ADA and added.detail == {"host": "127.0.0.1", "events": ALL_EVENTS}


async def test_remove_asks_to_confirm_then_the_endpoint_is_told_nothing_more(
    env: Running, admin: str, receiver: Receiver
) -> None:
    await add_endpoint(env, receiver.url)
    await generate(env, ALICE, "ci")  # token.created, owed to the endpoint
    listing = await run_command(env, "webhooks", admin)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "remove_webhook", admin)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert answer.args["replace_original"] is True
    assert "Removed the endpoint at `127.0.0.1`" in answer.text_content()
    assert "No webhook endpoints yet" in answer.text_content()
    assert endpoint_ids(env) == []

    assert await send_webhooks(env) == 0
    assert receiver.received == []
    assert [m.status for m in webhook_messages(env)] == [OutboxStatus.SKIPPED]
    [removed] = [e for e in audit.events(env.db, ORG) if e.action == "webhook.removed"]
    assert removed.detail == {"host": "127.0.0.1"}


async def test_an_endpoint_hears_only_the_events_it_chose(
    env: Running, admin: str, receiver: Receiver
) -> None:
    await add_endpoint(env, receiver.url, events=["token.revoked"])
    assert webhooks.list_endpoints(env.db, ORG)[0].events == ["token.revoked"]
    await generate(env, ALICE, "ci")
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    await env.standin.wait_for("response_url", after=mark)
    await send_webhooks(env)
    assert receiver.types() == ["token.revoked"]


async def test_the_list_offers_no_add_at_the_limit_and_an_eleventh_is_refused(
    env: Running, admin: str, receiver: Receiver
) -> None:
    for n in range(webhooks.MAX_ENDPOINTS - 1):
        webhooks.add_endpoint(
            env.db,
            ORG,
            ADA,
            url=f"https://hooks{n}.example.com/",
            events=None,
            now=env.deps.clock(),
        )
    listing = await run_command(env, "webhooks", admin)
    view_id = await open_add_modal(env, admin, listing)  # the tenth: still room
    assert (await submit_url(env, view_id, admin, receiver.url)).content == b""
    full = await run_command(env, "webhooks", admin)
    assert "(10 of 10)" in full.text_content() and "The limit is 10" in full.text_content()
    assert all(
        e.get("action_id") != "add_webhook" for b in full.blocks for e in b.get("elements", [])
    )
    response = await submit_url(env, view_id, admin, "https://one-more.example.com/")
    assert "the limit is 10" in response.json()["errors"]["url"]
    assert len(endpoint_ids(env)) == 10


async def test_an_endpoint_whose_secret_could_not_be_shown_is_removed_at_once(
    env: Running, admin: str, receiver: Receiver
) -> None:
    listing = await run_command(env, "webhooks", admin)
    view_id = await open_add_modal(env, admin, listing)
    env.standin.fail_next("response_url", status=500, times=3)
    env.standin.fail_next("chat.postEphemeral", status=500, times=3)
    env.standin.fail_next("conversations.open", error="user_not_found")
    mark = len(env.standin.calls)
    response = await submit_url(env, view_id, admin, receiver.url)
    assert response.status_code == 200 and response.content == b""
    await env.standin.wait_for("conversations.open", after=mark)
    await eventually(
        lambda: [e.action for e in audit.events(env.db, ORG)],
        lambda actions: actions[-2:] == ["webhook.added", "webhook.removed"],
    )
    assert endpoint_ids(env) == []
    await generate(env, ALICE, "ci")
    assert webhook_messages(env) == []


# -- refusals ----------------------------------------------------------------------------

REFUSED_URLS = [
    ("http://example.com/hooks", "Use an https:// URL"),
    ("https://user:password@example.com/hooks", "Leave the user name and password out"),
    ("https://example.com/" + "a" * 2000, "Use at most 2,000 characters"),
    ("not a url", "That is not a URL"),
    ("https://exa mple.com/", "That is not a URL"),
    ("https://example.com:99999/", "That is not a URL"),
    ("", "Enter the endpoint's URL"),
]


@pytest.mark.parametrize(("url", "said"), REFUSED_URLS, ids=lambda v: str(v)[:24])
async def test_a_bad_url_is_refused_inline_and_nothing_is_added(
    env: Running, admin: str, url: str, said: str
) -> None:
    listing = await run_command(env, "webhooks", admin)
    view_id = await open_add_modal(env, admin, listing)
    mark = len(env.standin.calls)
    response = await submit_url(env, view_id, admin, url)
    answer = response.json()
    assert answer["response_action"] == "errors" and said in answer["errors"]["url"]
    assert endpoint_ids(env) == []
    assert not any("whsec_" in c.text_content() for c in env.standin.calls[mark:])
    assert not [e for e in audit.events(env.db, ORG) if e.action == "webhook.added"]


async def test_plain_http_on_loopback_is_refused_unless_the_setting_allows_it(
    env: Running, admin: str, receiver: Receiver
) -> None:
    env.deps.settings.webhooks_allow_loopback = False
    listing = await run_command(env, "webhooks", admin)
    view_id = await open_add_modal(env, admin, listing)
    response = await submit_url(env, view_id, admin, receiver.url)
    assert "Use an https:// URL" in response.json()["errors"]["url"]
    assert endpoint_ids(env) == []


async def test_an_unknown_event_is_refused_on_its_field(env: Running, admin: str) -> None:
    listing = await run_command(env, "webhooks", admin)
    view_id = await open_add_modal(env, admin, listing)
    response = await submit_url(
        env, view_id, admin, "https://example.com/hooks", ["token.created", "token.stolen"]
    )
    assert "no such event: token.stolen" in response.json()["errors"]["events"]
    assert endpoint_ids(env) == []


async def test_a_member_who_is_not_an_admin_is_refused_everywhere_and_nothing_changes(
    env: Running, admin: str, receiver: Receiver
) -> None:
    await add_endpoint(env, receiver.url)
    before = endpoint_ids(env)
    refusal = "Only workspace admins and owners can manage webhooks."

    answer = await run_command(env, "webhooks", BOB)
    assert refusal in answer.text_content() and receiver.url not in answer.text_content()

    listing = await run_command(env, "webhooks", admin)  # the admin's list, clicked by Bob
    mark = len(env.standin.calls)
    await env.slack.click(listing, "add_webhook", BOB)
    told = await env.standin.wait_for("response_url", after=mark)
    assert refusal in told.text_content()
    await env.slack.click(listing, "remove_webhook", BOB)
    told = await env.standin.wait_for("response_url", lambda c: c is not told, after=mark)
    assert refusal in told.text_content() and receiver.url not in told.text_content()
    assert not env.standin.calls_to("views.open")[1:]  # only the admin's modal ever opened

    view_id = await open_add_modal(env, admin, listing)  # the admin's modal, sent by Bob
    response = await submit_url(env, view_id, BOB, "https://bob.example.com/")
    assert response.json()["errors"]["url"] == refusal

    assert endpoint_ids(env) == before
    actions = [e.action for e in audit.events(env.db, ORG) if e.action.startswith("webhook.")]
    assert actions == ["webhook.added"]


# -- what endpoints are told -------------------------------------------------------------


async def test_a_generated_token_is_announced_signed_and_without_its_secret(
    env: Running, admin: str, receiver: Receiver
) -> None:
    secret, _ = await add_endpoint(env, receiver.url)
    token = await generate(env, ALICE, "ci deploy")

    assert await send_webhooks(env) == 1

    [got] = receiver.received
    assert got.signed_with(secret)
    assert not got.signed_with("whsec_" + "0" * 64)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == "tokenbot"
    event = got.event
    assert got.headers["idempotency-key"] == event["id"] and event["id"].startswith("evt_")
    [info] = tokens.list_user_tokens(env.db, ORG, ALICE, env.deps.clock()).tokens
    assert event["type"] == "token.created" and event["org"] == ORG
    assert event["data"] == {
        "token_id": info.id,
        "name": "ci deploy",
        "hint": info.hint,
        "kind": "user",
        "owner": ALICE,
        "state": "active",
        "reason": None,
    }
    assert token not in got.body.decode() and secret not in got.body.decode()
    listing = await run_command(env, "webhooks", admin)
    assert "last delivery: HTTP 200" in listing.text_content()
    assert await send_webhooks(env) == 0  # sent once


async def test_revoke_and_expiry_are_announced(
    env: Running, admin: str, receiver: Receiver
) -> None:
    clock = env.deps.clock = Clock()
    secret, _ = await add_endpoint(env, receiver.url)
    await generate(env, ALICE, "one")
    await generate(env, ALICE, "two")
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)  # "one"
    await env.standin.wait_for("response_url", after=mark)
    clock.advance(timedelta(days=31))
    await sweep_and_deliver(env.deps, env.slack_app_client)  # expires "two", sends it all

    # (Sent side by side: in any order. Each event says when it happened.)
    assert sorted(receiver.types()) == [
        "token.created",
        "token.created",
        "token.expired",
        "token.revoked",
    ]
    assert all(r.signed_with(secret) for r in receiver.received)
    by_type = {r.event["type"]: r.event["data"] for r in receiver.received}
    revoked, expired = by_type["token.revoked"], by_type["token.expired"]
    assert (revoked["name"], revoked["state"], revoked["reason"]) == (
        "one",
        "revoked",
        "revoked by owner",
    )
    assert (expired["name"], expired["state"], expired["reason"]) == ("two", "expired", "inactive")
    assert len({r.event["id"] for r in receiver.received}) == 4


async def test_an_approval_is_announced_as_a_decision_and_a_new_service_token(
    env: Running, admin: str, receiver: Receiver
) -> None:
    secret, _ = await add_endpoint(env, receiver.url)
    copies = await requested(env)  # Alice asks for ci-deployer; Bob and Carol approve
    mark = len(env.standin.calls)
    await approve(env, copies[0], BOB)
    shown = await env.standin.wait_for(
        "response_url", lambda c: "tbs_" in c.text_content(), after=mark
    )
    token = re.findall(r"tbs_\w+", shown.text_content())[0]
    await until_valid(env, token)

    await send_webhooks(env)

    by_type = {r.event["type"]: r for r in receiver.received}
    assert len(receiver.received) == 2
    assert sorted(by_type) == ["request.decided", "token.created"]
    assert all(r.signed_with(secret) for r in receiver.received)
    created = by_type["token.created"].event["data"]
    assert (created["kind"], created["owner"], created["name"]) == (
        "service",
        "ci-deployer",
        "ci-deployer",
    )
    decided = by_type["request.decided"].event["data"]
    assert decided["decision"] == "approved" and decided["decider"] == BOB
    assert decided["service_user"] == "ci-deployer"
    assert decided["token_id"] == created["token_id"]
    assert token not in b"".join(r.body for r in receiver.received).decode()


async def test_a_failed_delivery_is_sent_again_later_with_the_same_idempotency_key(
    env: Running, admin: str, receiver: Receiver
) -> None:
    clock = env.deps.clock = Clock()
    secret, _ = await add_endpoint(env, receiver.url)
    receiver.answers = [(500, {})]
    await generate(env, ALICE, "ci")

    assert await send_webhooks(env) == 0
    assert await send_webhooks(env) == 0  # not due again yet: the outbox's backoff
    assert len(receiver.received) == 1
    listing = await run_command(env, "webhooks", admin)
    assert "last delivery: HTTP 500" in listing.text_content()
    clock.advance(timedelta(minutes=1))
    assert await send_webhooks(env) == 1

    first, second = receiver.received
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.event == second.event
    assert first.signed_with(secret) and second.signed_with(secret)
    assert [m.status for m in webhook_messages(env)] == [OutboxStatus.SENT]


async def test_retry_after_is_respected(env: Running, admin: str, receiver: Receiver) -> None:
    clock = env.deps.clock = Clock()
    await add_endpoint(env, receiver.url)
    receiver.answers = [(429, {"Retry-After": "300"})]
    await generate(env, ALICE, "ci")
    await send_webhooks(env)
    clock.advance(timedelta(minutes=4))  # past the backoff, not past Retry-After
    assert await send_webhooks(env) == 0
    clock.advance(timedelta(minutes=1))
    assert await send_webhooks(env) == 1
    assert len(receiver.received) == 2


async def test_an_unreachable_endpoint_is_retried(env: Running, admin: str) -> None:
    clock = env.deps.clock = Clock()
    port = free_port()  # nothing listens there
    await add_endpoint(env, f"http://127.0.0.1:{port}/hooks")
    await generate(env, ALICE, "ci")
    assert await send_webhooks(env) == 0
    [message] = webhook_messages(env)
    assert message.status == OutboxStatus.PENDING and message.last_error.startswith("failed")
    assert message.next_attempt_at == clock.now + timedelta(minutes=1)


@pytest.mark.parametrize("status", [410, 400, 302])
async def test_an_endpoint_that_refuses_or_redirects_gets_the_event_once_as_the_dead_letter(
    env: Running, admin: str, receiver: Receiver, status: int
) -> None:
    clock = env.deps.clock = Clock()
    await add_endpoint(env, receiver.url)
    receiver.answers = [(status, {"Location": "https://elsewhere.example.com/"})]
    await generate(env, ALICE, "ci")
    await send_webhooks(env)
    clock.advance(timedelta(days=1))
    await send_webhooks(env)
    assert len(receiver.received) == 1
    [message] = webhook_messages(env)
    assert (message.status, message.last_error) == (OutboxStatus.FAILED, f"HTTP {status}")
    listing = await run_command(env, "webhooks", admin)
    assert f"last delivery: HTTP {status}" in listing.text_content()


async def test_the_secret_is_shown_nowhere_but_the_one_ephemeral_answer(
    env: Running, admin: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = env.deps.clock = Clock()
    receiver.answers = [(503, {})]
    secret, shown = await add_endpoint(env, receiver.url)
    await generate(env, ALICE, "ci")
    await send_webhooks(env)
    clock.advance(timedelta(minutes=1))
    await send_webhooks(env)
    listing = await run_command(env, "webhooks", admin)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "remove_webhook", admin)
    await env.standin.wait_for("response_url", after=mark)

    assert len(receiver.received) == 2
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert any(r.name == "bot.webhooks" for r in caplog.records)  # the capture works
    assert secret not in logged and "/hooks/tokenbot" not in logged  # nor the URL's path
    assert secret not in "\n".join(audit.export_jsonl(env.db, ORG))
    assert [c for c in env.standin.calls if secret in c.text_content()] == [shown]
    assert not kept_by_slack(shown)
    assert all(secret not in r.body.decode() for r in receiver.received)
    with env.db.read() as session:  # a removed endpoint's secret is forgotten
        kept = session.execute(sa.select(webhooks.ENDPOINT.c.secret)).scalars().all()
    assert kept == [""]


async def test_the_readmes_check_accepts_a_delivery_and_nothing_altered(
    env: Running, admin: str, receiver: Receiver
) -> None:
    namespace: dict[str, Any] = {}
    exec(
        readme_block("python", "def from_tokenbot"), namespace
    )  # the README's own snippet, as a reader runs it
    from_tokenbot = namespace["from_tokenbot"]
    secret, _ = await add_endpoint(env, receiver.url)
    await generate(env, ALICE, "ci")
    await send_webhooks(env)
    [got] = receiver.received
    headers = httpx.Headers(got.headers)  # as a framework gives them: any case

    assert from_tokenbot(secret, headers, got.body)
    assert not from_tokenbot("whsec_" + "0" * 64, headers, got.body)
    assert not from_tokenbot(secret, headers, got.body.replace(b"ci", b"cd"))
    stale = str(int(headers["x-tokenbot-request-timestamp"]) - 301)
    resigned = {**headers, "x-tokenbot-request-timestamp": stale}
    resigned["x-tokenbot-signature"] = sending.signature(secret, stale, got.body)
    assert not from_tokenbot(secret, httpx.Headers(resigned), got.body)
