"""Reminders before the cutoff, expiry after it, and their delivery (R11-R13)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bot.deps import Deps
from bot.jobs import sweep_and_deliver
from bot.standin.harness import Clock, Running, running_tokenbot
from bot.standin.server import Call
from storage import audit, tokens
from storage.db import Database
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate

DAY = timedelta(days=1)


def dms(env: Running, after: int = 0) -> list[Call]:
    """Messages the app posted (and Slack accepted) since call index ``after``."""
    return [
        c
        for c in env.standin.calls[after:]
        if c.method == "chat.postMessage" and c.result.get("ok")
    ]


async def sweep(env: Running) -> None:
    await sweep_and_deliver(env.deps, env.slack_app_client)


async def first_reminder(env: Running) -> tuple[Clock, Call]:
    """Alice's token "ci", 23 days unused, and the one DM the sweep then sends her."""
    clock = env.deps.clock = Clock()
    await generate(env, ALICE, "ci")
    clock.advance(23 * DAY)
    mark = len(env.standin.calls)
    await sweep(env)
    [dm] = dms(env, mark)
    return clock, dm


async def test_the_7_day_reminder_is_a_dm_with_the_facts_and_three_buttons(env: Running) -> None:
    _, dm = await first_reminder(env)
    opened = env.standin.calls_to("conversations.open")[-1]
    assert opened.args["users"] == ALICE and dm.args["channel"] == "D0ALICE"
    text = dm.text_content()
    assert "*ci*" in text and "tbu_…" in text and "in 7 days" in text
    assert "Last used: never" in text
    buttons = [
        e["text"]["text"] for b in dm.blocks if b["type"] == "actions" for e in b["elements"]
    ]
    assert buttons == ["Revoke now", "Keep for another period", "Rotate"]


async def test_a_reminder_is_sent_once_across_sweeps_and_restarts(
    env: Running, database_url: str
) -> None:
    clock = env.deps.clock = Clock()
    await generate(env, ALICE, "ci")
    clock.advance(23 * DAY)
    mark = len(env.standin.calls)
    await sweep(env)
    await sweep(env)
    async with running_tokenbot(database_url, clock=clock, migrate=False) as restarted:
        await sweep_and_deliver(restarted.deps, restarted.slack_app_client)
        assert dms(restarted) == []
    assert len(dms(env, mark)) == 1
    clock.advance(6 * DAY)  # the 1-day stage
    await sweep(env)
    assert len(dms(env, mark)) == 2 and "tomorrow" in dms(env, mark)[-1].text_content()


async def test_keep_for_another_period_extends_without_a_use(env: Running) -> None:
    clock, dm = await first_reminder(env)
    mark = len(env.standin.calls)
    await env.slack.click(dm, "keep_alive", ALICE)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "Kept *ci*" in answer.text_content()
    [token] = tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, clock()).tokens
    assert token.cutoff_at == clock() + 30 * DAY and token.last_used_at is None
    actions = [e.action for e in audit.events(env.db, "T0TOKENBOT")]
    assert "token.keep_alive" in actions and "token.used" not in actions


async def test_revoke_now_on_a_reminder_revokes(env: Running) -> None:
    clock, dm = await first_reminder(env)
    mark = len(env.standin.calls)
    await env.slack.click(dm, "revoke_token", ALICE)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "Revoked *ci*" in answer.text_content()
    assert tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, clock()).tokens == []


async def test_a_slack_429_then_success_delivers_the_reminder_once(env: Running) -> None:
    clock = env.deps.clock = Clock()
    await generate(env, ALICE, "ci")
    clock.advance(23 * DAY)
    env.standin.fail_next("chat.postMessage", status=429, headers={"Retry-After": "1"})
    mark = len(env.standin.calls)
    await sweep(env)
    attempts = [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]
    assert len(attempts) == 2  # the 429, then the retry after Retry-After
    assert len(dms(env, mark)) == 1


async def test_a_reminder_slack_keeps_refusing_is_retried_later_not_lost(env: Running) -> None:
    clock = env.deps.clock = Clock()
    await generate(env, ALICE, "ci")
    clock.advance(23 * DAY)
    env.standin.fail_next("chat.postMessage", status=503, times=3)  # past slack_sdk's retries
    mark = len(env.standin.calls)
    await sweep(env)
    assert dms(env, mark) == []
    await sweep(env)  # not yet due again
    assert dms(env, mark) == []
    clock.advance(timedelta(minutes=2))
    await sweep(env)
    assert len(dms(env, mark)) == 1


async def test_past_the_cutoff_the_token_is_invalid_and_the_owner_told_once(
    env: Running,
) -> None:
    clock = env.deps.clock = Clock()
    await generate(env, ALICE, "ci")
    clock.advance(30 * DAY + timedelta(seconds=1))
    mark = len(env.standin.calls)
    await sweep(env)
    await sweep(env)
    expired = [c for c in dms(env, mark) if "expired" in c.text_content()]
    assert len(expired) == 1
    assert "/token new" in expired[0].text_content()  # what to do next (R13)


async def test_three_sweepers_at_once_send_each_reminder_exactly_once(
    env: Running, database_url: str
) -> None:
    clock = env.deps.clock = Clock()
    users = [f"U0USER{n}" for n in range(6)]
    for user in users:
        env.standin.add_user(user, user.lower())
        for name in ("a", "b"):
            await generate(env, user, name)
    clock.advance(23 * DAY)
    replicas = [
        Deps(settings=env.deps.settings, db=Database(database_url), clock=clock) for _ in range(3)
    ]
    mark = len(env.standin.calls)
    await asyncio.gather(*(sweep_and_deliver(d, env.slack_app_client) for d in replicas))
    for replica in replicas:
        replica.db.dispose()
    sent = dms(env, mark)
    assert len(sent) == 12
    hints = sorted(b["text"]["text"].split("`")[1] for c in sent for b in c.blocks[:1])
    assert len(set(hints)) == 12  # one per token, none twice
