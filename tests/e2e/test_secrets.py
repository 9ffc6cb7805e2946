"""No secret reaches a log line, an audit event or a message Slack keeps (R14)."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
import pytest

from bot.jobs import sweep_and_deliver
from bot.standin.client import http_client
from bot.standin.harness import BOT_TOKEN, RESOURCE_SERVER, SIGNING_SECRET, Clock, Running
from storage import audit
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import eventually, generate, open_generate_modal, run_command

EPHEMERAL_METHODS = {"chat.postEphemeral", "views.open", "views.update", "views.push"}


def kept_by_slack(call) -> bool:  # type: ignore[no-untyped-def]
    """Whether Slack would keep what this call sends, for others or for later."""
    if call.method == "response_url":
        return call.args.get("response_type") == "in_channel"
    return call.method not in EPHEMERAL_METHODS


async def test_minted_tokens_never_reach_logs_audit_or_kept_messages(
    env: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    minted = [await generate(env, ALICE, "one"), await generate(env, BOB, "two")]
    # Fallback deliveries, a failed one and a revoke, so every path logs what it logs.
    view_id = await open_generate_modal(env, ALICE)
    env.standin.fail_next("response_url", status=404, error="expired_url")
    mark = len(env.standin.calls)
    await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "three"}})
    fallback = await env.standin.wait_for("chat.postEphemeral", after=mark)
    minted += [s for s in fallback.text_content().split("```") if s.startswith("tbu_")]
    view_id = await open_generate_modal(env, ALICE)
    env.standin.fail_next("response_url", status=500, times=3)
    env.standin.fail_next("chat.postEphemeral", status=500, times=3)
    env.standin.fail_next("conversations.open", error="user_not_found")
    mark = len(env.standin.calls)
    await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "four"}})
    await eventually(
        lambda: audit.events(env.db, "T0TOKENBOT"),
        lambda events: events[-1].detail.get("reason") == "not delivered",
    )
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    await env.standin.wait_for("response_url", after=mark)
    # Uses of every token, valid or not, through both doors; then reminders and expiry.
    async with http_client(base_url=env.url) as http:
        for secret in minted:
            await http.post(
                "/api/v1/introspect", data={"token": secret}, auth=httpx.BasicAuth(*RESOURCE_SERVER)
            )
            await http.post("/api/v1/introspect", data={"token": secret})  # no credentials
            await http.get("/api/v1/auth", headers={"Authorization": f"Bearer {secret}"})
    start = env.deps.clock()
    for days in (23, 29, 31):
        env.deps.clock = Clock(start + timedelta(days=days))
        await sweep_and_deliver(env.deps, env.slack_app_client)
    assert any(c.method == "chat.postMessage" for c in env.standin.calls)  # reminders went

    assert len(minted) == 3
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert any(r.name.startswith("bot.") for r in caplog.records)  # the capture works
    for secret in [*minted, SIGNING_SECRET, BOT_TOKEN, RESOURCE_SERVER[1]]:
        assert secret not in logged
    exported = "\n".join(audit.export_jsonl(env.db, "T0TOKENBOT"))
    assert exported.count("token.issued") == 4
    for secret in minted:
        assert secret not in exported
        for call in env.standin.calls:
            if secret in call.text_content():
                assert not kept_by_slack(call), call.method
