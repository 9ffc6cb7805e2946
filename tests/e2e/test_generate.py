"""The Generate modal: inline validation and delivering the token once (R14, R15)."""

from __future__ import annotations

import json

import pytest

from bot.standin.harness import Running
from storage import audit, tokenformat, tokens
from tests.e2e.conftest import ALICE
from tests.e2e.flows import eventually, generate, open_generate_modal

ORG = "T0TOKENBOT"


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "Enter a name for the token."),
        ("    ", "Enter a name for the token."),
        ("x" * 65, "Use at most 64 characters (this name has 65)."),
        ("tab\there", "Use printable characters only"),
    ],
)
async def test_invalid_names_get_an_inline_error_and_nothing_is_issued(
    env: Running, name: str, error: str
) -> None:
    view_id = await open_generate_modal(env, ALICE)
    response = await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": name}})
    assert response.status_code == 200
    body = response.json()
    assert body["response_action"] == "errors"
    assert body["errors"]["token_name"].startswith(error)
    assert tokens.list_user_tokens(env.db, ORG, ALICE, env.deps.clock()).tokens == []


async def test_a_duplicate_name_in_any_case_gets_an_inline_error(env: Running) -> None:
    await generate(env, ALICE, "Deploy")
    view_id = await open_generate_modal(env, ALICE)
    response = await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "dEPLOY"}})
    assert response.json()["errors"]["token_name"] == (
        "You already have an active token named “dEPLOY”. Pick another name."
    )
    assert len(tokens.list_user_tokens(env.db, ORG, ALICE, env.deps.clock()).tokens) == 1


async def test_a_submission_racing_past_the_cap_gets_an_inline_error(env: Running) -> None:
    view_id = await open_generate_modal(env, ALICE)  # opened while there was room
    for n in range(10):
        await generate(env, ALICE, f"t{n}")
    response = await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "late"}})
    assert "the limit is 10" in response.json()["errors"]["token_name"]
    assert len(tokens.list_user_tokens(env.db, ORG, ALICE, env.deps.clock()).tokens) == 10


async def test_the_token_is_shown_once_through_the_commands_response_url(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    assert tokenformat.has_valid_checksum(secret)
    carrying = [c for c in env.standin.calls if secret in c.text_content()]
    assert len(carrying) == 1
    assert carrying[0].method == "response_url"
    assert carrying[0].args["response_type"] == "ephemeral"
    assert carrying[0].args["replace_original"] is False
    assert "will not be shown again" in carrying[0].text_content()


async def test_an_expired_response_url_falls_back_to_an_ephemeral_in_the_channel(
    env: Running,
) -> None:
    view_id = await open_generate_modal(env, ALICE)
    env.standin.fail_next("response_url", status=404, error="expired_url")
    mark = len(env.standin.calls)
    await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "ci"}})
    shown = await env.standin.wait_for("chat.postEphemeral", after=mark)
    assert shown.args["channel"] == "C0GENERAL" and shown.args["user"] == ALICE
    assert len(tokenformat.TOKEN_PATTERN.findall(shown.text_content())) == 1


async def test_without_the_channel_the_token_goes_to_the_members_dm_ephemerally(
    env: Running,
) -> None:
    view_id = await open_generate_modal(env, ALICE)
    env.standin.fail_next("response_url", status=404, error="expired_url")
    env.standin.fail_next("chat.postEphemeral", error="channel_not_found")
    mark = len(env.standin.calls)
    await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "ci"}})
    opened = await env.standin.wait_for("conversations.open", after=mark)
    assert opened.args["users"] == ALICE
    shown = await env.standin.wait_for(
        "chat.postEphemeral", lambda c: c.args["channel"].startswith("D"), after=mark
    )
    assert shown.args["user"] == ALICE
    assert len(tokenformat.TOKEN_PATTERN.findall(shown.text_content())) == 1
    assert not env.standin.calls_to("chat.postMessage")


async def test_a_token_that_reaches_nobody_is_revoked(env: Running) -> None:
    view_id = await open_generate_modal(env, ALICE)
    env.standin.fail_next("response_url", status=404, error="expired_url")
    env.standin.fail_next("chat.postEphemeral", error="channel_not_found", times=2)
    mark = len(env.standin.calls)
    await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "ci"}})
    await env.standin.wait_for("chat.postEphemeral", after=mark + 2)
    # Nothing observable is sent when the token is withdrawn; the log is the evidence.
    events = await eventually(
        lambda: audit.events(env.db, ORG), lambda e: e[-1].action == "token.revoked"
    )
    assert events[-1].detail["reason"] == "not delivered"
    assert tokens.list_user_tokens(env.db, ORG, ALICE, env.deps.clock()).tokens == []


async def test_unreadable_private_metadata_still_delivers_by_dm(env: Running) -> None:
    view_id = await open_generate_modal(env, ALICE)
    env.standin.views[view_id]["private_metadata"] = "{not json"
    mark = len(env.standin.calls)
    await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "ci"}})
    shown = await env.standin.wait_for("chat.postEphemeral", after=mark)
    assert shown.args["channel"].startswith("D")
    assert json.dumps(shown.args).count("tbu_") == 1
