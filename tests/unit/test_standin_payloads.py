"""The stand-in's client sends what Slack sends: same fields as Slack's own examples."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from bot.blocks.tokens import generate_modal
from bot.standin import Call, SlackClient, SlackStandin
from tests.conftest import FIXTURES


def _client() -> SlackClient:
    standin = SlackStandin()
    standin.base_url = "http://127.0.0.1:9"
    return SlackClient("http://127.0.0.1:9", "secret", standin)


def test_slash_command_body_has_slacks_fields() -> None:
    real = parse_qs((FIXTURES / "slash_command__org_level_app__java_sdk.form.txt").read_text())
    ours = parse_qs(_client().command_body("/token", "list", "U1"))
    assert set(real) - {"enterprise_id", "enterprise_name"} <= set(ours)


def test_signature_is_what_slack_sdk_verifies() -> None:
    from slack_sdk.signature import SignatureVerifier

    client = _client()
    headers = client.sign("a=b", timestamp=1_700_000_000)
    verifier = SignatureVerifier("secret", clock=type("C", (), {"now": lambda self: 1.7e9})())
    assert verifier.is_valid(
        "a=b", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )


def test_interactivity_payload_keys_match_slacks() -> None:
    real_action = json.loads((FIXTURES / "block_actions__bolt_python_fixture.json").read_text())
    real_view = json.loads((FIXTURES / "view_submission__bolt_python_fixture.json").read_text())
    client = _client()
    sent: list[dict[str, Any]] = []

    async def capture(body: str, content_type: str) -> None:
        assert content_type == "application/x-www-form-urlencoded"
        sent.append(json.loads(parse_qs(body)["payload"][0]))

    client.post = capture  # type: ignore[method-assign,assignment]
    button = {"type": "button", "action_id": "a", "value": "1", "text": {"type": "plain_text"}}
    message = Call(
        "response_url", {"blocks": [{"type": "actions", "block_id": "b", "elements": [button]}]}
    )
    opened = client.standin._views_open({"view": generate_modal("", "{}")})
    asyncio.run(client.click(message, "a", "U1"))
    asyncio.run(client.submit_view(opened["view"]["id"], "U1", {"b": {"a": "x"}}))
    action, view = sent
    assert set(real_action) <= set(action)
    assert set(real_action["actions"][0]) <= set(action["actions"][0])
    assert set(real_view) <= set(view)
    assert set(real_view["view"]) <= set(view["view"])
    assert view["view"]["state"]["values"] == {
        "b": {"a": {"type": "plain_text_input", "value": "x"}}
    }
