"""Validation results are cached per process; what invalidates a token reaches every
replica: the one that made the change at once, the others within a refresh (1 s)."""

from __future__ import annotations

from datetime import timedelta

import httpx

from bot.standin.client import http_client
from bot.standin.harness import RESOURCE_SERVER, Clock, Running, running_tokenbot
from storage import tokens
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate, run_command

GATEWAY = httpx.BasicAuth(*RESOURCE_SERVER)


async def active(env: Running, secret: str) -> bool:
    async with http_client(base_url=env.url, auth=GATEWAY) as http:
        response = await http.post("/api/v1/introspect", data={"token": secret})
    return bool(response.json()["active"])


async def test_a_revocation_in_slack_is_refused_at_once_by_the_same_process(
    env: Running,
) -> None:
    secret = await generate(env, ALICE, "ci")
    assert await active(env, secret)  # now cached
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    await env.standin.wait_for("response_url", after=mark)
    assert not await active(env, secret)


async def test_another_replica_refuses_a_revoked_token_after_its_refresh(
    env: Running, database_url: str
) -> None:
    secret = await generate(env, ALICE, "ci")
    async with running_tokenbot(database_url, migrate=False) as replica:
        replica.standin.add_user(ALICE, "alice")
        assert await active(replica, secret)  # cached by the replica
        [token] = tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, env.deps.clock()).tokens
        tokens.revoke_token(env.db, "T0TOKENBOT", ALICE, token.id, env.deps.clock())
        assert not await active(env, secret)  # where it was revoked: at once
        replica.db.refresh_generation()  # what the replica's scheduler does every second
        assert not await active(replica, secret)


async def test_a_use_seen_by_one_replica_keeps_the_token_valid_on_another(
    env: Running, database_url: str
) -> None:
    clock = env.deps.clock = Clock()
    secret = await generate(env, ALICE, "ci")
    async with running_tokenbot(database_url, clock=clock, migrate=False) as replica:
        replica.standin.add_user(ALICE, "alice")
        assert await active(replica, secret)  # cached there with a cutoff 30 days out
        clock.advance(timedelta(days=20))
        assert await active(env, secret)  # a use on the first replica: cutoff + 20 days
        clock.advance(timedelta(days=11))  # past the cutoff the replica had cached
        assert await active(replica, secret)
