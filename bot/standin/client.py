"""Sends what Slack sends: signed slash commands, interactivity payloads and events.

Payload shapes follow Slack's own examples (slash command form bodies, ``payload=`` forms
for interactivity, JSON envelopes for events); signatures come from ``slack_sdk``.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.standin.server import TEAM_ID, Call, SlackStandin

APP_ID = "A0TOKENBOT"

# httpx loads the CA bundle again for every client it makes: tens of milliseconds, more
# than a request to the app takes. The clients of the stand-in and of the tests share one.
TLS_CONTEXT = httpx.create_ssl_context()


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    """An httpx client like any other, made without loading the CA bundle again."""
    return httpx.AsyncClient(verify=TLS_CONTEXT, **kwargs)


def find_button(
    blocks: list[dict[str, Any]], action_id: str, value: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The (block_id, element) of the first button with ``action_id`` (and ``value``)."""
    for block in blocks:
        elements = list(block.get("elements", []))
        if "accessory" in block:
            elements.append(block["accessory"])
        for element in elements:
            if (
                element.get("type") == "button"
                and element.get("action_id") == action_id
                and (value is None or element.get("value") == value)
            ):
                return block.get("block_id", ""), element
    raise LookupError(f"no button {action_id!r} (value {value!r}) in these blocks")


def untouched_state(element: dict[str, Any]) -> dict[str, Any]:
    """An input element's state as Slack submits it untouched."""
    kind = element["type"]
    if kind in ("checkboxes", "multi_static_select"):
        return {"type": kind, "selected_options": list(element.get("initial_options", []))}
    if kind == "static_select":
        return {"type": kind, "selected_option": element.get("initial_option")}
    if kind == "conversations_select":
        return {"type": kind, "selected_conversation": element.get("initial_conversation")}
    return {"type": kind, "value": element.get("initial_value")}


class SlackClient:
    """Signs and posts requests to an app's ``/slack/events`` as Slack would."""

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        standin: SlackStandin,
        team_id: str = TEAM_ID,
        enterprise_id: str | None = None,
        org_wide: bool = False,
    ) -> None:
        self.events_url = app_url.rstrip("/") + "/slack/events"
        self.verifier = SignatureVerifier(signing_secret)
        self.standin = standin
        self.team_id = team_id
        self.enterprise_id = enterprise_id
        self.org_wide = org_wide  # an org-wide (Enterprise Grid) install
        self.http = http_client(timeout=10)
        self._trigger = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- transport ------------------------------------------------------------------------

    def sign(self, body: str, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.verifier.generate_signature(timestamp=ts, body=body)
        assert signature is not None  # None only without a signing secret
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}

    async def post(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {
            "Content-Type": content_type,
            **self.sign(body, timestamp),
            **(headers or {}),
        }
        return await self.http.post(self.events_url, content=body.encode(), headers=all_headers)

    def _trigger_id(self) -> str:
        self._trigger += 1
        return f"{self._trigger}.{int(time.time())}.standin"

    def _team(self) -> dict[str, Any]:
        team: dict[str, Any] = {"id": self.team_id, "domain": "tokenbot-demo"}
        if self.enterprise_id:
            team.update(enterprise_id=self.enterprise_id, enterprise_name="Demo Org")
        return team

    def _enterprise(self) -> dict[str, str] | None:
        if not self.enterprise_id:
            return None
        return {"id": self.enterprise_id, "name": "Demo Org"}

    # -- slash commands -------------------------------------------------------------------

    def command_body(
        self, command: str, text: str, user_id: str, channel_id: str = "C0GENERAL"
    ) -> str:
        fields = {
            "token": "unused-verification-token",
            "team_id": self.team_id,
            "team_domain": "tokenbot-demo",
            "channel_id": channel_id,
            "channel_name": "general",
            "user_id": user_id,
            "user_name": self.standin.users.get(user_id, {}).get("name", user_id.lower()),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "true" if self.org_wide else "false",
            "response_url": self.standin.new_response_url(user_id, channel_id),
            "trigger_id": self._trigger_id(),
        }
        if self.enterprise_id:
            fields.update(enterprise_id=self.enterprise_id, enterprise_name="Demo Org")
        return urlencode(fields)

    async def command(
        self, command: str, text: str, user_id: str, channel_id: str = "C0GENERAL"
    ) -> httpx.Response:
        body = self.command_body(command, text, user_id, channel_id)
        return await self.post(body, "application/x-www-form-urlencoded")

    # -- interactivity --------------------------------------------------------------------

    async def interact(self, payload: dict[str, Any]) -> httpx.Response:
        body = "payload=" + quote(json.dumps(payload))
        return await self.post(body, "application/x-www-form-urlencoded")

    def _user(self, user_id: str) -> dict[str, Any]:
        name = self.standin.users.get(user_id, {}).get("name", user_id.lower())
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    async def click(
        self, message: Call, action_id: str, user_id: str, value: str | None = None
    ) -> httpx.Response:
        """Click a button in an ephemeral message the app sent (a ``response_url`` post
        or ``chat.postEphemeral``), as its recipient."""
        block_id, button = find_button(message.blocks, action_id, value)
        channel_id = str(
            message.args.get("channel")
            or self.standin.response_urls.get(message.args.get("_key", ""), {}).get(
                "channel", "C0GENERAL"
            )
        )
        payload = {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": "unused-verification-token",
            "is_enterprise_install": self.org_wide,
            "enterprise": self._enterprise(),
            "container": {
                "type": "message",
                "message_ts": f"{time.time():.6f}",
                "channel_id": channel_id,
                "is_ephemeral": True,
            },
            "trigger_id": self._trigger_id(),
            "team": self._team(),
            "channel": {"id": channel_id, "name": "general"},
            "response_url": self.standin.new_response_url(user_id, channel_id),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": button.get("text"),
                    "value": button.get("value", ""),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return await self.interact(payload)

    async def click_in_view(
        self, view_id: str, action_id: str, user_id: str, value: str | None = None
    ) -> httpx.Response:
        """Click a button on a view the app published or opened (the Home tab, a modal)."""
        view = self.standin.views[view_id]
        block_id, button = find_button(view.get("blocks", []), action_id, value)
        action = {
            "action_id": action_id,
            "block_id": block_id,
            "text": button.get("text"),
            "type": "button",
            "action_ts": f"{time.time():.6f}",
        }
        if "value" in button:
            action["value"] = button["value"]
        payload = {
            "type": "block_actions",
            "team": self._team(),
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": "unused-verification-token",
            "is_enterprise_install": self.org_wide,
            "enterprise": self._enterprise(),
            "container": {"type": "view", "view_id": view_id},
            "trigger_id": self._trigger_id(),
            "view": {k: v for k, v in view.items() if not k.startswith("_")}
            | {"team_id": self.team_id, "app_installed_team_id": self.team_id},
            "actions": [action],
        }
        return await self.interact(payload)

    def initial_state(self, view_id: str) -> dict[str, dict[str, dict[str, Any]]]:
        """What Slack submits of the modal ``view_id`` when nothing was touched: each
        input's initial value, as ``state.values[block_id][action_id]``."""
        state: dict[str, dict[str, dict[str, Any]]] = {}
        for block in self.standin.views[view_id].get("blocks", []):
            if block.get("type") == "input":
                element = block["element"]
                state[block["block_id"]] = {element["action_id"]: untouched_state(element)}
        return state

    def view_submission_body(
        self, view_id: str, user_id: str, values: dict[str, dict[str, Any]]
    ) -> str:
        """The form body Slack posts when ``user_id`` submits the modal ``view_id``,
        having typed ``values[block_id][action_id]`` (a string), or chosen it (the
        element's state as Slack sends it, such as ``{"type": "users_select",
        "selected_user": "U…"}``)."""
        view = {k: v for k, v in self.standin.views[view_id].items() if not k.startswith("_")}
        state: dict[str, dict[str, Any]] = {}
        for block_id, inputs in values.items():
            state[block_id] = {
                action_id: (
                    {"type": "plain_text_input", "value": value}
                    if isinstance(value, str)
                    else value
                )
                for action_id, value in inputs.items()
            }
        # Slack sets these to the workspace the modal is opened in; Bolt reads them.
        view.update(
            state={"values": state}, team_id=self.team_id, app_installed_team_id=self.team_id
        )
        payload = {
            "type": "view_submission",
            "team": self._team(),
            "is_enterprise_install": self.org_wide,
            "enterprise": self._enterprise(),
            "user": self._user(user_id),
            "api_app_id": APP_ID,
            "token": "unused-verification-token",
            "trigger_id": self._trigger_id(),
            "view": view,
            "response_urls": [],
        }
        return "payload=" + quote(json.dumps(payload))

    async def submit_view(
        self, view_id: str, user_id: str, values: dict[str, dict[str, Any]]
    ) -> httpx.Response:
        """Submit a modal the app opened, with ``values[block_id][action_id]`` (see
        :meth:`view_submission_body`)."""
        body = self.view_submission_body(view_id, user_id, values)
        return await self.post(body, "application/x-www-form-urlencoded")

    # -- events ---------------------------------------------------------------------------

    async def event(
        self, event: dict[str, Any], *, event_id: str, retry_num: int | None = None
    ) -> httpx.Response:
        envelope = {
            "token": "unused-verification-token",
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": self.enterprise_id,
                    "team_id": self.team_id,
                    "user_id": "U0BOT",
                    "is_bot": True,
                    "is_enterprise_install": self.org_wide,
                }
            ],
        }
        if self.enterprise_id:
            envelope["enterprise_id"] = self.enterprise_id
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "timeout"}
        return await self.post(json.dumps(envelope), "application/json", headers=headers)
