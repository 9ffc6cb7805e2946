"""Reading what Slack sends, where listeners share it.

A signed request is Slack's, but a payload can still be nonsense (a replayed, hand-made
or buggy one). Before any listener runs, ``malformed`` checks the fields listeners read
have the types Slack gives them; a request that fails is refused with a 400.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.blocks.service import DENY_CALLBACK
from storage.errors import TokenbotError

# Slack's ids (users, teams, enterprises, channels) are short; the database keeps 32.
SlackId = Annotated[str, Field(min_length=1, max_length=32)]


class _Shape(BaseModel):
    # Strict: a list or a number is never taken for a string. Fields tokenbot does not
    # read are let through untouched.
    model_config = ConfigDict(strict=True, extra="allow")


class _User(_Shape):
    id: SlackId


class _Action(_Shape):
    action_id: str
    value: str | None = None


class _Option(_Shape):
    value: str


class _Input(_Shape):
    value: str | None = None
    selected_options: list[_Option] | None = None


class _State(_Shape):
    values: dict[str, dict[str, _Input]] = {}


class _View(_Shape):
    id: str | None = None
    callback_id: str
    private_metadata: str | None = None
    state: _State


class _Container(_Shape):
    type: str | None = None
    channel_id: SlackId | None = None


class _Channel(_Shape):
    id: SlackId


class _Interaction(_Shape):
    user: _User
    trigger_id: str | None = None
    response_url: str | None = None
    container: _Container | None = None
    channel: _Channel | None = None


class _BlockActions(_Interaction):
    actions: Annotated[list[_Action], Field(min_length=1)]


class _ViewSubmission(_Interaction):
    view: _View


class _HomeOpened(_Shape):
    user: SlackId


class _MemberChanged(_Shape):
    user: _User


_PAYLOADS: dict[str, type[_Shape]] = {
    "block_actions": _BlockActions,
    "view_submission": _ViewSubmission,
}
_EVENTS: dict[str, type[_Shape]] = {
    "app_home_opened": _HomeOpened,
    "user_change": _MemberChanged,
    "team_join": _MemberChanged,
}
# What a listener needs of the trigger to open a modal: these clicks open one.
_OPENS_A_MODAL = {"deny_request", "open_generate", "add_webhook"}


def malformed(body: dict[str, Any]) -> str | None:
    """Why ``body`` cannot be a payload Slack sent, or None. The reason names a field,
    never its value (it could hold anything)."""
    kind = body.get("type")
    model = _PAYLOADS.get(kind) if isinstance(kind, str) else None
    if kind == "event_callback":
        event = body.get("event")
        if not isinstance(event, dict):
            return "event: not an object"
        event_type = event.get("type")
        model = _EVENTS.get(event_type) if isinstance(event_type, str) else None
        body = event
    if model is None:
        return None
    try:
        parsed = model.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        return f"{where}: {first['type']}"
    if (
        isinstance(parsed, _BlockActions)
        and parsed.trigger_id is None
        and parsed.actions[0].action_id in _OPENS_A_MODAL
    ):
        return "trigger_id: missing"
    if (
        isinstance(parsed, _ViewSubmission)
        and parsed.view.callback_id == DENY_CALLBACK
        and request_id_of(private_metadata(body["view"])) is None
    ):
        return "view.private_metadata: no request"
    return None


def private_metadata(view: dict[str, Any]) -> dict[str, Any]:
    """The JSON object tokenbot put in a modal's ``private_metadata``; {} if unreadable."""
    try:
        data = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def input_value(view: dict[str, Any], block: str, action: str) -> Any:
    """What was typed or chosen in a modal's input: its text, or the values of the
    options chosen (a list); None when the input is not there."""
    state = view.get("state", {}).get("values", {}).get(block, {}).get(action, {})
    if "selected_options" in state:
        return [o["value"] for o in state["selected_options"] or []]
    return state.get("value")


def text_of(metadata: dict[str, Any], key: str, max_length: int = 500) -> str | None:
    """A string tokenbot put in a modal's metadata, or None when it is not one (the
    modal was not tokenbot's, or was tampered with)."""
    value = metadata.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= max_length else None


def request_id_of(metadata: dict[str, Any]) -> int | None:
    """The request id the Deny modal carries, or None when there is none."""
    value = metadata.get("request")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def button_value(action: dict[str, Any]) -> int | None:
    """The id a button carries in its value, or None when it carries none."""
    value = action.get("value")
    try:
        return int(value) if isinstance(value, str) else None
    except ValueError:
        return None


class StaleButton(TokenbotError):
    """A button whose value names nothing: tampered with, or from an older message."""


def button_id(action: dict[str, Any]) -> int:
    """The id a button carries in its value; StaleButton when it carries none."""
    value = button_value(action)
    if value is None:
        raise StaleButton("That button is out of date.")
    return value


def kind_of(body: dict[str, Any]) -> str:
    """What a request is, for log lines: its type, or the slash command."""
    kind = body.get("type") or body.get("command")
    return kind if isinstance(kind, str) else "request"


def actor_of(body: dict[str, Any]) -> str | None:
    """The member acting in a request: who typed the command, clicked or submitted, or
    opened the Home tab. None for events about someone rather than by them."""
    user = body.get("user")
    if isinstance(user, dict):
        return str(user["id"]) if isinstance(user.get("id"), str) else None
    if isinstance(body.get("user_id"), str):
        return str(body["user_id"])
    event = body.get("event")
    if isinstance(event, dict) and event.get("type") == "app_home_opened":
        return str(event["user"]) if isinstance(event.get("user"), str) else None
    return None


def clicked_on_home(body: dict[str, Any]) -> bool:
    """Whether a click came from the app's Home tab (a view), not from a message."""
    return (body.get("container") or {}).get("type") == "view"


def channel_of(body: dict[str, Any]) -> str | None:
    """The channel of the message a click came from, if any."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    return str(channel) if channel else None
