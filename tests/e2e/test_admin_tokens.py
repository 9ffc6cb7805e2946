"""Admins act on any member's tokens (R16): `/token list @member`, Revoke on that list,
and the member told by DM who revoked which token."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from bot.jobs import sweep_and_deliver
from bot.standin.harness import Clock, Running
from bot.standin.server import Call
from storage import audit, tokenformat, tokens, usage
from storage.models import NoticeKind, OutboxMessage
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import eventually, generate, run_command, settled

ORG = "T0TOKENBOT"
ONLY_ADMINS = "Only workspace admins and owners can see another member's tokens."


def make_admin(env: Running, user: str = BOB) -> None:
    env.standin.users[user]["is_admin"] = True


def active_names(env: Running, user: str) -> list[str]:
    return [t.name for t in tokens.list_user_tokens(env.db, ORG, user, env.deps.clock()).tokens]


def token_id(env: Running, user: str, name: str) -> int:
    return tokens.find_user_token(env.db, ORG, user, name, env.deps.clock()).id


def dms_to(env: Running, channel: str, after: int = 0) -> list[Call]:
    return [
        c
        for c in env.standin.calls[after:]
        if c.method == "chat.postMessage" and c.args.get("channel") == channel
    ]


def revoked_notices(env: Running) -> list[tuple[str | None, str]]:
    """The DMs owed to members whose token an admin revoked: (recipient, status)."""
    with env.db.read() as session:
        query = sa.select(OutboxMessage.recipient, OutboxMessage.status).where(
            OutboxMessage.kind == NoticeKind.REVOKED
        )
        return [(row.recipient, row.status) for row in session.execute(query)]


async def alice_with_two_tokens(env: Running) -> tuple[str, str]:
    make_admin(env)
    return await generate(env, ALICE, "one"), await generate(env, ALICE, "two")


async def test_an_admin_lists_a_members_tokens_by_mention_with_revoke_buttons(
    env: Running,
) -> None:
    one, _ = await alice_with_two_tokens(env)
    for mention in (f"<@{ALICE}|alice>", f"<@{ALICE}>"):
        listing = await run_command(env, f"list {mention}", BOB)
        text = listing.text_content()
        assert f"*Active tokens of <@{ALICE}>* (2 of 10)" in text
        assert "*one*" in text and "*two*" in text and tokenformat.hint(one) in text
        assert one not in text
        values = [
            b["accessory"]["value"]
            for b in listing.blocks
            if b.get("accessory", {}).get("action_id") == "revoke_member_token"
        ]
        assert values == [f"{token_id(env, ALICE, n)}:{ALICE}" for n in ("one", "two")]


async def test_an_admin_sees_a_member_without_tokens_said_plainly(env: Running) -> None:
    make_admin(env)
    listing = await run_command(env, f"list <@{ALICE}>", BOB)
    assert f"<@{ALICE}> has no active tokens." in listing.text_content()


async def test_a_member_who_is_not_an_admin_is_refused_and_sees_no_tokens(env: Running) -> None:
    await generate(env, BOB, "bobs-secret-name")
    answer = await run_command(env, f"list <@{BOB}|bob>", ALICE)
    assert answer.method == "ack"
    assert ONLY_ADMINS in answer.text_content()
    assert "bobs-secret-name" not in answer.text_content()


async def test_an_admin_who_names_no_member_is_told_how(env: Running) -> None:
    make_admin(env)
    for text in ("list alice", f"list <@{ALICE}> <@{BOB}>", "list <#C0GENERAL|general>"):
        answer = await run_command(env, text, BOB)
        assert "Name one member, as a mention: `/token list @member`." in answer.text_content()


async def test_an_admins_revoke_redraws_the_members_list_and_tells_them_by_dm(
    env: Running,
) -> None:
    one, two = await alice_with_two_tokens(env)
    listing = await run_command(env, f"list <@{ALICE}>", BOB)
    mark = len(env.standin.calls)
    value = f"{token_id(env, ALICE, 'one')}:{ALICE}"
    await env.slack.click(listing, "revoke_member_token", BOB, value=value)
    redrawn = await env.standin.wait_for("response_url", after=mark)
    assert redrawn.args["replace_original"] is True
    text = redrawn.text_content()
    assert "Revoked *one*" in text and f"*Active tokens of <@{ALICE}>* (1 of 10)" in text
    assert "*two*" in text and "*one*" not in text.replace("Revoked *one*", "")
    assert usage.validate(env.db, one, env.deps.clock()) is None
    assert usage.validate(env.db, two, env.deps.clock()) is not None
    # The member hears who revoked which token, through the outbox, not from the click.
    dm = await env.standin.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    said = dm.text_content()
    assert f"<@{BOB}> revoked your token *one* (`{tokenformat.hint(one)}`)" in said
    assert one not in said and "/token new" in said
    await eventually(lambda: revoked_notices(env), lambda n: n == [(ALICE, "sent")])
    [event] = [e for e in audit.events(env.db, ORG) if e.action == "token.revoked"]
    assert (event.actor, event.detail["reason"]) == (BOB, "revoked by admin")


async def test_a_member_revoking_their_own_token_gets_no_dm(env: Running) -> None:
    await generate(env, ALICE, "mine")
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    await env.standin.wait_for("response_url", after=mark)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    assert revoked_notices(env) == [] and dms_to(env, "D0ALICE", mark) == []


def notice_attempts(env: Running) -> list[tuple[str, int, str | None]]:
    with env.db.read() as session:
        query = sa.select(
            OutboxMessage.status, OutboxMessage.attempts, OutboxMessage.last_error
        ).where(OutboxMessage.kind == NoticeKind.REVOKED)
        return [tuple(row) for row in session.execute(query)]


async def test_a_dm_slack_refuses_stays_queued_and_a_later_sweep_sends_it(env: Running) -> None:
    clock = env.deps.clock = Clock()
    await alice_with_two_tokens(env)
    listing = await run_command(env, f"list <@{ALICE}>", BOB)
    env.standin.fail_next("chat.postMessage", error="internal_error")
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_member_token", BOB)
    await env.standin.wait_for("response_url", after=mark)
    refused = await eventually(lambda: notice_attempts(env), lambda n: bool(n and n[0][2]))
    assert refused == [("pending", 1, "internal_error")]
    # The delivery started by the click is over (it looks for due messages once more
    # after the refusal: moved in time before then, it would send the DM itself).
    await settled(env)
    clock.advance(timedelta(minutes=5))
    await sweep_and_deliver(env.deps, env.slack_app_client)
    assert revoked_notices(env) == [(ALICE, "sent")]
    [delivered] = [c for c in dms_to(env, "D0ALICE", mark) if c.result.get("ok")]
    assert "revoked your token *one*" in delivered.text_content()


async def test_a_forged_click_by_a_member_who_is_not_an_admin_changes_and_shows_nothing(
    env: Running,
) -> None:
    await alice_with_two_tokens(env)
    listing = await run_command(env, f"list <@{ALICE}>", BOB)
    env.standin.users[BOB]["is_admin"] = False  # no longer an admin at the click
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_member_token", BOB)
    answer = await env.standin.wait_for("response_url", after=mark)
    text = answer.text_content()
    assert "Only workspace admins and owners can revoke another member's tokens." in text
    assert "*one*" not in text and "*two*" not in text  # the list is not shown again
    assert active_names(env, ALICE) == ["one", "two"]
    assert revoked_notices(env) == []


async def test_a_second_click_on_a_revoked_token_says_so_over_the_members_list(
    env: Running,
) -> None:
    await alice_with_two_tokens(env)
    listing = await run_command(env, f"list <@{ALICE}>", BOB)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_member_token", BOB)
    await env.standin.wait_for("response_url", after=mark)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_member_token", BOB)  # the same, stale, list
    again = await env.standin.wait_for("response_url", after=mark)
    text = again.text_content()
    assert again.args["replace_original"] is True
    assert text.index("“one” is no longer active") < text.index("*two*")
    assert len(revoked_notices(env)) == 1  # the refused click queued no second DM


async def test_a_tampered_member_button_is_answered_plainly(env: Running) -> None:
    await alice_with_two_tokens(env)
    listing = await run_command(env, f"list <@{ALICE}>", BOB)
    blocks = listing.blocks
    for block in blocks:
        if block.get("accessory", {}).get("action_id") == "revoke_member_token":
            block["accessory"]["value"] = "not-a-token"
    listing.args["blocks"] = blocks
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_member_token", BOB)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "out of date" in answer.text_content()
    assert active_names(env, ALICE) == ["one", "two"]
