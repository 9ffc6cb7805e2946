"""Deactivation and membership from Slack's events, and the daily reconciliation (R17)."""

from __future__ import annotations

import json

from bot.jobs import reconcile_members
from bot.standin.harness import Running
from storage import audit, members, tokens
from tests.conftest import FIXTURES
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import eventually, generate
from tests.e2e.test_introspection import introspect

ORG = "T0TOKENBOT"


def envelope(fixture: str, user_id: str, event_id: str) -> dict:
    """Slack's event envelope from ``fixture``, about ``user_id`` in our workspace."""
    body = json.loads((FIXTURES / fixture).read_text())
    event = body["event"]
    event["user"] = {**event["user"], "id": user_id, "team_id": ORG}
    return event


async def deliver(env: Running, event: dict, event_id: str, retry: int | None = None):
    response = await env.slack.event(event, event_id=event_id, retry_num=retry)
    assert response.status_code == 200
    return response


def active(env: Running, user: str) -> list[str]:
    return [t.name for t in tokens.list_user_tokens(env.db, ORG, user, env.deps.clock()).tokens]


def deactivations(env: Running) -> int:
    return sum(e.action == "member.deactivated" for e in audit.events(env.db, ORG))


async def test_a_deactivated_member_loses_their_user_tokens_at_once(env: Running) -> None:
    await generate(env, ALICE, "one")
    await generate(env, ALICE, "two")
    await generate(env, BOB, "bobs")
    event = envelope("user_change__deleted_true__envelope__DERIVED.json", ALICE, "Ev1")
    await deliver(env, event, "EvDEACT1")
    await eventually(lambda: active(env, ALICE), lambda names: names == [])
    revoked = [e for e in audit.events(env.db, ORG) if e.action == "token.revoked"]
    assert {e.detail["reason"] for e in revoked} == {"owner deactivated"}
    assert len(revoked) == 2
    assert active(env, BOB) == ["bobs"]


async def test_a_repeated_event_delivery_has_no_second_effect(env: Running) -> None:
    await generate(env, ALICE, "one")
    gone = envelope("user_change__deleted_true__envelope__DERIVED.json", ALICE, "x")
    await deliver(env, gone, "EvGONE")
    await eventually(lambda: deactivations(env), lambda n: n == 1)
    back = {**gone, "user": {**gone["user"], "deleted": False}}
    await deliver(env, back, "EvBACK")  # reactivated in Slack
    await eventually(lambda: members.known_members(env.db, ORG).get(ALICE), lambda d: d is False)
    await deliver(env, gone, "EvGONE", retry=1)  # Slack delivers the first event again
    await deliver(env, back, "EvSYNC")  # a later event to wait for
    await eventually(lambda: members.known_members(env.db, ORG).get(ALICE), lambda d: d is False)
    assert deactivations(env) == 1
    assert members.known_members(env.db, ORG)[ALICE] is False


async def test_team_join_records_the_member(env: Running) -> None:
    event = envelope("team_join__envelope__DERIVED.json", "U0NEWBIE", "x")
    await deliver(env, event, "EvJOIN")
    known = await eventually(lambda: members.known_members(env.db, ORG), lambda m: "U0NEWBIE" in m)
    assert known["U0NEWBIE"] is False


async def test_reconciliation_catches_a_deactivation_whose_event_never_came(
    env: Running,
) -> None:
    await generate(env, BOB, "bobs")
    await generate(env, ALICE, "alices")
    env.standin.users[BOB]["deleted"] = True
    assert await reconcile_members(env.deps, env.slack_app_client) == 1
    assert active(env, BOB) == [] and active(env, ALICE) == ["alices"]
    assert await reconcile_members(env.deps, env.slack_app_client) == 0


async def test_after_the_daily_sync_introspection_answers_the_members_groups(
    env: Running,
) -> None:
    secret = await generate(env, ALICE, "ci")
    env.standin.groups = {"platform": [ALICE], "oncall": [BOB]}
    mark = len(env.standin.calls)
    await reconcile_members(env.deps, env.slack_app_client)
    fetched = [c for c in env.standin.calls[mark:] if c.method == "usergroups.list"]
    assert len(fetched) == 1  # once for everyone
    answer = (await introspect(env, secret)).json()
    assert answer["active"] is True and answer["groups"] == ["platform"]
