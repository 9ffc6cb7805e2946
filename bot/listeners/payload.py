"""Reading what Slack sends, where listeners share it.

A signed request is Slack's, but a payload can still be nonsense (a replayed, hand-made
or buggy one). Before any listener runs, ``malformed`` checks the fields listeners read
have the types Slack gives them; a request that fails is refused with a 400.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.blocks.owners import ADD_OWNER_ACTION, OWNER_CALLBACKS, REMOVE_OWNER_ACTION
from bot.blocks.service import DENY_CALLBACK
from storage import tokenformat
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
    selected_option: _Option | None = None
    selected_options: list[_Option] | None = None
    selected_user: SlackId | None = None
    selected_conversation: SlackId | None = None


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


class _Posted(_Shape):
    user: SlackId | None = None
    text: str | None = None
    ts: str | None = None
    subtype: str | None = None
    bot_id: str | None = None


class _Message(_Posted):
    channel: SlackId
    channel_type: str | None = None
    message: _Posted | None = None  # the message as edited, for ``message_changed``
    previous_message: _Posted | None = None


_PAYLOADS: dict[str, type[_Shape]] = {
    "block_actions": _BlockActions,
    "view_submission": _ViewSubmission,
}
_EVENTS: dict[str, type[_Shape]] = {
    "app_home_opened": _HomeOpened,
    "user_change": _MemberChanged,
    "team_join": _MemberChanged,
    "message": _Message,
}
# What a listener needs of the trigger to open a modal: these clicks open one.
_OPENS_A_MODAL = {
    "deny_request",
    "open_generate",
    "add_webhook",
    ADD_OWNER_ACTION,
    REMOVE_OWNER_ACTION,
}


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
    if (
        isinstance(parsed, _ViewSubmission)
        and parsed.view.callback_id in OWNER_CALLBACKS
        and service_user_of(private_metadata(body["view"])) is None
    ):
        return "view.private_metadata: no service user"
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


def service_user_of(metadata: dict[str, Any]) -> int | None:
    """The service user id an owners' modal carries, or None when there is none."""
    value = metadata.get("service_user")
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


# A member as Slack writes a mention in command text when it escapes it: <@U123|name>,
# or <@U123>. Enterprise Grid ids start with W.
_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,31})(?:\|[^<>]*)?>")


def mentioned_member(text: str) -> str | None:
    """The Slack user id of the one member mentioned in ``text``, or None when ``text``
    is not exactly one mention."""
    found = _MENTION.fullmatch(text.strip())
    return found.group(1) if found else None


AUDIT_DEFAULT, AUDIT_MAX = 20, 100  # events on a page of /token audit


def audit_size(text: str) -> int | None:
    """How many events ``/token audit [n]`` asks for: 20 when none is said; None unless
    it is a number from 1 to 100."""
    text = text.strip()
    if not text:
        return AUDIT_DEFAULT
    if not text.isdecimal() or not 1 <= int(text) <= AUDIT_MAX:
        return None
    return int(text)


_MEMBER_BUTTON = re.compile(r"(\d{1,18}):([UW][A-Z0-9]{2,31})")
_AUDIT_BUTTON = re.compile(r"(\d{1,3}):(\d{1,18})")


def member_button_value(action: dict[str, Any]) -> tuple[int, str] | None:
    """The token and its member that a Revoke button on an admin's list of a member's
    tokens carries (``"12:U0ALICE"``), or None when it carries none."""
    found = _MEMBER_BUTTON.fullmatch(str(action.get("value") or ""))
    return (int(found.group(1)), found.group(2)) if found else None


def member_button(action: dict[str, Any]) -> tuple[int, str]:
    """:func:`member_button_value`; StaleButton when the button carries none."""
    value = member_button_value(action)
    if value is None:
        raise StaleButton("That button is out of date.")
    return value


def button_text(action: dict[str, Any], max_length: int = 100) -> str:
    """The text a button carries in its value (a name); StaleButton when it carries none."""
    value = action.get("value")
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise StaleButton("That button is out of date.")
    return value


def unescaped(text: str) -> str:
    """Command text as typed: Slack escapes ``&``, ``<`` and ``>`` in it (the command is
    set to escape, so that mentions arrive as user ids)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def audit_position(action: dict[str, Any]) -> tuple[int, int]:
    """The page size and the event an Older or Newer button pages from (``"20:153"``);
    StaleButton when it carries none."""
    found = _AUDIT_BUTTON.fullmatch(str(action.get("value") or ""))
    if found is None or not 1 <= int(found.group(1)) <= AUDIT_MAX:
        raise StaleButton("That button is out of date.")
    return int(found.group(1)), int(found.group(2))


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


# Messages a person wrote: new ones, in a thread and also sent to the channel, with a file,
# and ``/me`` ones; for ``message_changed``, the message as edited has one of these.
_WRITTEN = {None, "thread_broadcast", "file_share", "me_message"}


@dataclass(frozen=True)
class Posted:
    """A message a person posted or edited, as the leak listener reads it."""

    text: str
    channel: str
    ts: str
    poster: str | None
    in_app_dm: bool  # the person's DM with the app (answered there, not ephemerally)


def posted_message(body: dict[str, Any]) -> Posted | None:
    """The message a ``message`` event carries, new or edited (``message_changed``: the
    text as it is now); None for anything else, and for a bot's messages (the app's own
    included), deletions and Slack's own notices (joins, topics)."""
    event = body.get("event")
    if body.get("type") != "event_callback" or not isinstance(event, dict):
        return None
    if event.get("type") != "message":
        return None
    message: Any = event
    if event.get("subtype") == "message_changed":
        message = event.get("message")
        if not isinstance(message, dict):
            return None
    elif event.get("subtype") not in _WRITTEN:
        return None
    if message.get("subtype") not in _WRITTEN or message.get("bot_id") or event.get("bot_id"):
        return None
    text, channel = message.get("text"), event.get("channel")
    previous = event.get("previous_message")
    posted_at = previous.get("ts") if isinstance(previous, dict) else None
    # An edit's own ts is the edit's; the message keeps the ts it was posted with.
    ts = message.get("ts") or posted_at or event.get("ts")
    if not (isinstance(text, str) and isinstance(channel, str) and isinstance(ts, str)):
        return None
    poster = message.get("user")
    return Posted(
        text=text,
        channel=channel,
        ts=ts,
        poster=poster if isinstance(poster, str) else None,
        in_app_dm=event.get("channel_type") == "im",
    )


def is_idle_message(body: dict[str, Any]) -> bool:
    """True for a ``message`` event that asks nothing of the app: no token in it (or not
    a person's message). Such events, most of what the app receives, are not recorded as
    delivered: a repeat of one has no effect either."""
    if not isinstance(body.get("event"), dict) or body["event"].get("type") != "message":
        return False
    posted = posted_message(body)
    return posted is None or not tokenformat.find_tokens(posted.text)


def clicked_on_home(body: dict[str, Any]) -> bool:
    """Whether a click came from the app's Home tab (a view), not from a message."""
    return (body.get("container") or {}).get("type") == "view"


def channel_of(body: dict[str, Any]) -> str | None:
    """The channel of the message a click came from, if any."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    return str(channel) if channel else None


@dataclass(frozen=True)
class Known:
    """What the app answers, for naming a request in the metrics: the slash command's
    subcommands, the action and view callback ids its blocks use, the event types it
    hears. Anything else a payload names becomes ``other``."""

    subcommands: frozenset[str]
    ids: frozenset[str]
    events: frozenset[str]


def listener_label(body: dict[str, Any], known: Known) -> str:
    """The kind of request ``body`` is, as a bounded metric label: ``command:list``,
    ``action:revoke_token``, ``view:generate_token``, ``event:message`` and so on; never
    text a person typed. Any shape is named: this runs before malformed payloads are
    refused."""
    kind = body.get("type")
    if isinstance(body.get("command"), str):
        text = body.get("text")
        sub = (text if isinstance(text, str) else "").strip().partition(" ")[0].lower() or "help"
        return f"command:{_one_of(sub, known.subcommands)}"
    if kind == "block_actions":
        actions = body.get("actions")
        first = actions[0] if isinstance(actions, list) and actions else None
        named = first.get("action_id") if isinstance(first, dict) else None
        return f"action:{_one_of(named, known.ids)}"
    if kind in ("view_submission", "view_closed"):
        view = body.get("view")
        named = view.get("callback_id") if isinstance(view, dict) else None
        prefix = "view" if kind == "view_submission" else "view_closed"
        return f"{prefix}:{_one_of(named, known.ids)}"
    if kind == "event_callback":
        event = body.get("event")
        named = event.get("type") if isinstance(event, dict) else None
        return f"event:{_one_of(named, known.events)}"
    if kind == "url_verification":
        return "url_verification"
    return "other"


def _one_of(value: object, names: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in names else "other"
