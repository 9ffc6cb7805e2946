"""The settings modal's submission (``/token settings``, admins)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import approvers
from bot.blocks import settings as blocks
from bot.deps import Deps
from bot.guards import require_admin
from bot.listeners.payload import private_metadata, text_of
from bot.listeners.replies import answering
from bot.sender import deliver_ephemeral
from storage import settings as org_settings
from storage.settings import SettingsForm


def register(app: AsyncApp) -> None:
    # Standing is asked of Slack again at submission: an admin no longer one is refused.
    app.view(blocks.SETTINGS_CALLBACK, middleware=[require_admin("change the settings")])(
        answering(handle_settings_submission)
    )


def _state(view: dict[str, Any], block: str) -> dict[str, Any]:
    values = view.get("state", {}).get("values", {})
    state: dict[str, Any] = values.get(block, {}).get(blocks.INPUT) or {}
    return state


def _text(view: dict[str, Any], block: str) -> str | None:
    value = _state(view, block).get("value")
    return value if isinstance(value, str) else None


def _ticked(view: dict[str, Any], block: str, option: str) -> bool:
    return any(o.get("value") == option for o in _state(view, block).get("selected_options") or [])


def _approver_group(view: dict[str, Any]) -> str | None:
    """The group chosen (a select), or typed (a text input, in large workspaces); None
    for the default."""
    state = _state(view, "approver_group")
    chosen = (state.get("selected_option") or {}).get("value", state.get("value"))
    return None if chosen in (None, blocks.DEFAULT_GROUP) else str(chosen)


def _approvals_channel(view: dict[str, Any]) -> str | None:
    if _ticked(view, blocks.CHANNEL_DEFAULT_BLOCK, blocks.CHANNEL_DEFAULT_OPTION):
        return None
    channel = _state(view, "approvals_channel").get("selected_conversation")
    return channel if isinstance(channel, str) else None


def settings_form(view: dict[str, Any]) -> SettingsForm:
    """What the admin submitted, as typed."""
    return SettingsForm(
        user_token_cap=_text(view, "user_token_cap"),
        service_token_cap=_text(view, "service_token_cap"),
        inactivity_days=_text(view, "inactivity_days"),
        reminder_days=_text(view, "reminder_days"),
        allow_keep_alive=_ticked(view, "allow_keep_alive", blocks.KEEP_ALIVE_OPTION),
        rotation_grace_hours=_text(view, "rotation_grace_hours"),
        request_ttl_days=_text(view, "request_ttl_days"),
        pending_request_cap=_text(view, "pending_request_cap"),
        approver_group=_approver_group(view),
        approvals_channel=_approvals_channel(view),
        scope_catalogue=_text(view, "scope_catalogue"),
        role_scopes=_text(view, "role_scopes"),
    )


async def handle_settings_submission(
    ack: AsyncAck, view: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str, actor: str
) -> None:
    """Save the settings and tell the admin what changed; a value that cannot be taken
    is said on its field, and nothing changes (storage.settings.save_settings)."""
    form = settings_form(view)
    # A group is checked against those Slack has now; when Slack cannot say, only the
    # group already set passes.
    groups = await approvers.user_groups(client) if form.approver_group else None
    where = private_metadata(view)
    changes = await deps.call(
        org_settings.save_settings,
        deps.db,
        org,
        actor,
        form,
        known_groups=groups,
        # Always checked: a form that does not say what it was opened on is refused.
        seen=text_of(where, "version", 64) or "",
        now=deps.clock(),
    )
    await ack()
    await deliver_ephemeral(
        client,
        user_id=actor,
        message=blocks.settings_saved_message(changes),
        response_url=text_of(where, "response_url"),
        channel_id=text_of(where, "channel_id", 32),
    )
