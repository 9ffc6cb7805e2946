"""R7-R9: the caps hold when many submissions or approvals arrive at once (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio

from sqlmodel import func, select

from bot.standin.harness import Running
from storage.models import Token
from storage.tokenformat import TOKEN_PATTERN
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import open_generate_modal
from tests.e2e.test_service_requests import GOOD, admins, allow_pending, submit_request


async def test_24_concurrent_generate_submissions_leave_exactly_10_active_tokens(
    env: Running,
) -> None:
    views = [await open_generate_modal(env, ALICE) for _ in range(24)]
    mark = len(env.standin.calls)
    responses = await asyncio.gather(
        *(
            env.slack.submit_view(view_id, ALICE, {"token_name": {"name": f"race-{n}"}})
            for n, view_id in enumerate(views)
        )
    )
    assert all(r.status_code == 200 for r in responses)
    accepted = [r for r in responses if r.content == b""]
    refused = [r for r in responses if r.content]
    assert len(accepted) == 10
    assert len(refused) == 14
    assert all("the limit is 10" in r.json()["errors"]["token_name"] for r in refused)
    deliveries = await env.standin.wait_for_count(
        "response_url", 10, lambda c: "tbu_" in c.text_content(), after=mark
    )
    secrets = {s for c in deliveries for s in TOKEN_PATTERN.findall(c.text_content())}
    assert len(deliveries) == 10 and len(secrets) == 10  # each token shown once, to its owner
    with env.db.read() as session:
        active = session.exec(select(func.count()).where(Token.state == "active")).one()
        total = session.exec(select(func.count()).select_from(Token)).one()
    assert active == 10 and total == 10


async def test_30_approvals_clicked_at_once_leave_exactly_20_active_service_tokens(
    env: Running,
) -> None:
    admins(env)  # bob and carol approve
    allow_pending(env, 30)  # all of them from alice
    copies = []
    for n in range(30):
        mark = len(env.standin.calls)
        response = await submit_request(
            env, {**GOOD, "name": {"value": f"svc-{n:02d}"}}, ["api:read"]
        )
        assert response.status_code == 200 and response.content == b""
        bobs = await env.standin.wait_for(
            "chat.postMessage", lambda c: c.args.get("channel") == "D0BOB", after=mark
        )
        copies.append(bobs)
    mark = len(env.standin.calls)
    responses = await asyncio.gather(
        *(env.slack.click(copy, "approve_request", BOB) for copy in copies)
    )
    assert all(r.status_code == 200 for r in responses)
    refusals = await env.standin.wait_for_count("chat.postEphemeral", 10, after=mark)
    assert len(refusals) == 10
    assert all("the limit is 20 per organization" in c.text_content() for c in refusals)
    shown = await env.standin.wait_for_count(
        "response_url", 20, lambda c: "tbs_" in c.text_content(), after=mark
    )
    secrets = {s for c in shown for s in TOKEN_PATTERN.findall(c.text_content())}
    assert len(shown) == 20 and len(secrets) == 20  # each shown once, to the requester
    with env.db.read() as session:
        active = session.exec(
            select(func.count()).where(Token.state == "active", Token.kind == "service")
        ).one()
    assert active == 20
