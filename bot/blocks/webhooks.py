"""Messages and the modal of ``/token webhooks``: the organization's webhook endpoints."""

from __future__ import annotations

from typing import Any

from bot.blocks.text import CONFIRM_MAX, code, inline
from bot.blocks.tokens import Message, _context, _plain, _section, when
from storage.webhook_events import EVENT_TYPES
from storage.webhooks import MAX_ENDPOINTS, URL_MAX, EndpointInfo, NewEndpoint

ADD_ACTION = "add_webhook"  # opens the modal
REMOVE_ACTION = "remove_webhook"
ADD_CALLBACK = "add_webhook_endpoint"
URL_BLOCK, EVENTS_BLOCK = "url", "events"  # as storage.webhooks names the fields
INPUT = "value"  # the action id of the modal's inputs
URL_SHOWN = 300  # characters of a URL in a list: enough to tell endpoints apart

# What each event says, as the modal offers it.
EVENT_DESCRIPTIONS = {
    "token.created": "A token becomes valid",
    "token.rotated": "A token is rotated",
    "token.revoked": "A token is revoked",
    "token.expired": "A token expires after a period without use",
    "token.leaked": "A token is found pasted in Slack, and revoked",
    "request.decided": "A service-token request is approved or denied",
}


def _events(events: list[str]) -> str:
    if set(EVENT_TYPES) <= set(events):
        return "every event"
    return ", ".join(inline(e, 40) for e in events)


def _last_delivery(endpoint: EndpointInfo) -> str:
    if endpoint.last_status is None:
        return "no delivery yet"
    return f"last delivery: {inline(endpoint.last_status, 64)}, {when(endpoint.last_attempt_at)}"


def remove_button(endpoint: EndpointInfo) -> dict[str, Any]:
    """A Remove button with its confirm dialog."""
    host = code(endpoint.host, CONFIRM_MAX // 3)
    return {
        "type": "button",
        "action_id": REMOVE_ACTION,
        "text": _plain("Remove"),
        "style": "danger",
        "value": str(endpoint.id),
        "confirm": {
            "title": _plain("Remove this endpoint?"),
            "text": {
                "type": "mrkdwn",
                "text": f"{host} receives no event from now on, and its secret signs "
                "nothing more. This cannot be undone.",
            },
            "confirm": _plain("Remove"),
            "deny": _plain("Keep it"),
            "style": "danger",
        },
    }


def _endpoint(endpoint: EndpointInfo) -> dict[str, Any]:
    text = (
        f"{code(endpoint.url, URL_SHOWN)}\n"
        f"Added {when(endpoint.created_at)} by <@{endpoint.created_by}> · "
        f"{_events(endpoint.events)} · {_last_delivery(endpoint)}"
    )
    return _section(text, remove_button(endpoint))


def webhook_list_message(endpoints: list[EndpointInfo], notice: str | None = None) -> Message:
    """``/token webhooks``: the endpoints, each with a Remove button, and Add endpoint
    while there is room (at most MAX_ENDPOINTS, so the list always fits)."""
    blocks = [_section(notice)] if notice else []
    if endpoints:
        blocks.append(_section(f"*Webhook endpoints* ({len(endpoints)} of {MAX_ENDPOINTS})"))
        blocks += [_endpoint(e) for e in endpoints[:MAX_ENDPOINTS]]
    else:
        blocks.append(
            _section(
                "No webhook endpoints yet. Add one to have this workspace's token events "
                "sent to your systems as signed JSON."
            )
        )
    if len(endpoints) < MAX_ENDPOINTS:
        add = {
            "type": "button",
            "action_id": ADD_ACTION,
            "text": _plain("Add endpoint"),
            "style": "primary",
        }
        blocks.append({"type": "actions", "elements": [add]})
    else:
        blocks.append(_context(f"The limit is {MAX_ENDPOINTS}: remove one to add another."))
    blocks.append(
        _context(
            "Each event is POSTed as JSON, signed with the endpoint's secret in "
            "`X-Tokenbot-Signature`, and retried until the endpoint answers 2xx."
        )
    )
    count = f"{len(endpoints)} webhook endpoint{'' if len(endpoints) == 1 else 's'}"
    return {"text": notice or count, "blocks": blocks}


def add_endpoint_modal(private_metadata: str) -> dict[str, Any]:
    options = [
        {
            "text": _plain(kind),
            "description": _plain(EVENT_DESCRIPTIONS[kind]),
            "value": kind,
        }
        for kind in EVENT_TYPES
    ]
    return {
        "type": "modal",
        "callback_id": ADD_CALLBACK,
        "private_metadata": private_metadata,
        "title": _plain("Add webhook endpoint"),
        "submit": _plain("Add"),
        "close": _plain("Cancel"),
        "blocks": [
            {
                "type": "input",
                "block_id": URL_BLOCK,
                "label": _plain("URL"),
                "hint": _plain("https, with no user name or password in it."),
                "element": {
                    "type": "plain_text_input",
                    "action_id": INPUT,
                    "max_length": URL_MAX,
                    "placeholder": _plain("https://example.com/hooks/tokenbot"),
                },
            },
            {
                "type": "input",
                "block_id": EVENTS_BLOCK,
                "label": _plain("Events"),
                "hint": _plain("Every event, unless you choose some."),
                "optional": True,
                "element": {
                    "type": "checkboxes",
                    "action_id": INPUT,
                    "options": options,
                    "initial_options": options,
                },
            },
            _context("The endpoint's signing secret is shown to you once, when it is added."),
        ],
    }


def endpoint_added_message(new: NewEndpoint, endpoints: list[EndpointInfo]) -> Message:
    """The one message that shows an endpoint's signing secret, to the admin who added
    it, ephemerally; the list of endpoints below it."""
    info = new.info
    listing = webhook_list_message(endpoints)["blocks"]
    return {
        "text": "Endpoint added. Copy its signing secret now: it won't be shown again.",
        "blocks": [
            _section(
                f":white_check_mark: Added {code(info.url, URL_SHOWN)}. Copy its signing "
                "secret now: it will not be shown again."
            ),
            _section(f"```{new.secret}```"),
            _context(
                "Check each request's `X-Tokenbot-Signature` with it (see the README). "
                "Only you can see this message, and Slack does not keep it."
            ),
            *listing,
        ],
    }


def removed_notice(endpoint: EndpointInfo) -> str:
    host = code(endpoint.host, 100)
    return f":white_check_mark: Removed the endpoint at {host}. It receives nothing more."
