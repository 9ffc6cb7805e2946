"""Rotation with overlap in Slack (R18): ``/token rotate`` and the Rotate buttons, the new
token shown once, the old one valid through its grace period and refused after it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import func, select

from bot.jobs import sweep_and_deliver
from bot.standin.harness import Clock, Running
from bot.standin.server import Call
from storage import approvals, audit, tokenformat, tokens
from storage.models import ApprovalRequest, Token
from storage.orgs import ORG as ORGANIZATION
from storage.orgs import lock_org
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import generate, run_command, until_valid
from tests.e2e.test_home import home_view_id
from tests.e2e.test_reminders import first_reminder
from tests.e2e.test_service_users import NOBODY, approved, introspect

ORG = "T0TOKENBOT"
GRACE = timedelta(hours=24)


def set_grace(env: Running, hours: int) -> None:
    with env.db.write() as session:
        lock_org(session, ORG, env.deps.clock())
        session.execute(
            sa.update(ORGANIZATION)
            .where(ORGANIZATION.c.slack_id == ORG)
            .values(rotation_grace_hours=hours)
        )


def token_id(env: Running, name: str, user: str = ALICE) -> str:
    return str(tokens.find_user_token(env.db, ORG, user, name, env.deps.clock()).id)


def secrets_in(call: Call) -> list[str]:
    return [str(s) for s in tokenformat.TOKEN_PATTERN.findall(call.text_content())]


def count_tokens(env: Running) -> int:
    with env.db.read() as session:
        return session.exec(select(func.count()).select_from(Token)).one()


def epoch(at: datetime) -> int:
    return int(at.timestamp())


async def click_and_see(env: Running, message: Call, action: str, user: str, **kw: Any) -> Call:
    """Click ``action`` on ``message``; the app's first answer to the click."""
    mark = len(env.standin.calls)
    await env.slack.click(message, action, user, **kw)
    return await env.standin.wait_for("response_url", after=mark)


async def rotate_by_command(env: Running, name: str = "ci") -> tuple[Call, Call]:
    """``/token rotate name``, confirmed: the message that showed the new token, and the
    one that replaced the confirmation."""
    confirm = await run_command(env, f"rotate {name}", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(confirm, "rotate_token", ALICE)
    shown = await env.standin.wait_for("response_url", lambda c: bool(secrets_in(c)), after=mark)
    replaced = await env.standin.wait_for(
        "response_url", lambda c: c.args.get("replace_original") is True, after=mark
    )
    return shown, replaced


async def test_rotate_asks_to_confirm_and_changes_nothing_until_confirmed(env: Running) -> None:
    await generate(env, ALICE, "ci")
    before = token_id(env, "ci")
    confirm = await run_command(env, "rotate CI", ALICE)
    assert confirm.method == "ack"
    text = confirm.text_content()
    assert "Rotate *ci*" in text and "same name and permissions" in text
    assert "grace period" in text
    assert [e["action_id"] for e in confirm.blocks[1]["elements"]] == [
        "rotate_token",
        "cancel_rotate",
    ]
    assert token_id(env, "ci") == before and count_tokens(env) == 1
    cancelled = await click_and_see(env, confirm, "cancel_rotate", ALICE)
    assert "Nothing was rotated." in cancelled.text_content()
    assert token_id(env, "ci") == before and count_tokens(env) == 1
    assert "token.rotated" not in [e.action for e in audit.events(env.db, ORG)]


async def test_confirming_shows_the_new_token_once_and_the_old_one_works_until_the_grace_ends(
    env: Running,
) -> None:
    clock = env.deps.clock = Clock()
    old = await generate(env, ALICE, "ci")
    shown, replaced = await rotate_by_command(env)
    [new] = secrets_in(shown)
    await until_valid(env, new)
    assert new != old
    carrying = [c for c in env.standin.calls if new in c.text_content()]
    assert carrying == [shown]  # once, to the member, in a message Slack does not keep
    assert shown.args["response_type"] == "ephemeral" and shown.args["replace_original"] is False
    assert "keeps working until" in shown.text_content()
    # The confirmation gives way to the list: the new token only, named as before.
    listed = replaced.text_content()
    assert "Rotated *ci*" in listed and tokenformat.hint(new) in listed
    assert "(1 of 10)" in listed and new not in listed
    answer = await introspect(env, old)
    assert answer["active"] is True and answer["exp"] == epoch(clock() + GRACE)
    assert answer["name"] == "ci" and answer["sub"] == ALICE
    fresh = await introspect(env, new)
    assert fresh["active"] is True and fresh["scope"] == answer["scope"]
    assert fresh["exp"] == epoch(clock() + timedelta(days=30))


async def test_after_the_grace_the_sweep_revokes_the_old_token_as_rotated(env: Running) -> None:
    clock = env.deps.clock = Clock()
    old = await generate(env, ALICE, "ci")
    shown, _ = await rotate_by_command(env)
    new = await until_valid(env, secrets_in(shown)[0])
    clock.advance(GRACE / 2)
    assert (await introspect(env, old))["exp"] == epoch(clock() + GRACE / 2)  # a use moves it not
    clock.advance(GRACE / 2)
    mark = len(env.standin.calls)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    assert await introspect(env, old) == {"active": False}
    assert (await introspect(env, new))["active"] is True
    [revoked] = [e for e in audit.events(env.db, ORG) if e.action == "token.revoked"]
    assert revoked.detail["reason"] == "rotated" and revoked.detail["hint"] == (
        tokenformat.hint(old)
    )
    # It was not an expiry: nobody is told it expired.
    assert not [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]


async def test_a_rotation_at_the_cap_succeeds_and_the_old_token_does_not_count(
    env: Running,
) -> None:
    secrets = [await generate(env, ALICE, f"t{n}") for n in range(10)]
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "rotate_token", ALICE, value=token_id(env, "t0"))
    shown = await env.standin.wait_for("response_url", lambda c: bool(secrets_in(c)), after=mark)
    new = await until_valid(env, secrets_in(shown)[0])
    assert (await introspect(env, secrets[0]))["active"] is True  # in its grace period
    assert (await introspect(env, new))["active"] is True
    again = await run_command(env, "list", ALICE)
    assert "(10 of 10)" in again.text_content()
    assert tokenformat.hint(secrets[0]) not in again.text_content()
    refused = await run_command(env, "new eleventh", ALICE)
    assert "limit of 10 active tokens" in refused.text_content()
    assert len(tokens.list_user_tokens(env.db, ORG, ALICE, env.deps.clock()).tokens) == 10


async def test_with_no_grace_period_the_old_token_stops_at_once(env: Running) -> None:
    old = await generate(env, ALICE, "ci")
    set_grace(env, 0)
    shown, replaced = await rotate_by_command(env)
    new = await until_valid(env, secrets_in(shown)[0])
    assert "no longer works" in shown.text_content()
    assert "no longer works" in replaced.text_content()
    assert await introspect(env, old) == {"active": False}
    assert (await introspect(env, new))["active"] is True
    [revoked] = [e for e in audit.events(env.db, ORG) if e.action == "token.revoked"]
    assert revoked.detail["reason"] == "rotated"


async def test_someone_else_clicking_rotate_is_refused_and_nothing_changes(env: Running) -> None:
    old = await generate(env, ALICE, "ci")
    listing = await run_command(env, "list", ALICE)
    answer = await click_and_see(env, listing, "rotate_token", BOB)  # a forged click
    assert "You can rotate only your own tokens." in answer.text_content()
    assert not secrets_in(answer)
    assert count_tokens(env) == 1
    assert (await introspect(env, old))["exp"] == epoch(
        tokens.find_user_token(env.db, ORG, ALICE, "ci", env.deps.clock()).cutoff_at
    )
    assert "token.rotated" not in [e.action for e in audit.events(env.db, ORG)]


async def test_rotating_an_unknown_name_or_no_name_is_answered_plainly(env: Running) -> None:
    unknown = await run_command(env, "rotate nope", ALICE)
    assert "You have no active token named “nope”" in unknown.text_content()
    assert "See `/token list`." in unknown.text_content()
    nameless = await run_command(env, "rotate", ALICE)
    assert "`/token rotate <name>`" in nameless.text_content()
    assert count_tokens(env) == 0


async def test_a_token_in_its_grace_period_cannot_be_rotated_again(env: Running) -> None:
    await generate(env, ALICE, "ci")
    listing = await run_command(env, "list", ALICE)
    old_id = token_id(env, "ci")
    mark = len(env.standin.calls)
    await env.slack.click(listing, "rotate_token", ALICE, value=old_id)
    await env.standin.wait_for("response_url", lambda c: bool(secrets_in(c)), after=mark)
    await env.standin.wait_for("response_url", lambda c: "Rotated" in c.text_content(), after=mark)
    again = await click_and_see(env, listing, "rotate_token", ALICE, value=old_id)  # stale list
    text = again.text_content()
    assert "was rotated already" in text and "Its replacement" in text
    assert again.args["replace_original"] is True and "(1 of 10)" in text
    assert count_tokens(env) == 2


async def test_ten_rotations_clicked_at_once_leave_one_new_token(env: Running) -> None:
    await generate(env, ALICE, "ci")
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    responses = await asyncio.gather(
        *(env.slack.click(listing, "rotate_token", ALICE) for _ in range(10))
    )
    assert all(r.status_code == 200 for r in responses)
    refusals = await env.standin.wait_for_count(
        "response_url", 9, lambda c: "was rotated already" in c.text_content(), after=mark
    )
    shown = await env.standin.wait_for("response_url", lambda c: bool(secrets_in(c)), after=mark)
    assert len(refusals) == 9
    assert len([c for c in env.standin.calls[mark:] if secrets_in(c)]) == 1
    assert count_tokens(env) == 2
    assert [e.action for e in audit.events(env.db, ORG)].count("token.rotated") == 1
    await until_valid(env, secrets_in(shown)[0])
    assert audit.verify_chain(env.db, ORG)


async def test_an_owner_rotates_a_service_token_without_a_new_approval(env: Running) -> None:
    clock = env.deps.clock = Clock()
    old = await approved(env)
    requests_before = len(approvals.pending_requests(env.db, ORG))
    listing = await run_command(env, "service list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "rotate_service_token", ALICE)
    shown = await env.standin.wait_for("response_url", lambda c: bool(secrets_in(c)), after=mark)
    [new] = secrets_in(shown)
    assert new.startswith("tbs_") and "of the service user *ci-deployer*" in shown.text_content()
    await until_valid(env, new)
    redrawn = await env.standin.wait_for(
        "response_url", lambda c: c.args.get("replace_original") is True, after=mark
    )
    assert "Rotated *ci-deployer*" in redrawn.text_content()
    assert tokenformat.hint(new) in redrawn.text_content() and new not in redrawn.text_content()
    # No request, no message to an approver: the grant is unchanged.
    assert not [c for c in env.standin.calls[mark:] if c.method == "chat.postMessage"]
    assert len(approvals.pending_requests(env.db, ORG)) == requests_before
    with env.db.read() as session:
        assert session.exec(select(func.count()).select_from(ApprovalRequest)).one() == 1
    fresh, before = await introspect(env, new), await introspect(env, old)
    assert (fresh["token_type"], fresh["sub"], fresh["scope"]) == (
        "service",
        "ci-deployer",
        "api:write",
    )
    assert before["active"] is True and before["exp"] == epoch(clock() + GRACE)


async def test_a_non_owner_non_admin_cannot_rotate_a_service_token(env: Running) -> None:
    old = await approved(env)
    listing = await run_command(env, "service list", ALICE)
    answer = await click_and_see(env, listing, "rotate_service_token", NOBODY)
    assert "You can rotate only tokens of service users you own." in answer.text_content()
    assert count_tokens(env) == 1
    assert (await introspect(env, old))["active"] is True


async def test_rotate_on_a_reminder_shows_the_new_token(env: Running) -> None:
    _, dm = await first_reminder(env)
    mark = len(env.standin.calls)
    await env.slack.click(dm, "rotate_token", ALICE)
    shown = await env.standin.wait_for("response_url", lambda c: bool(secrets_in(c)), after=mark)
    await until_valid(env, secrets_in(shown)[0])
    assert shown.args["response_type"] == "ephemeral"


async def test_each_rotation_is_audited_with_both_tokens_and_without_any_secret(
    env: Running,
) -> None:
    old = await generate(env, ALICE, "ci")
    shown, _ = await rotate_by_command(env)
    new = await until_valid(env, secrets_in(shown)[0])
    shown, _ = await rotate_by_command(env)  # the new one, in turn
    newer = await until_valid(env, secrets_in(shown)[0])
    rotations = [e for e in audit.events(env.db, ORG) if e.action == "token.rotated"]
    assert [(e.detail["old"]["hint"], e.detail["new"]["hint"]) for e in rotations] == [
        (tokenformat.hint(old), tokenformat.hint(new)),
        (tokenformat.hint(new), tokenformat.hint(newer)),
    ]
    assert all(e.actor == ALICE and e.detail["name"] == "ci" for e in rotations)
    exported = "\n".join(audit.export_jsonl(env.db, ORG))
    for secret in (old, new, newer):
        assert secret not in exported and secret[4:20] not in exported


async def test_a_new_token_that_reaches_nobody_leaves_the_old_one_as_it_was(
    env: Running,
) -> None:
    old = await generate(env, ALICE, "ci")
    before = token_id(env, "ci")
    confirm = await run_command(env, "rotate ci", ALICE)
    env.standin.fail_next("response_url", status=404, error="expired_url")
    env.standin.fail_next("chat.postEphemeral", error="channel_not_found", times=2)
    mark = len(env.standin.calls)
    await env.slack.click(confirm, "rotate_token", ALICE)
    answer = await env.standin.wait_for(
        "response_url", lambda c: c.args.get("replace_original") is True, after=mark
    )
    assert "could not be shown to you, so nothing changed" in answer.text_content()
    assert token_id(env, "ci") == before
    assert (await introspect(env, old))["active"] is True
    actions = [e.action for e in audit.events(env.db, ORG) if e.action != "token.used"]
    assert actions[-3:] == ["token.rotated", "token.revoked", "token.rotation_cancelled"]


async def test_rotate_on_home_shows_the_new_token_in_the_dm_and_refreshes_home(
    env: Running,
) -> None:
    old = await generate(env, ALICE, "ci")
    view_id = await home_view_id(env, ALICE)
    mark = len(env.standin.calls)
    await env.slack.click_in_view(view_id, "rotate_token", ALICE)
    shown = await env.standin.wait_for(
        "chat.postEphemeral", lambda c: bool(secrets_in(c)), after=mark
    )
    assert shown.args["channel"] == "D0ALICE" and shown.args["user"] == ALICE
    new = await until_valid(env, secrets_in(shown)[0])
    # (A publish that the generation started may still arrive after the mark.)
    refreshed = await env.standin.wait_for(
        "views.publish", lambda c: "Rotated *ci*" in c.text_content(), after=mark
    )
    assert tokenformat.hint(new) in refreshed.text_content()
    assert (await introspect(env, old))["active"] is True


async def test_an_admin_rotates_a_members_token_and_is_shown_the_new_one(env: Running) -> None:
    old = await generate(env, ALICE, "ci")
    env.standin.users[BOB]["is_admin"] = True
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "rotate_token", BOB)
    shown = await env.standin.wait_for("response_url", lambda c: bool(secrets_in(c)), after=mark)
    assert env.standin.response_urls[shown.args["_key"]]["user"] == BOB
    new = await until_valid(env, secrets_in(shown)[0])
    answer = await introspect(env, new)
    assert (answer["sub"], answer["name"]) == (ALICE, "ci")  # still Alice's token
    assert (await introspect(env, old))["active"] is True
    [event] = [e for e in audit.events(env.db, ORG) if e.action == "token.rotated"]
    assert (event.actor, event.detail["as"]) == (BOB, "admin")
