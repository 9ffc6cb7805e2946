"""The HTTP edge: signatures, stale requests, malformed bodies, health, URL verification."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from bot.standin.client import http_client
from bot.standin.harness import Running
from storage import tokens
from tests.conftest import FIXTURES
from tests.e2e.conftest import ALICE
from tests.e2e.flows import post_fixture_command

FORM = "application/x-www-form-urlencoded"


async def test_a_bad_signature_is_refused_and_nothing_happens(env: Running) -> None:
    body = env.slack.command_body("/token", "help", ALICE)
    headers = {**env.slack.sign(body), "Content-Type": FORM}
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    response = await env.slack.http.post(env.slack.events_url, content=body, headers=headers)
    assert response.status_code == 401
    assert "/token" not in response.text  # the command was not answered


async def test_a_missing_signature_is_refused(env: Running) -> None:
    body = env.slack.command_body("/token", "help", ALICE)
    response = await env.slack.http.post(
        env.slack.events_url, content=body, headers={"Content-Type": FORM}
    )
    assert response.status_code == 401


async def test_a_request_older_than_five_minutes_is_refused(env: Running) -> None:
    body = env.slack.command_body("/token", "help", ALICE)
    stale = await env.slack.post(body, FORM, timestamp=int(time.time()) - 5 * 60 - 5)
    assert stale.status_code == 401
    fresh = await env.slack.post(body, FORM, timestamp=int(time.time()) - 60)
    assert fresh.status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("payload=%7Bnot-json", FORM),
        ("payload=" + quote(json.dumps([1, 2])), FORM),
        ("{not json", "application/json"),
        ("", FORM),
        ("\x00\x01garbage", "application/octet-stream"),
        ("payload=" + quote(json.dumps({"type": "block_actions"})), FORM),
        ("command=%2Ftoken&text=list", FORM),  # a command without user or team
    ],
)
async def test_malformed_signed_bodies_get_a_4xx_not_a_crash(
    env: Running, body: str, content_type: str
) -> None:
    response = await env.slack.post(body, content_type)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert "Traceback" not in response.text


async def test_url_verification_answers_the_challenge(env: Running) -> None:
    event = json.loads((FIXTURES / "url_verification__slack_docs_example.json").read_text())
    response = await env.slack.post(json.dumps(event), "application/json")
    assert response.status_code == 200
    assert response.json() == {"challenge": event["challenge"]}


async def test_healthz_says_the_process_serves(env: Running) -> None:
    async with http_client() as http:
        response = await http.get(env.url + "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_the_real_slash_command_payload_is_understood(env: Running) -> None:
    """Slack's own example body, with only the command and text changed, then signed."""
    response = await post_fixture_command(
        env, "slash_command__bolt_python_fixture.form.txt", "list"
    )
    assert response.status_code == 200
    assert "no active tokens" in response.text
    assert response.json()["response_type"] == "ephemeral"
    assert tokens.list_user_tokens(env.db, "T111", "W111", env.deps.clock()).tokens == []
