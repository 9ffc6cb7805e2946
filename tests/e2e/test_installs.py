"""Multi-workspace mode: installing through OAuth, workspaces side by side, uninstalling
and installing again (SPEC §5-§6, R10), through HTTP against the Slack stand-in."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from bot.blocks.audit import audit_line
from bot.jobs import sweep_and_deliver
from bot.standin.client import SlackClient, http_client
from bot.standin.harness import (
    CLIENT_ID,
    RESOURCE_SERVER,
    SIGNING_SECRET,
    Clock,
    Running,
    running_tokenbot,
)
from bot.standin.server import Call, Workspace
from storage import audit, installs
from storage.slack_tables import BOTS, INSTALLATIONS
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import COMMAND, eventually, generate, settled
from tests.unit.test_manifest import SCOPES_FOR_METHODS

T1 = Workspace("T0ONE")
T2 = Workspace("T0TWO")
DAY = timedelta(days=1)
_codes = itertools.count(1)


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[Running]:
    """tokenbot in multi-workspace mode: installed nowhere yet."""
    async with running_tokenbot(database_url, migrate=False, multi_workspace=True) as running:
        running.standin.add_user(ALICE, "alice")
        running.standin.add_user(BOB, "bob")
        yield running
        assert not running.standin.refused, running.standin.refused[0][1]
        called = {c.method for c in running.standin.calls} - {"response_url", "auth.test"}
        assert called <= set(SCOPES_FOR_METHODS), f"add to manifest and test: {called}"


@pytest.fixture
async def browser(env: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(base_url=env.url, timeout=10) as http:
        yield http


async def start_install(browser: httpx.AsyncClient) -> str:
    """GET /slack/install: the browser is sent to Slack's install screen; returns the
    state it carries (also set as the browser's cookie)."""
    started = await browser.get("/slack/install")
    assert started.status_code == 302
    target = urlsplit(started.headers["location"])
    assert (target.netloc, target.path) == ("slack.com", "/oauth/v2/authorize")
    query = parse_qs(target.query)
    assert query["client_id"] == [CLIENT_ID]
    assert {"commands", "chat:write", "users:read"} <= set(query["scope"][0].split(","))
    [state] = query["state"]
    assert f"slack-app-oauth-state={state}" in started.headers["set-cookie"]
    return state


async def come_back(browser: httpx.AsyncClient, state: str, **params: str) -> httpx.Response:
    """The browser back from Slack at the redirect URL, with its state cookie."""
    cookie = {"Cookie": f"slack-app-oauth-state={state}"}
    return await browser.get(
        "/slack/oauth_redirect", params={"state": state, **params}, headers=cookie
    )


async def install(env: Running, browser: httpx.AsyncClient, workspace: Workspace) -> str:
    """The whole install of ``workspace``; returns the bot token Slack gave the app."""
    state = await start_install(browser)
    code = f"code-{next(_codes)}"
    env.standin.grant_install(code, workspace)
    mark = len(env.standin.calls)
    page = await come_back(browser, state, code=code)
    assert page.status_code == 200, page.text
    assert "tokenbot is installed" in page.text
    exchanged = await env.standin.wait_for("oauth.v2.access", after=mark)
    assert exchanged.args["code"] == code
    return str(exchanged.result["access_token"])


def workspace_of(env: Running, workspace: Workspace) -> Running:
    """``env`` as seen from ``workspace``: requests signed as Slack sends them from there."""
    slack = SlackClient(
        env.url,
        SIGNING_SECRET,
        env.standin,
        team_id=workspace.team_id,
        enterprise_id=workspace.enterprise_id,
        org_wide=workspace.org_wide,
    )
    return dataclasses.replace(env, slack=slack)


async def introspect(env: Running, secret: str) -> dict[str, object]:
    async with http_client(base_url=env.url, auth=httpx.BasicAuth(*RESOURCE_SERVER)) as http:
        answer = await http.post("/api/v1/introspect", data={"token": secret})
        assert answer.status_code == 200
        return dict(answer.json())


async def listed_in(env: Running, user: str) -> str:
    """What ``/token list`` shows ``user``, as text."""
    answer = await env.slack.command(COMMAND, "list", user)
    assert answer.status_code == 200
    return answer.text


def stored_bots(env: Running) -> list[str]:
    with env.db.engine.connect() as conn:
        return [str(t) for t in conn.execute(sa.select(BOTS.c.bot_token)).scalars()]


def dms(env: Running, after: int) -> list[Call]:
    return [
        c
        for c in env.standin.calls[after:]
        if c.method == "chat.postMessage" and c.result.get("ok")
    ]


async def uninstall(env: Running, workspace: Workspace, n: int) -> None:
    here = workspace_of(env, workspace)
    answer = await here.slack.event({"type": "app_uninstalled"}, event_id=f"Ev0UNINSTALL{n}")
    assert answer.status_code == 200
    env.standin.revoke_tokens(workspace)
    await gone(env, workspace.enterprise_id if workspace.org_wide else workspace.team_id)


async def gone(env: Running, org: str) -> None:
    """Wait until ``org`` is no longer installed (the event is handled after its ack)."""
    await eventually(lambda: installs.installation_of(env.db, org), lambda found: found is None)


# -- installing ---------------------------------------------------------------------------


async def test_an_install_stores_the_bot_token_and_the_workspace_is_served_with_it(
    env: Running, browser: httpx.AsyncClient
) -> None:
    token = await install(env, browser, T1)
    assert stored_bots(env) == [token]
    assert [i.org for i in installs.installed(env.db)] == ["T0ONE"]
    one = workspace_of(env, T1)
    mark = len(env.standin.calls)
    await generate(one, ALICE, "ci")
    opened = await env.standin.wait_for("views.open", after=mark)
    assert opened.token == token  # the workspace's own bot token, not another
    await one.slack.aclose()


async def test_two_workspaces_side_by_side_never_cross(
    env: Running, browser: httpx.AsyncClient
) -> None:
    clock = env.deps.clock = Clock()
    token_one = await install(env, browser, T1)
    token_two = await install(env, browser, T2)
    one, two = workspace_of(env, T1), workspace_of(env, T2)
    secret_one = await generate(one, ALICE, "from-one")
    secret_two = await generate(two, ALICE, "from-two")

    # A token introspects for its own organization only.
    assert (await introspect(env, secret_one))["org"] == "T0ONE"
    assert (await introspect(env, secret_two))["org"] == "T0TWO"
    # Each workspace's list shows its own tokens only.
    assert "from-two" in await listed_in(two, ALICE)
    assert "from-one" not in await listed_in(two, ALICE)
    assert "from-two" not in await listed_in(one, ALICE)

    # Reminders for each go with each workspace's own bot token.
    clock.advance(23 * DAY)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    sent = {c.token: c.text_content() for c in dms(env, mark)}
    assert set(sent) == {token_one, token_two}
    assert "from-one" in sent[token_one] and "from-two" not in sent[token_one]
    assert "from-two" in sent[token_two] and "from-one" not in sent[token_two]
    opens = [c for c in env.standin.calls[mark:] if c.method == "conversations.open"]
    assert {c.token for c in opens} == {token_one, token_two}
    await one.slack.aclose()
    await two.slack.aclose()


async def test_an_org_wide_install_serves_the_enterprise(
    env: Running, browser: httpx.AsyncClient
) -> None:
    grid = Workspace("T0GRID", enterprise_id="E0GRID", org_wide=True)
    token = await install(env, browser, grid)
    assert [(i.org, i.org_wide) for i in installs.installed(env.db)] == [("E0GRID", True)]
    here = workspace_of(env, grid)
    mark = len(env.standin.calls)
    secret = await generate(here, ALICE, "grid")
    assert (await introspect(env, secret))["org"] == "E0GRID"
    assert {c.token for c in env.standin.calls[mark:] if c.token} == {token}

    # Removed from the enterprise, its tokens stop, whichever workspace asks.
    await uninstall(env, grid, 1)
    assert await introspect(env, secret) == {"active": False}
    refused = await here.slack.command(COMMAND, "list", ALICE)
    assert refused.status_code == 401
    await here.slack.aclose()


# -- uninstalling ---------------------------------------------------------------------------


async def test_an_uninstalled_workspace_stops_until_it_installs_again(
    env: Running, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    clock = env.deps.clock = Clock()
    await install(env, browser, T1)
    await install(env, browser, T2)
    one, two = workspace_of(env, T1), workspace_of(env, T2)
    secret_one = await generate(one, ALICE, "from-one")
    secret_two = await generate(two, ALICE, "from-two")

    await uninstall(env, T1, 1)
    assert await introspect(env, secret_one) == {"active": False}
    assert (await introspect(env, secret_two))["active"] is True
    assert [i.org for i in installs.installed(env.db)] == ["T0TWO"]
    with env.db.engine.connect() as conn:  # its bot token is no longer kept
        teams = conn.execute(sa.select(INSTALLATIONS.c.team_id)).scalars().all()
    assert teams == ["T0TWO"]

    # Requests from it are refused, and logged once, not once per request.
    caplog.set_level(logging.INFO, logger="bot.installs")
    for _ in range(3):
        refused = await one.slack.command(COMMAND, "list", ALICE)
        assert refused.status_code == 401
    assert sum("not installed" in r.getMessage() for r in caplog.records) == 1

    # Its scheduled work stops: no reminder goes out for its tokens.
    clock.advance(23 * DAY)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    reminded = [c.text_content() for c in dms(env, mark)]
    assert len(reminded) == 1 and "from-two" in reminded[0]

    # Installed again, it is served with the new bot token: the reminder owed meanwhile
    # goes out with it, and its tokens are valid again (those not past their cutoff).
    new_token = await install(env, browser, T1)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    [late] = dms(env, mark)
    assert "from-one" in late.text_content() and late.token == new_token
    assert (await introspect(env, secret_one))["active"] is True
    assert "from-one" in await listed_in(one, ALICE)

    # Each change is in the workspace's audit log, in words.
    lines = [audit_line(e) for e in audit.export(env.db, "T0ONE") if e.action.startswith("app.")]
    assert len(lines) == 3
    assert "installed tokenbot" in lines[0] and "installed tokenbot" in lines[2]
    assert "recorded that tokenbot was removed" in lines[1]
    await one.slack.aclose()
    await two.slack.aclose()


async def test_a_revoked_bot_token_stops_the_workspace_as_an_uninstall_does(
    env: Running, browser: httpx.AsyncClient
) -> None:
    await install(env, browser, T1)
    one = workspace_of(env, T1)
    secret = await generate(one, ALICE, "ci")
    # Only a member's token revoked: tokenbot keeps none, nothing changes.
    event = {"type": "tokens_revoked", "tokens": {"oauth": [ALICE], "bot": []}}
    assert (await one.slack.event(event, event_id="Ev0REVOKED1")).status_code == 200
    await settled(env)
    assert (await introspect(env, secret))["active"] is True
    event = {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["U0BOT"]}}
    assert (await one.slack.event(event, event_id="Ev0REVOKED2")).status_code == 200
    await gone(env, "T0ONE")
    assert await introspect(env, secret) == {"active": False}
    assert installs.installed(env.db) == []
    [last] = [e for e in audit.export(env.db, "T0ONE") if e.action == "app.uninstalled"]
    assert "bot token was revoked" in audit_line(last)
    await one.slack.aclose()


async def test_a_workspace_never_installed_is_refused(env: Running) -> None:
    stranger = workspace_of(env, Workspace("T0STRANGER"))
    answer = await stranger.slack.command(COMMAND, "help", ALICE)
    assert answer.status_code == 401
    assert not [c for c in env.standin.calls if c.method != "response_url"]
    await stranger.slack.aclose()


# -- bad installs ----------------------------------------------------------------------------


def nothing_stored(env: Running) -> bool:
    return stored_bots(env) == [] and installs.installed(env.db) == []


async def test_an_install_cancelled_in_slack_says_so_and_stores_nothing(
    env: Running, browser: httpx.AsyncClient
) -> None:
    state = await start_install(browser)
    page = await come_back(browser, state, error="access_denied")
    assert page.headers["content-type"].startswith("text/html")
    assert "tokenbot was not installed" in page.text
    assert "cancelled in Slack" in page.text
    assert nothing_stored(env) and not env.standin.calls_to("oauth.v2.access")


async def test_a_bad_or_reused_state_is_refused_and_nothing_is_stored(
    env: Running, browser: httpx.AsyncClient
) -> None:
    state = await start_install(browser)
    env.standin.grant_install("code-forged", T1)
    forged = await come_back(browser, "not-a-state-we-issued", code="code-forged")
    assert forged.status_code in (400, 401)
    assert "nothing was installed" in forged.text
    assert nothing_stored(env) and not env.standin.calls_to("oauth.v2.access")

    await install_with(env, browser, state, "code-first")
    replayed = await come_back(browser, state, code="code-first")  # the same state again
    assert replayed.status_code == 401
    assert "expired or was already used" in replayed.text
    assert len(env.standin.calls_to("oauth.v2.access")) == 1


async def install_with(env: Running, browser: httpx.AsyncClient, state: str, code: str) -> None:
    env.standin.grant_install(code, T1)
    assert (await come_back(browser, state, code=code)).status_code == 200


async def test_a_code_slack_refuses_gives_a_page_saying_so_and_stores_nothing(
    env: Running, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state = await start_install(browser)
    page = await come_back(browser, state, code="code-never-granted")  # ok: false
    assert page.status_code == 401
    assert "Slack did not accept the installation" in page.text
    assert env.standin.calls_to("oauth.v2.access")[0].result["ok"] is False
    assert nothing_stored(env)
    assert "an install failed: invalid_code" in caplog.text
    assert "code-never-granted" not in caplog.text  # a credential until it expires


# -- token rotation ----------------------------------------------------------------------------


async def test_an_expiring_bot_token_is_refreshed_before_it_is_used(
    env: Running, browser: httpx.AsyncClient
) -> None:
    rotating = Workspace("T0ROTATE", rotation=True, expires_in=600)  # within 2 hours
    first = await install(env, browser, rotating)
    here = workspace_of(env, rotating)
    clock = env.deps.clock = Clock()

    # A request from the workspace: Bolt refreshes the token before the listener runs.
    mark = len(env.standin.calls)
    await generate(here, ALICE, "ci")
    [refresh] = [c for c in env.standin.calls_to("oauth.v2.access")[1:]]
    assert refresh.args["grant_type"] == "refresh_token"
    second = str(refresh.result["access_token"])
    assert second != first and second in stored_bots(env)
    assert {c.token for c in env.standin.calls[mark:] if c.token} == {second}

    # Scheduled work refreshes it too, once it is about to expire in turn.
    with env.db.engine.begin() as conn:
        soon = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=5)
        conn.execute(sa.update(BOTS).values(bot_token_expires_at=soon))
    assert env.deps.installs is not None
    env.deps.installs.bots.clear()  # nothing kept from before the hours passed
    clock.advance(23 * DAY)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    [dm] = dms(env, mark)
    [refresh] = env.standin.calls_to("oauth.v2.access")[2:]
    assert refresh.args["grant_type"] == "refresh_token"
    assert dm.token == refresh.result["access_token"] and dm.token not in (first, second)
    await here.slack.aclose()


async def test_an_install_on_one_replica_is_served_by_another_after_its_refresh(
    env: Running, browser: httpx.AsyncClient, database_url: str
) -> None:
    async with running_tokenbot(database_url, migrate=False, multi_workspace=True) as replica:
        there = workspace_of(replica, T1)
        assert (await there.slack.command(COMMAND, "help", ALICE)).status_code == 401
        await install(env, browser, T1)  # through the first replica
        replica.db.refresh_generation()  # what the replica's scheduler does every second
        answer = await there.slack.command(COMMAND, "help", ALICE)
        assert answer.status_code == 200 and "/token new" in answer.text
        await uninstall(env, T1, 1)
        replica.db.refresh_generation()
        assert (await there.slack.command(COMMAND, "help", ALICE)).status_code == 401
        await there.slack.aclose()
