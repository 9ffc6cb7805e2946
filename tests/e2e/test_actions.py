"""Buttons: Revoke from the list (with its confirm dialog), double clicks, other people."""

from __future__ import annotations

from bot.standin.harness import Running
from bot.standin.server import Call
from storage import tokens
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import generate, run_command

ORG = "T0TOKENBOT"


def active_names(env: Running, user: str) -> list[str]:
    return [t.name for t in tokens.list_user_tokens(env.db, ORG, user, env.deps.clock()).tokens]


async def revoke_one_of_two(env: Running) -> tuple[Call, Call, str]:
    """Alice lists her tokens "one" and "two" and revokes "one": the list, what answered
    the click, and the id of "one"."""
    await generate(env, ALICE, "one")
    await generate(env, ALICE, "two")
    listing = await run_command(env, "list", ALICE)
    one_id = str(tokens.find_user_token(env.db, ORG, ALICE, "one", env.deps.clock()).id)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE, value=one_id)
    return listing, await env.standin.wait_for("response_url", after=mark), one_id


async def test_revoke_from_the_list_replaces_it_with_the_remaining_tokens(env: Running) -> None:
    _, updated, _ = await revoke_one_of_two(env)
    assert updated.args["replace_original"] is True
    assert "Revoked *one*" in updated.text_content()
    assert "*two*" in updated.text_content() and "(1 of 10)" in updated.text_content()
    assert active_names(env, ALICE) == ["two"]


async def test_a_second_click_on_revoke_changes_nothing_and_says_why(env: Running) -> None:
    await generate(env, ALICE, "one")
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    await env.standin.wait_for("response_url", after=mark)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    second = await env.standin.wait_for("response_url", after=mark)
    assert "“one” is no longer active" in second.text_content()


async def test_a_refused_revoke_redraws_the_list_as_it_is_now_with_the_reason_on_top(
    env: Running,
) -> None:
    listing, _, one_id = await revoke_one_of_two(env)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE, value=one_id)  # the stale list
    again = await env.standin.wait_for("response_url", after=mark)
    assert again.args["replace_original"] is True
    text = again.text_content()
    assert text.index("“one” is no longer active") < text.index("*two*")
    assert "(1 of 10)" in text and "*one*" not in text


async def test_nobody_can_revoke_another_members_token(env: Running) -> None:
    await generate(env, ALICE, "mine")
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", BOB)  # a forged click from Bob
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "You can revoke only your own tokens." in answer.text_content()
    assert active_names(env, ALICE) == ["mine"]


async def test_a_tampered_button_value_is_answered_plainly(env: Running) -> None:
    await generate(env, ALICE, "mine")
    listing = await run_command(env, "list", ALICE)
    blocks = listing.blocks
    blocks[2]["elements"][1]["value"] = "not-a-number"  # the Revoke button
    listing.args["blocks"] = blocks
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "out of date" in answer.text_content()
    assert active_names(env, ALICE) == ["mine"]


async def test_a_name_with_markup_is_escaped_in_the_list_and_in_the_second_click(
    env: Running,
) -> None:
    await generate(env, ALICE, "<!here> *boss*")
    listing = await run_command(env, "list", ALICE)
    assert "<!here>" not in listing.text_content() and "*boss*" not in listing.text_content()
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    first = await env.standin.wait_for("response_url", after=mark)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    second = await env.standin.wait_for("response_url", after=mark)
    assert "is no longer active" in second.text_content()
    for answer in (first, second):
        assert "<!here>" not in answer.text_content()
        assert "&lt;!here&gt;" in answer.text_content()
        assert "*boss*" not in answer.text_content()
