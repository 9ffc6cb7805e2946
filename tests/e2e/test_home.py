"""The App Home tab: the member's tokens with cutoffs, Generate and Revoke buttons."""

from __future__ import annotations

import json

from bot.standin.harness import Running
from storage import tokenformat, tokens
from tests.conftest import FIXTURES
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate

ORG = "T0TOKENBOT"


async def open_home(env: Running, user: str, tab: str = "home") -> None:
    """Slack's own app_home_opened envelope, addressed to ``user`` in our workspace."""
    fixture = json.loads(
        (FIXTURES / "app_home_opened__envelope_with_view__slack_go_fixture.json").read_text()
    )
    event = {**fixture["event"], "user": user, "tab": tab}
    response = await env.slack.event(event, event_id=f"Ev{len(env.standin.calls)}")
    assert response.status_code == 200


async def home_view_id(env: Running, user: str) -> str:
    """Open the Home tab and return the id of the view the app published."""
    mark = len(env.standin.calls)
    await open_home(env, user)
    published = await env.standin.wait_for("views.publish", after=mark)
    return str(published.result["view"]["id"])


async def test_opening_home_publishes_the_members_tokens(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    mark = len(env.standin.calls)
    await open_home(env, ALICE)
    published = await env.standin.wait_for("views.publish", after=mark)
    assert published.args["user_id"] == ALICE
    view = published.view
    content = json.dumps(view)
    assert view["type"] == "home"
    assert "*ci*" in content and "expires if unused by" in content and secret not in content


async def test_the_messages_tab_publishes_nothing(env: Running) -> None:
    mark = len(env.standin.calls)
    await open_home(env, ALICE, tab="messages")
    await open_home(env, ALICE)  # a later event that does publish, to wait on
    await env.standin.wait_for("views.publish", after=mark)
    assert len(env.standin.calls_to("views.publish")) == 1


async def test_revoke_on_home_revokes_and_refreshes_home(env: Running) -> None:
    await generate(env, ALICE, "ci")
    view_id = await home_view_id(env, ALICE)
    mark = len(env.standin.calls)
    await env.slack.click_in_view(view_id, "revoke_token", ALICE)
    refreshed = await env.standin.wait_for("views.publish", after=mark)
    assert "Revoked *ci*" in refreshed.text_content()
    assert tokens.list_user_tokens(env.db, ORG, ALICE, env.deps.clock()).tokens == []


async def test_generate_from_home_delivers_the_token_in_the_dm_ephemerally(env: Running) -> None:
    view_id = await home_view_id(env, ALICE)
    mark = len(env.standin.calls)
    await env.slack.click_in_view(view_id, "open_generate", ALICE)
    opened = await env.standin.wait_for("views.open", after=mark)
    await env.slack.submit_view(opened.result["view"]["id"], ALICE, {"token_name": {"name": "x"}})
    shown = await env.standin.wait_for("chat.postEphemeral", after=mark)
    assert shown.args["channel"].startswith("D") and shown.args["user"] == ALICE
    secrets = tokenformat.TOKEN_PATTERN.findall(shown.text_content())
    assert len(secrets) == 1 and tokenformat.has_valid_checksum(secrets[0])


async def test_generate_from_home_at_the_cap_explains_on_home(env: Running) -> None:
    for n in range(10):
        await generate(env, ALICE, f"t{n}")
    view_id = await home_view_id(env, ALICE)
    mark = len(env.standin.calls)
    await env.slack.click_in_view(view_id, "open_generate", ALICE)
    refreshed = await env.standin.wait_for("views.publish", after=mark)
    assert "the limit is 10" in refreshed.text_content()
    assert not [c for c in env.standin.calls[mark:] if c.method == "views.open"]
