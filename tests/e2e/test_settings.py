"""``/token settings``: an admin sees the organization's policy in a modal and changes
it; bad values are answered on their field; nobody else changes anything."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bot.standin.client import http_client
from bot.standin.harness import RESOURCE_SERVER, Running
from storage import audit, settings, tokens, usage
from storage.settings import OrgSettings
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import generate, open_generate_modal, run_command
from tests.e2e.test_service_requests import GOOD, submit_request

ORG = "T0TOKENBOT"
ADMIN = "U0ADA"
CALLBACK = "org_settings"


@pytest.fixture(autouse=True)
def an_admin(env: Running) -> None:
    env.standin.add_user(ADMIN, "ada", is_admin=True)


def current(env: Running) -> OrgSettings:
    return settings.current_settings(env.db, ORG)


def changes_recorded(env: Running) -> list[dict[str, Any]]:
    return [e.detail for e in audit.events(env.db, ORG) if e.action == "setting.changed"]


async def open_settings(env: Running, user: str = ADMIN) -> str:
    opened = await run_command(env, "settings", user)
    assert opened.method == "views.open", opened.args
    assert opened.view["callback_id"] == CALLBACK
    return str(opened.result["view"]["id"])


def form(env: Running, view_id: str, **changes: Any) -> dict[str, dict[str, Any]]:
    """The modal's state as Slack submits it, with ``changes``: a string is what was
    typed in that block's input; a dict is the element's state."""
    state = env.slack.initial_state(view_id)
    for block, change in changes.items():
        if isinstance(change, dict):
            state[block] = {"value": change}
        else:
            state[block]["value"]["value"] = change
    return state


async def save(env: Running, view_id: str, user: str = ADMIN, **changes: Any) -> httpx.Response:
    response = await env.slack.submit_view(view_id, user, form(env, view_id, **changes))
    assert response.status_code == 200
    return response


def inline_errors(response: httpx.Response) -> dict[str, str]:
    answer = response.json()
    assert answer["response_action"] == "errors", answer
    errors: dict[str, str] = answer["errors"]
    return errors


async def test_an_admin_opens_the_modal_filled_in_with_the_current_values(env: Running) -> None:
    env.standin.groups = {"platform": [ALICE]}
    view = env.standin.views[await open_settings(env)]
    state = env.slack.initial_state(view["id"])
    text = {block: inputs["value"].get("value") for block, inputs in state.items()}
    assert text["user_token_cap"] == "10" and text["service_token_cap"] == "20"
    assert text["inactivity_days"] == "30" and text["reminder_days"] == "7, 1"
    assert text["request_ttl_days"] == "7" and text["pending_request_cap"] == "5"
    assert text["rotation_grace_hours"] == "24"
    assert text["scope_catalogue"] == "api:read\napi:write\nreports:read\nbilling:read"
    assert text["role_scopes"].splitlines() == [
        "owner: api:read api:write api:admin",
        "admin: api:read api:write api:admin",
        "member: api:read api:write",
        "guest: api:read",
    ]
    assert [o["value"] for o in state["allow_keep_alive"]["value"]["selected_options"]] == ["allow"]
    # The approvers are picked among the groups Slack lists; the default is chosen.
    group = state["approver_group"]["value"]
    assert group["selected_option"]["value"] == ":default"
    element = next(b for b in view["blocks"] if b.get("block_id") == "approver_group")["element"]
    assert [o["value"] for o in element["options"]] == [":default", "platform"]
    assert state["approvals_channel"]["value"]["selected_conversation"] is None
    assert "approvals_channel_default" not in state  # nothing to return to the default from
    assert env.standin.calls_to("usergroups.list")


async def test_saving_records_one_event_per_changed_value_and_says_what_changed(
    env: Running,
) -> None:
    env.standin.groups = {"platform": [ALICE]}
    view_id = await open_settings(env)
    mark = len(env.standin.calls)
    response = await save(
        env,
        view_id,
        user_token_cap="3",
        reminder_days="14, 3, 1",
        allow_keep_alive={"type": "checkboxes", "selected_options": []},
        approver_group={"type": "static_select", "selected_option": {"value": "platform"}},
        approvals_channel={"type": "conversations_select", "selected_conversation": "C0APPROVE"},
    )
    assert response.content == b"", response.text  # the modal closes
    now = current(env)
    assert (now.user_token_cap, now.reminder_days, now.allow_keep_alive) == (3, [14, 3, 1], False)
    assert (now.approver_group, now.approvals_channel) == ("platform", "C0APPROVE")
    assert now.service_token_cap == 20 and now.scope_catalogue[0] == "api:read"  # as they were
    assert changes_recorded(env) == [
        {"setting": "user_token_cap", "old": 10, "new": 3},
        {"setting": "reminder_days", "old": [7, 1], "new": [14, 3, 1]},
        {"setting": "allow_keep_alive", "old": True, "new": False},
        {"setting": "approver_group", "old": None, "new": "platform"},
        {"setting": "approvals_channel", "old": None, "new": "C0APPROVE"},
    ]
    assert [e.actor for e in audit.events(env.db, ORG)] == [ADMIN] * 5
    assert audit.verify_chain(env.db, ORG)
    told = await env.standin.wait_for("response_url", after=mark)
    text = told.text_content()
    assert "Settings saved" in text and "Personal tokens per member: 10 → 3" in text
    assert told.args["response_type"] == "ephemeral"

    # Saved again as shown: nothing changes, and nothing more is recorded.
    again = await save(env, await open_settings(env))
    assert again.content == b""
    assert len(changes_recorded(env)) == 5


async def test_the_grace_period_set_in_settings_is_the_next_rotations(env: Running) -> None:
    view_id = await open_settings(env)
    response = await save(env, view_id, rotation_grace_hours="2")
    assert response.content == b"", response.text
    assert changes_recorded(env) == [{"setting": "rotation_grace_hours", "old": 24, "new": 2}]
    await generate(env, ALICE, "ci")
    now = env.deps.clock()
    ci = tokens.find_user_token(env.db, ORG, ALICE, "ci", now)
    rotation = tokens.rotate_token(env.db, ORG, ALICE, ci.id, now)
    assert rotation.grace == timedelta(hours=2)


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"user_token_cap": "0"}, "user_token_cap", "from 1 to 1000"),
        ({"user_token_cap": "1001"}, "user_token_cap", "from 1 to 1000"),
        ({"service_token_cap": "10001"}, "service_token_cap", "from 1 to 10000"),
        ({"inactivity_days": "3651"}, "inactivity_days", "from 1 to 3650"),
        ({"inactivity_days": "2.5"}, "inactivity_days", "whole number"),
        ({"request_ttl_days": "91"}, "request_ttl_days", "from 1 to 90"),
        ({"rotation_grace_hours": "721"}, "rotation_grace_hours", "from 0 to 720"),
        ({"rotation_grace_hours": "-1"}, "rotation_grace_hours", "from 0 to 720"),
        ({"pending_request_cap": ""}, "pending_request_cap", "from 1 to 100"),
        ({"reminder_days": "7, soon"}, "reminder_days", "“soon” is not one"),
        ({"reminder_days": "7; 1"}, "reminder_days", "is not one"),
        ({"reminder_days": "7, 7"}, "reminder_days", "7 is there twice"),
        ({"reminder_days": "6, 5, 4, 3, 2, 1"}, "reminder_days", "at most 5"),
        ({"reminder_days": "0"}, "reminder_days", "at least 1 day"),
        ({"reminder_days": "30"}, "reminder_days", "1 to 29 days"),
        ({"inactivity_days": "5", "reminder_days": "7, 1"}, "reminder_days", "1 to 4 days"),
        ({"scope_catalogue": "\n  \n"}, "scope_catalogue", "at least one permission"),
        ({"scope_catalogue": "api read"}, "scope_catalogue", "no spaces"),
        ({"scope_catalogue": "a" * 76}, "scope_catalogue", "at most 75 characters"),
        ({"scope_catalogue": "x\nx"}, "scope_catalogue", "“x” is there twice"),
        (
            {"scope_catalogue": "\n".join(f"s{n}" for n in range(101))},
            "scope_catalogue",
            "at most 100",
        ),
        (
            {"role_scopes": "owner: api:read deploy:prod\nadmin:\nmember:\nguest:"},
            "role_scopes",
            "Not in the permission catalogue: “deploy:prod”",
        ),
        ({"role_scopes": "boss: api:read"}, "role_scopes", "“boss” is not one"),
        ({"role_scopes": "owner: api:read"}, "role_scopes", "admin, member, guest missing"),
        (
            {
                "approver_group": {
                    "type": "static_select",
                    "selected_option": {"value": "no-such-group"},
                }
            },
            "approver_group",
            "no user group @no-such-group",
        ),
        (
            {
                "approvals_channel": {
                    "type": "conversations_select",
                    "selected_conversation": "U0ALICE",
                }
            },
            "approvals_channel",
            "Pick a public or private channel",
        ),
    ],
)
async def test_a_bad_value_is_refused_on_its_field_and_nothing_changes(
    env: Running, changes: dict[str, Any], field: str, says: str
) -> None:
    before = current(env)
    view_id = await open_settings(env)
    mark = len(env.standin.calls)
    # A good change besides the bad one: it is not saved either.
    good = {"request_ttl_days": "8"} if field != "request_ttl_days" else {"user_token_cap": "8"}
    response = await save(env, view_id, **{**good, **changes})
    errors = inline_errors(response)
    assert says in errors[field]
    assert set(errors) == {field}
    assert current(env) == before
    assert changes_recorded(env) == []
    assert not [c for c in env.standin.calls[mark:] if c.method == "response_url"]


async def test_every_field_at_fault_is_answered_at_once(env: Running) -> None:
    view_id = await open_settings(env)
    response = await save(env, view_id, user_token_cap="0", reminder_days="x", scope_catalogue="")
    assert set(inline_errors(response)) == {"user_token_cap", "reminder_days", "scope_catalogue"}
    assert changes_recorded(env) == []


async def test_a_member_who_is_not_an_admin_cannot_open_the_settings(env: Running) -> None:
    mark = len(env.standin.calls)
    answer = await run_command(env, "settings", ALICE)
    assert answer.method == "ack"
    assert "Only workspace admins and owners can change the settings" in answer.text_content()
    assert not env.standin.calls_to("views.open")
    assert "usergroups.list" not in [c.method for c in env.standin.calls[mark:]]


async def test_a_forged_submission_by_a_member_changes_nothing(env: Running) -> None:
    before = current(env)
    view_id = await open_settings(env)  # the admin's modal, submitted by a member
    response = await save(env, view_id, user=ALICE, user_token_cap="1000")
    errors = inline_errors(response)
    assert "Only workspace admins and owners" in next(iter(errors.values()))
    assert current(env) == before and changes_recorded(env) == []


async def test_an_admin_demoted_while_the_modal_is_open_cannot_save(env: Running) -> None:
    view_id = await open_settings(env)
    env.standin.users[ADMIN]["is_admin"] = False
    response = await save(env, view_id, user_token_cap="1")
    assert "Only workspace admins and owners" in next(iter(inline_errors(response).values()))
    assert current(env).user_token_cap == 10 and changes_recorded(env) == []


async def test_settings_saved_meanwhile_by_another_admin_are_not_overwritten(
    env: Running,
) -> None:
    env.standin.add_user(BOB, "bob", is_admin=True)
    mine, theirs = await open_settings(env), await open_settings(env, BOB)
    assert (await save(env, theirs, BOB, user_token_cap="4")).content == b""
    response = await save(env, mine, pending_request_cap="9")
    assert "changed since you opened" in next(iter(inline_errors(response).values()))
    assert (current(env).user_token_cap, current(env).pending_request_cap) == (4, 5)


async def test_lowering_the_cap_revokes_nothing_and_refuses_the_next_token(env: Running) -> None:
    secrets = [await generate(env, ALICE, f"script-{n}") for n in range(3)]
    generate_modal = await open_generate_modal(env, ALICE)  # opened before the change
    assert (await save(env, await open_settings(env), user_token_cap="2")).content == b""

    # Every token stays valid, and listed.
    now = env.deps.clock()
    assert all(usage.validate(env.db, secret, now) is not None for secret in secrets)
    assert len(tokens.list_user_tokens(env.db, ORG, ALICE, now).tokens) == 3
    async with http_client(base_url=env.url, auth=httpx.BasicAuth(*RESOURCE_SERVER)) as http:
        answers = await asyncio.gather(
            *(http.post("/api/v1/introspect", data={"token": s}) for s in secrets)
        )
    assert all(a.json()["active"] is True for a in answers)
    # The next token is refused with the new cap: at the command, and in a modal
    # opened before the change.
    refused = await run_command(env, "new one-more", ALICE)
    assert refused.method == "ack"
    assert "limit of 2" in refused.text_content() and "script-0" in refused.text_content()
    assert "Revoke 2 below to make room" in refused.text_content()
    response = await env.slack.submit_view(
        generate_modal, ALICE, {"token_name": {"name": "one-more"}}
    )
    said = inline_errors(response)["token_name"]
    assert "You already have 3 active tokens, and the limit is 2 per member. Revoke 2" in said
    assert len(tokens.list_user_tokens(env.db, ORG, ALICE, now).tokens) == 3


async def test_the_approvals_channel_set_in_settings_gets_the_next_request(
    env: Running,
) -> None:
    channel = {"type": "conversations_select", "selected_conversation": "C0APPROVE"}
    assert (await save(env, await open_settings(env), approvals_channel=channel)).content == b""
    mark = len(env.standin.calls)
    response = await submit_request(env, GOOD, ["api:read"])
    assert response.content == b""
    posted = await env.standin.wait_for("chat.postMessage", after=mark)
    assert posted.args["channel"] == "C0APPROVE"
    told = await env.standin.wait_for("response_url", after=mark)
    assert "<#C0APPROVE>" in told.text_content()
    assert [c.args["channel"] for c in env.standin.calls_to("chat.postMessage")] == ["C0APPROVE"]


async def test_the_channel_set_in_settings_overrides_the_servers_until_cleared(
    env: Running,
) -> None:
    env.deps.settings.approvals_channel = "C0SERVER"
    channel = {"type": "conversations_select", "selected_conversation": "C0APPROVE"}
    assert (await save(env, await open_settings(env), approvals_channel=channel)).content == b""
    view_id = await open_settings(env)
    view = env.standin.views[view_id]
    hints = {b.get("block_id"): b.get("hint", {}).get("text", "") for b in view["blocks"]}
    assert "Default: channel C0SERVER" in hints["approvals_channel"]
    default = {"type": "checkboxes", "selected_options": [{"value": "default"}]}
    assert (await save(env, view_id, approvals_channel_default=default)).content == b""
    assert current(env).approvals_channel is None
    assert changes_recorded(env)[-1] == {
        "setting": "approvals_channel",
        "old": "C0APPROVE",
        "new": None,
    }
    mark = len(env.standin.calls)
    await submit_request(env, GOOD, ["api:read"])
    posted = await env.standin.wait_for("chat.postMessage", after=mark)
    assert posted.args["channel"] == "C0SERVER"


async def test_the_approver_group_set_in_settings_decides_requests(env: Running) -> None:
    env.standin.add_user(BOB, "bob")  # a member, not an admin
    env.standin.groups = {"deployers": [BOB]}
    group = {"type": "static_select", "selected_option": {"value": "deployers"}}
    assert (await save(env, await open_settings(env), approver_group=group)).content == b""
    mark = len(env.standin.calls)
    await submit_request(env, GOOD, ["api:read"])
    copy = await env.standin.wait_for("chat.postMessage", after=mark)
    assert copy.args["channel"] == "D0BOB"  # the group's member, not the admin
    # The admin, outside the group, may not decide; the group's member may.
    mark = len(env.standin.calls)
    await env.slack.click(copy, "approve_request", ADMIN)
    refusal = await env.standin.wait_for("chat.postEphemeral", after=mark)
    assert "Only members of @deployers" in refusal.text_content()
    await env.slack.click(copy, "approve_request", BOB)
    await env.standin.wait_for("response_url", lambda c: "tbs_" in c.text_content(), after=mark)


async def test_a_group_is_refused_when_slack_cannot_list_the_groups(env: Running) -> None:
    env.standin.groups = {"deployers": [BOB]}
    view_id = await open_settings(env)
    env.standin.fail_next("usergroups.list", error="ratelimited")
    group = {"type": "static_select", "selected_option": {"value": "deployers"}}
    response = await save(env, view_id, approver_group=group)
    assert "could not list the user groups" in inline_errors(response)["approver_group"]
    assert current(env).approver_group is None


async def test_a_new_role_map_applies_to_introspection_at_once(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")

    async def scope() -> str:
        async with http_client(base_url=env.url, auth=httpx.BasicAuth(*RESOURCE_SERVER)) as h:
            return str((await h.post("/api/v1/introspect", data={"token": secret})).json()["scope"])

    assert await scope() == "api:read api:write"
    roles = "owner: api:read\nadmin: api:read\nmember: reports:read\nguest:"
    assert (await save(env, await open_settings(env), role_scopes=roles)).content == b""
    assert await scope() == "reports:read"


async def test_without_the_groups_list_the_admin_types_the_groups_handle(env: Running) -> None:
    env.standin.groups = {"deployers": [BOB]}
    env.standin.fail_next("usergroups.list", error="ratelimited")  # at the opening only
    view_id = await open_settings(env)
    element = next(
        b for b in env.standin.views[view_id]["blocks"] if b.get("block_id") == "approver_group"
    )["element"]
    assert element["type"] == "plain_text_input"
    refused = await save(env, view_id, approver_group="@nobody")
    assert "no user group @nobody" in inline_errors(refused)["approver_group"]
    assert current(env).approver_group is None
    assert (await save(env, view_id, approver_group="@deployers")).content == b""
    assert current(env).approver_group == "deployers"
