"""Signed but nonsensical payloads (fields of the wrong type, fields missing) are refused
with a plain 400, or answered plainly: never a 5xx, never a traceback in the log."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from bot.standin.client import APP_ID
from bot.standin.harness import Running
from bot.standin.server import TEAM_ID
from tests.e2e.conftest import ALICE

Payload = dict[str, Any]


def click(action_id: str, value: Any = "1") -> Payload:
    return {
        "type": "block_actions",
        "user": {"id": ALICE, "username": "alice", "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "team": {"id": TEAM_ID, "domain": "tokenbot-demo"},
        "container": {"type": "message", "channel_id": "C0GENERAL", "is_ephemeral": True},
        "channel": {"id": "C0GENERAL", "name": "general"},
        "trigger_id": "1.2.standin",
        "actions": [{"action_id": action_id, "block_id": "b", "type": "button", "value": value}],
    }


def submission(callback_id: str, values: Any, metadata: Any = "{}") -> Payload:
    return {
        "type": "view_submission",
        "user": {"id": ALICE, "username": "alice", "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "team": {"id": TEAM_ID, "domain": "tokenbot-demo"},
        "trigger_id": "1.2.standin",
        "view": {
            "id": "V1",
            "team_id": TEAM_ID,
            "app_installed_team_id": TEAM_ID,
            "callback_id": callback_id,
            "private_metadata": metadata,
            "state": {"values": values},
        },
        "response_urls": [],
    }


def name_is(value: Any) -> Payload:
    return {"token_name": {"name": {"type": "plain_text_input", "value": value}}}


def request_values(**fields: Any) -> Payload:
    values = {
        "name": {"value": {"type": "plain_text_input", "value": "ci-deployer"}},
        "purpose": {"value": {"type": "plain_text_input", "value": "deploys"}},
        "justification": {"value": {"type": "plain_text_input", "value": "needed"}},
        "scopes": {"value": {"type": "checkboxes", "selected_options": [{"value": "api:read"}]}},
    }
    for block, element in fields.items():
        values[block] = {"value": element}
    return values


def without(payload: Payload, *path: str) -> Payload:
    changed = copy.deepcopy(payload)
    target = changed
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return changed


def with_(payload: Payload, change: Callable[[Payload], None]) -> Payload:
    changed = copy.deepcopy(payload)
    change(changed)
    return changed


FORGED: dict[str, Payload] = {
    "no actions": with_(click("revoke_token"), lambda p: p.update(actions=[])),
    "actions not a list": with_(click("revoke_token"), lambda p: p.update(actions="x")),
    "an action not an object": with_(click("revoke_token"), lambda p: p.update(actions=["x"])),
    "revoke value a list": click("revoke_token", ["1"]),
    "approve value an object": click("approve_request", {"id": 1}),
    "deny value a list": click("deny_request", [1]),
    "cancel value a number": click("cancel_request", 1),
    "user a string": with_(click("revoke_token"), lambda p: p.update(user=ALICE)),
    "user id a list": with_(click("revoke_token"), lambda p: p["user"].update(id=[ALICE])),
    "no user": without(click("revoke_token"), "user"),
    "container a string": with_(click("revoke_token"), lambda p: p.update(container="view")),
    "channel a string": with_(click("approve_request"), lambda p: p.update(channel="C0")),
    "deny without a trigger": without(click("deny_request"), "trigger_id"),
    "home generate without a trigger": without(click("open_generate"), "trigger_id"),
    "token name a list": submission("generate_token", name_is(["ci"])),
    "token name an object": submission("generate_token", name_is({"a": 1})),
    "values a list": submission("generate_token", ["ci"]),
    "no state": without(submission("generate_token", name_is("ci")), "view", "state"),
    "no view": without(submission("generate_token", name_is("ci")), "view"),
    "metadata an object": submission("generate_token", name_is("ci"), {"response_url": 1}),
    "service name a list": submission("service_request", request_values(name=["x"])),
    "scopes a string": submission(
        "service_request", request_values(scopes={"selected_options": "api:read"})
    ),
    "a scope a number": submission(
        "service_request", request_values(scopes={"selected_options": [{"value": 7}]})
    ),
    "deny request not a number": submission(
        "deny_reason", {"reason": {"value": {"value": "no"}}}, '{"request": "abc"}'
    ),
    "deny request a list": submission(
        "deny_reason", {"reason": {"value": {"value": "no"}}}, '{"request": [1]}'
    ),
    "deny metadata a list": submission("deny_reason", {"reason": {"value": {"value": "no"}}}, "[]"),
    "deny reason a number": submission(
        "deny_reason", {"reason": {"value": {"value": 5}}}, '{"request": 1}'
    ),
}


@pytest.mark.parametrize("payload", FORGED.values(), ids=FORGED.keys())
async def test_a_forged_payload_gets_a_plain_400_and_no_traceback(
    env: Running, caplog: pytest.LogCaptureFixture, payload: Payload
) -> None:
    caplog.set_level(logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn's loggers do not reach the root's
        logging.getLogger(name).addHandler(caplog.handler)
    try:
        mark = len(env.standin.calls)
        response = await env.slack.interact(payload)
        assert response.status_code == 400, (response.status_code, response.text)
        assert response.text.startswith("malformed request")
        # Nothing was done, or sent to anyone (Bolt may check the bot token first).
        assert [c for c in env.standin.calls[mark:] if c.method != "auth.test"] == []
    finally:
        for name in ("uvicorn", "uvicorn.error"):
            logging.getLogger(name).removeHandler(caplog.handler)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


FORGED_EVENTS: dict[str, Payload] = {
    "home opened by a list": {"type": "app_home_opened", "user": [ALICE], "tab": "home"},
    "user change of a string": {"type": "user_change", "user": ALICE},
    "team join without a user": {"type": "team_join"},
    "message text a list": {"type": "message", "channel": "C0", "ts": "1.2", "text": ["tbu_"]},
    "message without a channel": {"type": "message", "ts": "1.2", "text": "hi"},
    "message by a list": {"type": "message", "channel": "C0", "user": [ALICE], "text": "hi"},
    "edit of a string": {
        "type": "message",
        "subtype": "message_changed",
        "channel": "C0",
        "message": "hi",
    },
}


@pytest.mark.parametrize("event", FORGED_EVENTS.values(), ids=FORGED_EVENTS.keys())
async def test_a_forged_event_gets_a_plain_400_and_no_traceback(
    env: Running, caplog: pytest.LogCaptureFixture, event: Payload
) -> None:
    caplog.set_level(logging.INFO)
    response = await env.slack.event(event, event_id=f"Ev{time.monotonic_ns()}")
    assert response.status_code == 400, (response.status_code, response.text)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


async def test_a_command_without_a_trigger_is_answered_plainly(env: Running) -> None:
    body = env.slack.command_body("/token", "new", ALICE).replace("trigger_id=", "x_trigger=")
    mark = len(env.standin.calls)
    response = await env.slack.post(body, "application/x-www-form-urlencoded")
    assert response.status_code == 200
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "could not open" in answer.text_content()
