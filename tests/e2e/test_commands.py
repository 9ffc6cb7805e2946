"""``/token`` subcommands, end to end through signed HTTP requests."""

from __future__ import annotations

import pytest

from bot.standin.harness import Running
from storage import tokens
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import generate, open_generate_modal, run_command


@pytest.mark.parametrize("text", ["", "help", "HELP"])
async def test_help_lists_every_subcommand_ephemerally(env: Running, text: str) -> None:
    answer = await run_command(env, text, ALICE)
    content = answer.text_content()
    for sub in ("new [name]", "list", "revoke <name>", "help"):
        assert f"/token {sub}" in content
    assert answer.args.get("response_type", "ephemeral") == "ephemeral"


async def test_unknown_subcommand_is_named_and_help_follows(env: Running) -> None:
    answer = await run_command(env, "frobnicate now", ALICE)
    assert "I don't know `frobnicate`" in answer.text_content()
    assert "/token list" in answer.text_content()


async def test_unknown_subcommand_cannot_inject_mentions(env: Running) -> None:
    answer = await run_command(env, "<!channel>", ALICE)
    assert "<!channel>" not in answer.text_content()
    assert "&lt;!channel&gt;" in answer.text_content()


async def test_new_opens_the_modal_with_the_name_prefilled(env: Running) -> None:
    opened = await run_command(env, "new deploy key", ALICE)
    assert opened.method == "views.open"
    assert opened.args["trigger_id"]
    view = opened.view
    assert view["callback_id"] == "generate_token"
    assert view["title"]["text"] == "Generate API token"
    element = view["blocks"][0]["element"]
    assert element["initial_value"] == "deploy key"
    assert element["max_length"] == 64


async def test_list_shows_name_hint_dates_and_rotate_and_revoke_buttons_with_confirm(
    env: Running,
) -> None:
    secret = await generate(env, ALICE, "ci")
    answer = await run_command(env, "list", ALICE)
    content = answer.text_content()
    assert "*ci*" in content and f"tbu_…{secret[-4:]}" in content
    assert (
        "Created" in content and "last used never" in content and "expires if unused by" in content
    )
    assert secret not in content
    rotate, revoke = answer.blocks[2]["elements"]
    assert rotate["action_id"] == "rotate_token" and "confirm" in rotate
    assert revoke["action_id"] == "revoke_token" and "confirm" in revoke


async def test_list_is_per_member(env: Running) -> None:
    await generate(env, ALICE, "alice-ci")
    answer = await run_command(env, "list", BOB)
    assert "no active tokens" in answer.text_content()
    assert "alice-ci" not in answer.text_content()


async def test_revoke_asks_to_confirm_then_revokes(env: Running) -> None:
    await generate(env, ALICE, "ci")
    confirm = await run_command(env, "revoke CI", ALICE)
    assert "cannot be undone" in confirm.text_content()
    assert tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, env.deps.clock()).tokens
    mark = len(env.standin.calls)
    await env.slack.click(confirm, "revoke_token", ALICE)
    done = await env.standin.wait_for("response_url", after=mark)
    assert "Revoked *ci*" in done.text_content()
    assert done.args["replace_original"] is True
    assert tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, env.deps.clock()).tokens == []


async def test_cancel_on_the_revoke_confirmation_keeps_the_token(env: Running) -> None:
    await generate(env, ALICE, "ci")
    confirm = await run_command(env, "revoke ci", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(confirm, "cancel", ALICE)
    done = await env.standin.wait_for("response_url", after=mark)
    assert "Nothing was revoked" in done.text_content()
    assert len(tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, env.deps.clock()).tokens) == 1


async def test_revoke_of_an_unknown_name_says_so(env: Running) -> None:
    answer = await run_command(env, "revoke nope", ALICE)
    assert "You have no active token named “nope”" in answer.text_content()


async def test_revoke_without_a_name_says_how(env: Running) -> None:
    answer = await run_command(env, "revoke", ALICE)
    assert "/token revoke <name>" in answer.text_content()


async def test_new_at_the_cap_names_the_cap_and_offers_revoke(env: Running) -> None:
    for n in range(10):
        await generate(env, ALICE, f"t{n}")
    answer = await run_command(env, "new eleventh", ALICE)
    assert answer.method == "ack"  # answered at once, no modal opened
    content = answer.text_content()
    assert "limit of 10 active tokens" in content
    buttons = [e for b in answer.blocks if b["type"] == "actions" for e in b["elements"]]
    assert sum(1 for e in buttons if e["action_id"] == "revoke_token") == 10


async def test_modal_stays_usable_after_an_error(env: Running) -> None:
    view_id = await open_generate_modal(env, ALICE)
    bad = await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": ""}})
    assert bad.json()["response_action"] == "errors"
    good = await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "ok"}})
    assert good.content == b""


async def test_revoke_of_an_unknown_name_cannot_inject_mentions(env: Running) -> None:
    answer = await run_command(env, "revoke <!channel> *now*", ALICE)
    content = answer.text_content()
    assert "<!channel>" not in content and "*now*" not in content
    assert "&lt;!channel&gt;" in content


@pytest.mark.parametrize(
    ("text", "again"), [("new", "/token new"), ("service request", "/token service request")]
)
async def test_a_modal_slack_would_not_open_is_said_plainly(
    env: Running, text: str, again: str
) -> None:
    env.standin.fail_next("views.open", error="expired_trigger_id")
    mark = len(env.standin.calls)
    response = await env.slack.command("/token", text, ALICE)
    assert response.status_code == 200
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "Slack could not open the form" in answer.text_content()
    assert f"Run `{again}` again" in answer.text_content()
