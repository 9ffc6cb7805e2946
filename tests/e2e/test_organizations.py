"""R10: the organization is the workspace, or the enterprise for org-wide installs."""

from __future__ import annotations

from bot.standin.harness import Running
from storage import tokenformat, tokens
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate, post_fixture_command, until_valid


async def test_org_wide_install_keeps_tokens_under_the_enterprise(env: Running) -> None:
    """Slack's own org-level command body: the organization is its enterprise id."""
    await generate(env, ALICE, "workspace-token")  # an ordinary install in T0TOKENBOT
    mark = len(env.standin.calls)
    fixture = "slash_command__org_level_app__java_sdk.form.txt"
    assert (await post_fixture_command(env, fixture, "new")).status_code == 200
    opened = await env.standin.wait_for("views.open", after=mark)
    view_id = opened.result["view"]["id"]
    env.slack.enterprise_id = "E111"
    env.slack.team_id = "T111"
    env.slack.org_wide = True
    mark = len(env.standin.calls)
    await env.slack.submit_view(view_id, "W111", {"token_name": {"name": "grid-token"}})
    shown = await env.standin.wait_for("response_url", after=mark)
    await until_valid(env, tokenformat.TOKEN_PATTERN.findall(shown.text_content())[0])
    now = env.deps.clock()
    assert [t.name for t in tokens.list_user_tokens(env.db, "E111", "W111", now).tokens] == [
        "grid-token"
    ]
    assert tokens.list_user_tokens(env.db, "T111", "W111", now).tokens == []
    assert [t.name for t in tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, now).tokens] == [
        "workspace-token"
    ]


async def test_same_member_id_in_two_workspaces_has_separate_tokens(env: Running) -> None:
    await generate(env, ALICE, "ci")
    env.slack.team_id = "T0SECOND"
    await generate(env, ALICE, "ci")  # no clash: another organization
    now = env.deps.clock()
    assert len(tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, now).tokens) == 1
    assert len(tokens.list_user_tokens(env.db, "T0SECOND", ALICE, now).tokens) == 1
