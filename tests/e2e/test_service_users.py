"""Service users after approval: listed for owners and admins, revoked by them, their
tokens' reminders sent to the owners, the approvers' daily digest, and the admins told
when a sole owner leaves (R5, R12, R16, R17, R25)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import sqlalchemy as sa

from bot.jobs import sweep_and_deliver
from bot.standin.client import http_client
from bot.standin.harness import RESOURCE_SERVER, Clock, Running
from bot.standin.server import Call
from storage import approvals, audit, members, tokenformat
from storage.models import Member, NoticeKind, OutboxMessage
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import eventually, run_command, settled, until_valid
from tests.e2e.test_members import deliver, envelope
from tests.e2e.test_service_requests import CAROL, admins, approve, requested

ORG = "T0TOKENBOT"
NOBODY = "U0NOBODY"
DAY = timedelta(days=1)


async def approved(env: Running) -> str:
    """Alice's request for ci-deployer, approved by Bob; the secret she was shown."""
    copies = await requested(env)
    mark = len(env.standin.calls)
    await approve(env, copies[0], BOB)
    shown = await env.standin.wait_for(
        "response_url", lambda c: "tbs_" in c.text_content(), after=mark
    )
    env.standin.add_user(NOBODY, "nobody")
    secret = await until_valid(env, str(tokenformat.TOKEN_PATTERN.findall(shown.text_content())[0]))
    await settled(env)  # the Home tabs the approval changed are published again
    return secret


async def introspect(env: Running, secret: str) -> dict:
    async with http_client(base_url=env.url, auth=httpx.BasicAuth(*RESOURCE_SERVER)) as h:
        return (await h.post("/api/v1/introspect", data={"token": secret})).json()


def buttons(call: Call) -> list[str]:
    """The text of every button in the message, in order."""
    found = []
    for block in call.blocks:
        elements = block["elements"] if block["type"] == "actions" else [block.get("accessory")]
        found += [e["text"]["text"] for e in elements if e and e.get("type") == "button"]
    return found


def dms_to(env: Running, channel: str, after: int = 0) -> list[Call]:
    return [
        c
        for c in env.standin.calls[after:]
        if c.method == "chat.postMessage" and c.args.get("channel") == channel
    ]


async def test_owners_see_their_service_users_admins_all_and_others_none(env: Running) -> None:
    secret = await approved(env)
    hint = tokenformat.hint(secret)
    mine = await run_command(env, "service list", ALICE)
    text = mine.text_content()
    assert "*Your service users* (1)" in text and "*ci-deployer*" in text
    assert "`api:write`" in text and "owners: <@U0ALICE>" in text and hint in text
    assert buttons(mine) == ["Add owner", "Remove owner", "Rotate", "Revoke"]
    assert secret not in text
    every = await run_command(env, "service list", BOB)  # an admin who owns none
    assert "*All service users* (1)" in every.text_content()
    none = await run_command(env, "service list", NOBODY)
    assert "You own no service users" in none.text_content() and buttons(none) == []


async def test_an_owner_revokes_from_the_list_and_the_token_stops_working(env: Running) -> None:
    secret = await approved(env)
    listing = await run_command(env, "service list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_service_token", ALICE)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert answer.args["replace_original"] is True
    assert "Revoked *ci-deployer*" in answer.text_content()
    assert "No active tokens." in answer.text_content()
    assert await introspect(env, secret) == {"active": False}


async def test_an_admin_revokes_a_service_token_they_do_not_own(env: Running) -> None:
    secret = await approved(env)
    listing = await run_command(env, "service list", CAROL)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_service_token", CAROL)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "Revoked *ci-deployer*" in answer.text_content()
    assert await introspect(env, secret) == {"active": False}
    [revoked] = [e for e in audit.events(env.db, ORG) if e.action == "token.revoked"]
    assert (revoked.actor, revoked.detail["reason"]) == (CAROL, "revoked by admin")


async def test_someone_neither_owner_nor_admin_is_refused_and_nothing_changes(
    env: Running,
) -> None:
    secret = await approved(env)
    listing = await run_command(env, "service list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_service_token", NOBODY)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "only tokens of service users you own" in answer.text_content()
    assert (await introspect(env, secret))["active"] is True
    env.standin.users[BOB]["deleted"] = True  # no longer an admin who may
    await env.slack.click(listing, "revoke_service_token", BOB)
    await env.standin.wait_for(
        "response_url", lambda c: "you own" in c.text_content(), after=mark + 1
    )
    assert (await introspect(env, secret))["active"] is True


async def test_a_service_tokens_reminder_goes_to_its_owner_and_revoke_now_works(
    env: Running,
) -> None:
    clock = env.deps.clock = Clock()
    secret = await approved(env)
    clock.advance(23 * DAY)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    [dm] = dms_to(env, "D0ALICE", mark)
    assert "of the service user *ci-deployer*" in dm.text_content()
    assert "in 7 days" in dm.text_content() and tokenformat.hint(secret) in dm.text_content()
    assert buttons(dm) == ["Revoke now", "Keep for another period", "Rotate"]
    assert not dms_to(env, "D0BOB", mark)  # bob approved it; he does not own it
    mark = len(env.standin.calls)
    await env.slack.click(dm, "revoke_service_token", ALICE)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "Revoked *ci-deployer*" in answer.text_content()
    assert await introspect(env, secret) == {"active": False}


async def test_approvers_get_one_digest_a_day_while_requests_wait(env: Running) -> None:
    clock = env.deps.clock = Clock()
    await requested(env)  # bob and carol were sent the request itself
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    assert not dms_to(env, "D0BOB", mark)  # not waiting a day yet
    clock.advance(DAY)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    again = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)  # once a day, not once a sweep
    assert env.standin.calls[again:] == []  # not even a question to Slack
    for channel in ("D0BOB", "D0CAROL"):
        [digest] = dms_to(env, channel, mark)
        text = digest.text_content()
        assert "Requests waiting for a decision* (1)" in text
        assert "<@U0ALICE> asks for *ci-deployer*" in text and "/token requests" in text
    assert not dms_to(env, "D0ALICE", mark)  # the requester decides nothing
    clock.advance(DAY)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    assert len(dms_to(env, "D0BOB", mark)) == 1


ELSEWHERE = "T0ELSEWHERE"  # another organization in the same database


def elsewhere_request(env: Running):
    """A pending request of the other organization, for its service user their-svc."""
    return approvals.request_service_token(
        env.db,
        ELSEWHERE,
        "U0STRANGER",
        name="their-svc",
        purpose="theirs",
        scopes=["api:read"],
        justification="theirs",
        now=env.deps.clock(),
    )


async def test_digests_tell_only_of_this_workspaces_requests(env: Running) -> None:
    clock = env.deps.clock = Clock()
    await requested(env)  # one of this workspace's, routed
    elsewhere_request(env)
    clock.advance(DAY)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    [digest] = dms_to(env, "D0BOB", mark)
    assert "ci-deployer" in digest.text_content()
    assert "their-svc" not in digest.text_content()
    assert "U0STRANGER" not in digest.text_content()


async def test_reports_tell_only_of_this_workspaces_members(env: Running) -> None:
    admins(env)
    bob = members.Profile(BOB, "bob", "admin", deleted=False)
    members.sync_member(env.db, ELSEWHERE, bob, env.deps.clock())
    pending = elsewhere_request(env)
    approvals.decide(
        env.db, ELSEWHERE, pending.id, BOB, approve=True, reason=None, now=env.deps.clock()
    )
    gone = members.Profile("U0STRANGER", None, "member", deleted=True)
    assert members.sync_member(env.db, ELSEWHERE, gone, env.deps.clock()).orphaned
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    assert not [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]
    assert reports(env) == [("U0STRANGER", ["their-svc"], "pending")]


async def test_a_digest_slack_refuses_is_sent_by_a_later_sweep_that_day(env: Running) -> None:
    clock = env.deps.clock = Clock()
    await requested(env)
    clock.advance(DAY)
    env.standin.fail_next("chat.postMessage", error="internal_error", times=2)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    assert not [c for c in dms_to(env, "D0BOB", mark) if c.result.get("ok")]
    clock.advance(timedelta(minutes=5))
    await sweep_and_deliver(env.deps, env.slack_app_client)
    delivered = [c for c in dms_to(env, "D0BOB", mark) if c.result.get("ok")]
    assert len(delivered) == 1 and "Requests waiting" in delivered[0].text_content()


def profile_at(env: Running, user_id: str):
    with env.db.read() as session:
        query = sa.select(Member.profile_at).where(Member.slack_user_id == user_id)
        return session.execute(query).scalar_one()


def reports(env: Running) -> list[tuple[str, list[str], str]]:
    """The reports to the admins, as queued: (member, service users, status)."""
    with env.db.read() as session:
        query = sa.select(OutboxMessage.payload, OutboxMessage.status).where(
            OutboxMessage.kind == NoticeKind.OWNERLESS
        )
        rows = session.execute(query)
        return [(row.payload["member"], row.payload["service_users"], row.status) for row in rows]


async def test_a_sole_owners_deactivation_is_reported_to_the_admins_once(env: Running) -> None:
    clock = env.deps.clock = Clock()
    secret = await approved(env)
    mark = len(env.standin.calls)
    gone = envelope("user_change__deleted_true__envelope__DERIVED.json", ALICE, "x")
    await deliver(env, gone, "EvALICEGONE")
    told = [
        await env.standin.wait_for(
            "chat.postMessage", lambda c, ch=ch: c.args.get("channel") == ch, after=mark
        )
        for ch in ("D0BOB", "D0CAROL")
    ]
    for message in told:
        text = message.text_content()
        assert "<@U0ALICE> was deactivated" in text and "*ci-deployer*" in text
    assert (await introspect(env, secret))["active"] is True  # R17: it keeps working
    later = clock.advance(timedelta(minutes=1))
    await deliver(env, gone, "EvALICEGONE2")  # a second event about the same change
    await eventually(lambda: profile_at(env, ALICE), lambda at: at == later)
    # The profile and any report are written in one transaction: none was queued.
    assert await eventually(lambda: reports(env), lambda r: r[0][2] == "sent") == [
        (ALICE, ["ci-deployer"], "sent")
    ]
    await sweep_and_deliver(env.deps, env.slack_app_client)
    assert len([c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]) == 2


def retry_at(env: Running):
    with env.db.read() as session:
        query = sa.select(OutboxMessage.next_attempt_at).where(
            OutboxMessage.kind == NoticeKind.OWNERLESS
        )
        return session.execute(query).scalar()


async def test_a_report_slack_refuses_at_first_reaches_the_admins_later(env: Running) -> None:
    clock = env.deps.clock = Clock()
    await approved(env)
    env.standin.fail_next("users.list", error="internal_error")  # who the admins are
    mark = len(env.standin.calls)
    gone = envelope("user_change__deleted_true__envelope__DERIVED.json", ALICE, "x")
    await deliver(env, gone, "EvALICEGONE")
    # Refused, so put back for a minute later (not held for the 5-minute lease).
    await eventually(lambda: retry_at(env), lambda at: at == clock() + timedelta(minutes=1))
    assert reports(env) == [(ALICE, ["ci-deployer"], "pending")]
    assert not [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]
    clock.advance(timedelta(minutes=10))
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    told = [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]
    assert sorted(c.args["channel"] for c in told) == ["D0BOB", "D0CAROL"]
    assert reports(env) == [(ALICE, ["ci-deployer"], "sent")]


async def test_with_no_owner_left_the_admins_are_reminded_and_may_keep_it(env: Running) -> None:
    clock = env.deps.clock = Clock()
    secret = await approved(env)
    bob = members.Profile(BOB, "bob", "admin", deleted=False)  # as tokenbot last saw him
    members.sync_member(env.db, ORG, bob, clock())
    members.sync_member(env.db, ORG, members.Profile(ALICE, "alice", "member", True), clock())
    clock.advance(23 * DAY)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    [dm] = [c for c in dms_to(env, "D0BOB", mark) if "expires in 7 days" in c.text_content()]
    assert "of the service user *ci-deployer*" in dm.text_content()
    await env.slack.click(dm, "keep_alive", NOBODY)  # neither owner nor admin
    refused = await env.standin.wait_for("response_url", after=mark)
    assert "service users you own" in refused.text_content()
    assert refused.args["replace_original"] is True  # the reminder says why, in its place
    mark = len(env.standin.calls)
    await env.slack.click(dm, "keep_alive", BOB)
    kept = await env.standin.wait_for("response_url", after=mark)
    assert "Kept *ci-deployer*" in kept.text_content()
    [event] = [e for e in audit.events(env.db, ORG) if e.action == "token.keep_alive"]
    assert event.actor == BOB
    assert (await introspect(env, secret))["exp"] > (clock() + 29 * DAY).timestamp()


async def test_when_slack_cannot_confirm_an_admin_the_click_is_answered(env: Running) -> None:
    secret = await approved(env)
    listing = await run_command(env, "service list", ALICE)
    env.standin.fail_next("users.info", error="internal_error")
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_service_token", CAROL)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "could not confirm your standing" in answer.text_content()
    assert (await introspect(env, secret))["active"] is True
