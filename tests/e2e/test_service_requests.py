"""Service-token requests in Slack: modal, routing, Approve/Deny, first decision wins."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, quote

import httpx

from bot.standin.harness import RESOURCE_SERVER, Running
from bot.standin.server import Call
from storage import audit, tokenformat
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import run_command, until_valid

CAROL, GUEST = "U0CAROL", "U0GUEST"
GOOD = {
    "name": {"value": "ci-deployer"},
    "purpose": {"value": "deploys from CI"},
    "justification": {"value": "the pipeline needs it"},
}


def admins(env: Running) -> None:
    env.standin.users[BOB]["is_admin"] = True
    env.standin.add_user(CAROL, "carol", is_admin=True)
    env.standin.add_user(GUEST, "guest", is_restricted=True)


async def submit_request(env: Running, fields: dict, scopes: list[str] | None = None):
    opened = await run_command(env, "service request", ALICE)
    assert opened.method == "views.open" and opened.view["callback_id"] == "service_request"
    view_id = opened.result["view"]["id"]
    values = {k: {"value": v["value"]} for k, v in fields.items()}
    body = env.slack.view_submission_body(view_id, ALICE, values)
    if scopes is not None:  # checkboxes carry selected_options, not a value
        payload = json.loads(parse_qs(body)["payload"][0])
        payload["view"]["state"]["values"]["scopes"] = {
            "value": {
                "type": "checkboxes",
                "selected_options": [
                    {"value": s, "text": {"type": "plain_text", "text": s}} for s in scopes
                ],
            }
        }
        body = "payload=" + quote(json.dumps(payload))
    return await env.slack.post(body, "application/x-www-form-urlencoded")


async def requested(env: Running) -> list[Call]:
    """Submit a good request; return the copies sent to the approvers (Bob, Carol)."""
    admins(env)
    mark = len(env.standin.calls)
    response = await submit_request(env, GOOD, ["api:write"])
    assert response.status_code == 200 and response.content == b""
    await env.standin.wait_for("response_url", lambda c: "went to" in c.text_content(), after=mark)
    return [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]


async def test_a_bad_request_gets_inline_errors(env: Running) -> None:
    response = await submit_request(env, {**GOOD, "name": {"value": "Not A Slug"}})
    assert response.json()["errors"]["name"].startswith("Use 3 to 40 characters")
    response = await submit_request(env, GOOD, [])
    assert "permission" in response.json()["errors"]["scopes"]


async def test_the_request_goes_to_each_approver_by_dm(env: Running) -> None:
    copies = await requested(env)
    assert sorted(c.args["channel"] for c in copies) == ["D0BOB", "D0CAROL"]
    text = copies[0].text_content()
    assert "<@U0ALICE>" in text and "ci-deployer" in text and "api:write" in text
    assert "the pipeline needs it" in text


async def approve(env: Running, copy: Call, user: str):
    return await env.slack.click(copy, "approve_request", user)


async def test_approval_updates_every_copy_and_shows_the_token_once(env: Running) -> None:
    copies = await requested(env)
    mark = len(env.standin.calls)
    await approve(env, copies[0], BOB)
    shown = await env.standin.wait_for(
        "response_url", lambda c: "tbs_" in c.text_content(), after=mark
    )
    [secret] = tokenformat.TOKEN_PATTERN.findall(shown.text_content())
    await until_valid(env, secret)
    carrying = [c for c in env.standin.calls if secret in c.text_content()]
    assert carrying == [shown] and shown.args["response_type"] == "ephemeral"  # once, R14
    assert secret not in "\n".join(audit.export_jsonl(env.db, "T0TOKENBOT"))
    updates = [c for c in env.standin.calls[mark:] if c.method == "chat.update"]
    assert sorted(c.args["channel"] for c in updates) == ["D0BOB", "D0CAROL"]
    assert all("Approved by <@U0BOB>" in c.text_content() for c in updates)
    async with httpx.AsyncClient(base_url=env.url, auth=httpx.BasicAuth(*RESOURCE_SERVER)) as h:
        answer = (await h.post("/api/v1/introspect", data={"token": secret})).json()
    assert (answer["token_type"], answer["sub"], answer["scope"]) == (
        "service",
        "ci-deployer",
        "api:write",
    )
    assert "groups" not in answer


async def test_two_approvers_at_once_give_one_token(env: Running) -> None:
    copies = await requested(env)
    mark = len(env.standin.calls)
    await asyncio.gather(approve(env, copies[0], BOB), approve(env, copies[1], CAROL))
    await env.standin.wait_for("response_url", lambda c: "tbs_" in c.text_content(), after=mark)
    await env.standin.wait_for(
        "chat.postEphemeral", lambda c: "already" in c.text_content(), after=mark
    )
    issued = [e for e in audit.events(env.db, "T0TOKENBOT") if e.action == "token.issued"]
    assert len(issued) == 1
    assert len([c for c in env.standin.calls[mark:] if c.method == "chat.update"]) == 2


async def test_a_double_click_gives_one_token_and_updates_each_copy_once(env: Running) -> None:
    copies = await requested(env)
    mark = len(env.standin.calls)
    await asyncio.gather(approve(env, copies[0], BOB), approve(env, copies[0], BOB))
    await env.standin.wait_for("response_url", lambda c: "tbs_" in c.text_content(), after=mark)
    refusal = await env.standin.wait_for(
        "chat.postEphemeral", lambda c: "already approved" in c.text_content(), after=mark
    )
    assert refusal.args["user"] == BOB
    issued = [e for e in audit.events(env.db, "T0TOKENBOT") if e.action == "token.issued"]
    assert len(issued) == 1
    updates = [c for c in env.standin.calls[mark:] if c.method == "chat.update"]
    assert sorted(c.args["channel"] for c in updates) == ["D0BOB", "D0CAROL"]


async def test_people_without_standing_are_refused_and_nothing_changes(env: Running) -> None:
    copies = await requested(env)
    env.standin.users[ALICE]["is_admin"] = True  # an admin, but the requester
    env.standin.add_user("U0NOBODY", "nobody")  # neither admin nor owner
    for user, why in (
        (ALICE, "your own request"),
        (GUEST, "Guests cannot"),
        ("U0NOBODY", "admins and owners"),
    ):
        mark = len(env.standin.calls)
        await approve(env, copies[0], user)
        refusal = await env.standin.wait_for("chat.postEphemeral", after=mark)
        assert why in refusal.text_content() and refusal.args["user"] == user
    env.standin.users[CAROL]["deleted"] = True
    mark = len(env.standin.calls)
    await approve(env, copies[1], CAROL)
    refusal = await env.standin.wait_for("chat.postEphemeral", after=mark)
    assert "deactivated" in refusal.text_content()
    assert not [e for e in audit.events(env.db, "T0TOKENBOT") if e.action == "token.issued"]


async def test_deny_asks_for_a_reason_which_the_requester_receives(env: Running) -> None:
    copies = await requested(env)
    mark = len(env.standin.calls)
    await env.slack.click(copies[0], "deny_request", BOB)
    opened = await env.standin.wait_for("views.open", after=mark)
    view_id = opened.result["view"]["id"]
    empty = await env.slack.submit_view(view_id, BOB, {"reason": {"value": " "}})
    assert "why the request is denied" in empty.json()["errors"]["reason"]
    mark = len(env.standin.calls)
    done = await env.slack.submit_view(view_id, BOB, {"reason": {"value": "use the shared one"}})
    assert done.content == b""
    told = await env.standin.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    assert "denied by <@U0BOB>: use the shared one" in told.text_content()
    updates = [c for c in env.standin.calls[mark:] if c.method == "chat.update"]
    assert len(updates) == 2 and all("Denied by" in c.text_content() for c in updates)


async def test_an_approvals_channel_gets_the_one_copy(env: Running) -> None:
    env.deps.settings.approvals_channel = "C0APPROVALS"
    copies = await requested(env)
    assert [c.args["channel"] for c in copies] == ["C0APPROVALS"]


async def test_an_unanswered_request_expires_and_its_copies_say_so(env: Running) -> None:
    from datetime import timedelta

    from bot.jobs import sweep_and_deliver
    from bot.standin.harness import Clock

    clock = env.deps.clock = Clock()
    await requested(env)
    clock.advance(timedelta(days=7, seconds=1))
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    updates = [c for c in env.standin.calls[mark:] if c.method == "chat.update"]
    assert len(updates) == 2 and all("was expired" in c.text_content() for c in updates)


async def test_requests_lists_mine_with_cancel_and_cancelling_updates_the_copies(
    env: Running,
) -> None:
    await requested(env)
    listing = await run_command(env, "requests", ALICE)
    assert "Your pending requests" in listing.text_content()
    assert "Waiting for your decision" not in listing.text_content()  # alice is no approver
    mark = len(env.standin.calls)
    await env.slack.click(listing, "cancel_request", ALICE)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "No pending requests" in answer.text_content()
    updates = [c for c in env.standin.calls[mark:] if c.method == "chat.update"]
    assert len(updates) == 2 and all("was cancelled" in c.text_content() for c in updates)


async def test_requests_shows_an_approver_what_waits_for_them(env: Running) -> None:
    await requested(env)
    listing = await run_command(env, "requests", BOB)
    assert "Waiting for your decision" in listing.text_content()
    mark = len(env.standin.calls)
    await env.slack.click(listing, "approve_request", BOB)
    await env.standin.wait_for("response_url", lambda c: "tbs_" in c.text_content(), after=mark)


async def test_report_counts_seats_service_users_and_tokens_for_admins_only(
    env: Running,
) -> None:
    from tests.e2e.flows import generate

    copies = await requested(env)  # bob and carol are admins
    mark = len(env.standin.calls)
    await approve(env, copies[0], BOB)
    await env.standin.wait_for("response_url", lambda c: "tbs_" in c.text_content(), after=mark)
    await generate(env, ALICE, "one")
    await generate(env, ALICE, "two")
    await generate(env, CAROL, "carols")
    listing = await run_command(env, "list", CAROL)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", CAROL)
    await env.standin.wait_for("response_url", after=mark)
    text = (await run_command(env, "report", BOB)).text_content()
    assert "members holding an active personal token): 1" in text  # alice; carol revoked
    assert "*Service users* (never seats): 1" in text
    assert "*User tokens:* 2 active, 1 revoked, 0 expired" in text
    assert "*Service tokens:* 1 active, 0 revoked, 0 expired" in text
    refused = (await run_command(env, "report", ALICE)).text_content()
    assert "Only workspace admins and owners" in refused
