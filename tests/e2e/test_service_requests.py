"""Service-token requests in Slack: modal, routing, Approve/Deny, first decision wins."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import parse_qs, quote

import httpx
import pytest
import sqlalchemy as sa

from bot.standin.client import http_client
from bot.standin.harness import RESOURCE_SERVER, Running
from bot.standin.server import Call, message_problems
from storage import approvals, audit, tokenformat
from storage.orgs import ORG, lock_org
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import run_command, settled, until_valid

CAROL, GUEST = "U0CAROL", "U0GUEST"
GOOD = {
    "name": {"value": "ci-deployer"},
    "purpose": {"value": "deploys from CI"},
    "justification": {"value": "the pipeline needs it"},
}


def allow_pending(env: Running, cap: int, org: str = "T0TOKENBOT") -> None:
    """Let each member of ``org`` have ``cap`` requests pending at once (5 by default)."""
    with env.db.write() as session:
        lock_org(session, org, env.deps.clock())
        session.execute(sa.update(ORG).where(ORG.c.slack_id == org).values(pending_request_cap=cap))


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
    await settled(env)  # the Home tabs the request changed are published again
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
    # The copies are updated once the token is on its way.
    updates = await env.standin.wait_for_count("chat.update", 2, after=mark)
    assert sorted(c.args["channel"] for c in updates) == ["D0BOB", "D0CAROL"]
    assert all("Approved by <@U0BOB>" in c.text_content() for c in updates)
    async with http_client(base_url=env.url, auth=httpx.BasicAuth(*RESOURCE_SERVER)) as h:
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
    updates = await env.standin.wait_for_count("chat.update", 2, after=mark)
    issued = [e for e in audit.events(env.db, "T0TOKENBOT") if e.action == "token.issued"]
    assert len(issued) == 1
    assert len(updates) == 2


async def test_a_double_click_gives_one_token_and_updates_each_copy_once(env: Running) -> None:
    copies = await requested(env)
    mark = len(env.standin.calls)
    await asyncio.gather(approve(env, copies[0], BOB), approve(env, copies[0], BOB))
    await env.standin.wait_for("response_url", lambda c: "tbs_" in c.text_content(), after=mark)
    refusal = await env.standin.wait_for(
        "chat.postEphemeral", lambda c: "already approved" in c.text_content(), after=mark
    )
    assert refusal.args["user"] == BOB
    updates = await env.standin.wait_for_count("chat.update", 2, after=mark)
    issued = [e for e in audit.events(env.db, "T0TOKENBOT") if e.action == "token.issued"]
    assert len(issued) == 1
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
    assert "denied by <@U0BOB>:\\n> use the shared one" in told.text_content()
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
    shown = await env.standin.wait_for(
        "response_url", lambda c: "tbs_" in c.text_content(), after=mark
    )
    await until_valid(env, tokenformat.TOKEN_PATTERN.findall(shown.text_content())[0])
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


def mrkdwn_lines(call: Call) -> list[str]:
    """Every line of mrkdwn text in the message's blocks."""
    texts = []
    for block in call.blocks:
        texts.append(block.get("text", {}).get("text", ""))
        texts += [e["text"] for e in block.get("elements", []) if e.get("type") == "mrkdwn"]
    return "\n".join(texts).splitlines()


FAKE = "\n*Approved by admin* ✅\n`ready` ```tbs_fake``` ~x~ _y_"


async def test_what_a_requester_types_is_escaped_and_quoted_for_the_approvers(
    env: Running,
) -> None:
    admins(env)
    mark = len(env.standin.calls)
    fields = {
        **GOOD,
        "purpose": {"value": "<!channel> deploys" + FAKE},
        "justification": {"value": "needed <@U0CAROL>" + FAKE},
    }
    response = await submit_request(env, fields, ["api:write"])
    assert response.status_code == 200 and response.content == b""
    await env.standin.wait_for("response_url", lambda c: "went to" in c.text_content(), after=mark)
    copies = [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]
    assert len(copies) == 2
    for copy in copies:
        content = copy.text_content()
        assert "<!channel>" not in content and "<@U0CAROL>" not in content
        assert "&lt;!channel&gt;" in content and "&lt;@U0CAROL&gt;" in content
        for fake in ("*Approved by admin*", "`ready`", "```", "~x~", "_y_"):
            assert fake not in content
        typed = [line for line in mrkdwn_lines(copy) if "Approved by admin" in line]
        assert len(typed) == 2 and all(line.startswith("> ") for line in typed)


async def test_a_deny_reason_is_escaped_and_quoted_wherever_it_is_shown(env: Running) -> None:
    copies = await requested(env)
    mark = len(env.standin.calls)
    await env.slack.click(copies[0], "deny_request", BOB)
    opened = await env.standin.wait_for("views.open", after=mark)
    reason = "<!channel> no" + FAKE
    done = await env.slack.submit_view(
        opened.result["view"]["id"], BOB, {"reason": {"value": reason}}
    )
    assert done.content == b""
    told = await env.standin.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    updates = await asyncio.gather(
        *(
            env.standin.wait_for(
                "chat.update", lambda c, ch=ch: c.args["channel"] == ch, after=mark
            )
            for ch in ("D0BOB", "D0CAROL")
        )
    )
    for message in (told, *updates):
        content = message.text_content()
        assert "<!channel>" not in content and "&lt;!channel&gt;" in content
        assert "*Approved by admin*" not in content
        typed = [line for line in mrkdwn_lines(message) if "Approved by admin" in line]
        assert typed and all(line.startswith("> ") for line in typed)


async def test_a_justification_of_escapes_still_reaches_every_approver(env: Running) -> None:
    admins(env)
    mark = len(env.standin.calls)
    fields = {**GOOD, "purpose": {"value": "&" * 500}, "justification": {"value": "&" * 1000}}
    response = await submit_request(env, fields, ["api:write"])
    assert response.status_code == 200 and response.content == b""
    await env.standin.wait_for("response_url", lambda c: "went to" in c.text_content(), after=mark)
    copies = [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]
    assert sorted(c.args["channel"] for c in copies) == ["D0BOB", "D0CAROL"]
    assert all(c.result["ok"] for c in copies), [c.result for c in copies]
    assert all("&amp;&amp;&amp;" in c.text_content() for c in copies)


async def test_a_deny_reason_of_escapes_still_updates_every_copy(env: Running) -> None:
    copies = await requested(env)
    mark = len(env.standin.calls)
    await env.slack.click(copies[0], "deny_request", BOB)
    opened = await env.standin.wait_for("views.open", after=mark)
    done = await env.slack.submit_view(
        opened.result["view"]["id"], BOB, {"reason": {"value": "<" * 1000}}
    )
    assert done.content == b""
    told = await env.standin.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    assert told.result["ok"], told.result
    updates = await asyncio.gather(
        *(
            env.standin.wait_for(
                "chat.update", lambda c, ch=ch: c.args["channel"] == ch, after=mark
            )
            for ch in ("D0BOB", "D0CAROL")
        )
    )
    assert all(u.result["ok"] and "Denied by" in u.text_content() for u in updates)


async def test_a_sixth_pending_request_gets_an_inline_error_that_says_the_limit(
    env: Running,
) -> None:
    admins(env)
    for n in range(5):
        mark = len(env.standin.calls)
        ok = await submit_request(env, {**GOOD, "name": {"value": f"svc-{n}"}}, ["api:read"])
        assert ok.content == b""
        await env.standin.wait_for(
            "response_url", lambda c: "went to" in c.text_content(), after=mark
        )
    mark = len(env.standin.calls)
    refused = await submit_request(env, {**GOOD, "name": {"value": "svc-5"}}, ["api:read"])
    assert refused.json()["response_action"] == "errors"
    assert "the limit is 5 per member" in refused.json()["errors"]["name"]
    assert not [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]


async def test_requests_with_many_pending_fits_in_one_message_and_says_how_many_more(
    env: Running,
) -> None:
    admins(env)
    for n in range(30):  # 6 members with 5 requests each
        approvals.request_service_token(
            env.db,
            "T0TOKENBOT",
            f"U0REQ{n // 5}",
            name=f"svc-{n:02d}",
            purpose="deploys",
            scopes=["api:read"],
            justification="&" * 1000,
            now=env.deps.clock(),
        )
    listing = await run_command(env, "requests", BOB)
    assert message_problems(listing.args) == []
    shown = sum(1 for b in listing.blocks if b["type"] == "actions")
    assert 0 < shown < 30
    assert f"… and {30 - shown} more waiting" in listing.text_content()


async def test_a_name_taken_meanwhile_closes_the_request_and_says_so(
    env: Running, caplog: pytest.LogCaptureFixture
) -> None:
    copies = await requested(env)  # alice asks for a new service user, ci-deployer
    other = approvals.request_service_token(
        env.db,
        "T0TOKENBOT",
        "U0DAVE",
        name="ci-deployer",
        purpose="another one",
        scopes=["api:read"],
        justification="mine",
        now=env.deps.clock(),
    )
    approvals.decide(
        env.db, "T0TOKENBOT", other.id, CAROL, approve=True, reason=None, now=env.deps.clock()
    )
    mark = len(env.standin.calls)
    response = await approve(env, copies[0], BOB)
    assert response.status_code == 200
    told = await env.standin.wait_for(
        "chat.postEphemeral", lambda c: c.args.get("user") == BOB, after=mark
    )
    assert "cannot be approved: the name ci-deployer was given to another service user" in (
        told.text_content()
    )
    dm = await env.standin.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    assert "was closed: the name ci-deployer was given" in dm.text_content()
    assert "another name" in dm.text_content()
    updates = [c for c in env.standin.calls[mark:] if c.method == "chat.update"]
    assert sorted(c.args["channel"] for c in updates) == ["D0BOB", "D0CAROL"]
    assert all("was cancelled: the name ci-deployer" in c.text_content() for c in updates)
    assert approvals.pending_requests(env.db, "T0TOKENBOT") == []
    issued = [e for e in audit.events(env.db, "T0TOKENBOT") if e.action == "token.issued"]
    assert len(issued) == 1  # dave's only
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_approved_token_that_cannot_be_delivered_is_revoked_and_the_copies_say_so(
    env: Running,
) -> None:
    copies = await requested(env)
    env.standin.fail_next("response_url", status=404)
    env.standin.fail_next("conversations.open", error="user_not_found")
    mark = len(env.standin.calls)
    await approve(env, copies[0], BOB)
    final = await asyncio.gather(
        *(
            env.standin.wait_for(
                "chat.update",
                lambda c, ch=ch: c.args["channel"] == ch and "not be delivered" in c.text_content(),
                after=mark,
            )
            for ch in ("D0BOB", "D0CAROL")
        )
    )
    for copy in final:
        content = copy.text_content()
        assert "Approved by <@U0BOB>" in content
        assert "could not be delivered to <@U0ALICE>" in content and "revoked" in content
        assert "/token service request" in content
    actions = [e.action for e in audit.events(env.db, "T0TOKENBOT")]
    assert actions.count("token.issued") == 1 and actions.count("token.revoked") == 1
