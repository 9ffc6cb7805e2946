"""What the listeners show, where more than one shows it: the Home tab, the token list,
the service users' list, the pending requests, the report, and the modals commands and
buttons open. Each reads storage, renders one builder of :mod:`bot.blocks`, and returns
the message (or shows the view); listeners answer with it."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot import sender
from bot.approvers import Standing
from bot.blocks import service as service_blocks
from bot.blocks import tokens as token_blocks
from bot.blocks import webhooks as webhook_blocks
from bot.blocks.tokens import Message
from bot.deps import Deps
from storage import approvals, reports, services, tokens, webhooks
from storage.errors import CapReached

COULD_NOT_OPEN = "Slack could not open the form just now (the request may have come too late)."


async def publish_home(
    deps: Deps, client: AsyncWebClient, org: str, user_id: str, notice: str | None = None
) -> None:
    """Show the member their tokens on the app's Home tab."""
    listing = await deps.call(tokens.list_user_tokens, deps.db, org, user_id, deps.clock())
    view = token_blocks.home_view(listing.tokens, listing.cap, notice)
    await sender.publish_home(client, user_id, view)


async def token_list(deps: Deps, org: str, user_id: str, notice: str | None = None) -> Message:
    """``/token list``: the member's active tokens, with Revoke buttons."""
    listing = await deps.call(tokens.list_user_tokens, deps.db, org, user_id, deps.clock())
    return token_blocks.token_list_message(listing.tokens, listing.cap, notice)


async def service_list(
    deps: Deps, org: str, user_id: str, standing: Standing, notice: str | None = None
) -> Message:
    """``/token service list``: every service user for an admin, else those the member
    owns (R5)."""
    admin = await standing.is_admin()
    found = await deps.call(
        services.list_service_users, deps.db, org, user_id, admin=admin, now=deps.clock()
    )
    return service_blocks.service_list_message(found, admin, deps.settings.command, notice)


async def requests_listing(deps: Deps, org: str, user_id: str, standing: Standing) -> Message:
    """``/token requests``: pending requests the member made, or may decide (R21)."""
    pending = await deps.call(approvals.pending_requests, deps.db, org)
    mine = [r for r in pending if r.requester == user_id]
    others = [r for r in pending if r.requester != user_id]
    may_decide = bool(others) and await standing.refusal_to_decide() is None
    return service_blocks.requests_message(mine, others if may_decide else [])


async def report(deps: Deps, org: str) -> Message:
    """``/token report``: seats, service users and tokens by state (R6)."""
    found = await deps.call(reports.report, deps.db, org, deps.clock())
    return service_blocks.report_message(found)


async def webhook_list(deps: Deps, org: str, notice: str | None = None) -> Message:
    """``/token webhooks``: the organization's webhook endpoints (admins)."""
    endpoints = await deps.call(webhooks.list_endpoints, deps.db, org)
    return webhook_blocks.webhook_list_message(endpoints, notice)


async def cap_reached(deps: Deps, org: str, user_id: str) -> CapReached | None:
    """CapReached when the member has no room for another token (R9), else None."""
    try:
        await deps.call(tokens.check_room_for_user_token, deps.db, org, user_id, deps.clock())
    except CapReached as full:
        return full
    return None


def _where(command: dict[str, Any]) -> str:
    """Where to answer once the modal is submitted: the command's (or click's)
    response_url and channel travel in the modal's metadata."""
    return json.dumps(
        {"response_url": command.get("response_url"), "channel_id": command.get("channel_id")}
    )


async def open_generate_modal(
    client: AsyncWebClient, trigger_id: str | None, initial_name: str, command: dict[str, Any]
) -> bool:
    """Open the Generate modal; False if Slack would not. ``command`` (the slash command,
    or {} from the Home tab) says where to show the token once it exists."""
    view = token_blocks.generate_modal(initial_name, _where(command))
    return await sender.open_modal(client, trigger_id, view)


async def open_add_webhook_modal(
    client: AsyncWebClient, trigger_id: str | None, response_url: str | None, channel: str | None
) -> bool:
    """Open the Add endpoint modal; False if Slack would not. The secret of the endpoint
    added is shown where the button was clicked (``response_url``, ``channel``)."""
    where = _where({"response_url": response_url, "channel_id": channel})
    return await sender.open_modal(client, trigger_id, webhook_blocks.add_endpoint_modal(where))


async def open_request_modal(
    deps: Deps, client: AsyncWebClient, org: str, command: dict[str, Any]
) -> bool:
    """Open the service-token request modal; False if Slack would not."""
    catalogue = await deps.call(approvals.scope_catalogue, deps.db, org)
    view = service_blocks.service_request_modal(catalogue, _where(command))
    return await sender.open_modal(client, command.get("trigger_id"), view)
