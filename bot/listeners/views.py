"""Modal submissions."""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import tokens as token_blocks
from bot.deps import Deps, org_of
from bot.listeners.payload import private_metadata
from bot.profiles import refresh_profile
from bot.sender import deliver_ephemeral, open_modal
from storage import tokens
from storage.errors import CapReached, InvalidName, NameTaken
from storage.tokens import IssuedToken

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.view(token_blocks.GENERATE_CALLBACK)(handle_generate)


async def cap_reached(deps: Deps, org: str, user_id: str) -> CapReached | None:
    """CapReached when the member has no room for another token (R9), else None."""
    try:
        await deps.call(tokens.check_room_for_user_token, deps.db, org, user_id, deps.clock())
    except CapReached as full:
        return full
    return None


COULD_NOT_OPEN = "Slack could not open the form just now (the request may have come too late)."


async def open_generate_modal(
    client: AsyncWebClient, trigger_id: str | None, initial_name: str, where: dict[str, Any]
) -> bool:
    """Open the Generate modal; False if Slack would not. ``where`` (response_url,
    channel_id) travels in it, to deliver the token once it exists."""
    view = token_blocks.generate_modal(initial_name, json.dumps(where))
    return await open_modal(client, trigger_id, view)


async def handle_generate(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    deps: Deps = context["deps"]
    # Held from before the acknowledgement to the end of the delivery, so that a
    # shutdown waits for it (bot.web).
    async with deps.deliveries.hold():
        org, user_id = org_of(context), body["user"]["id"]
        values = view.get("state", {}).get("values", {})
        block = values.get(token_blocks.NAME_BLOCK, {})
        raw_name = block.get(token_blocks.NAME_INPUT, {}).get("value")
        try:
            issued = await deps.call(
                tokens.issue_user_token, deps.db, org, user_id, raw_name, deps.clock()
            )
        except (InvalidName, NameTaken, CapReached) as refused:
            await ack(response_action="errors", errors={token_blocks.NAME_BLOCK: str(refused)})
            return
        await ack()
        # Before the token can be used, so that its first answers carry a current
        # profile (R1); without Slack, a later use fetches it.
        await refresh_profile(deps, client, org, user_id)
        where = private_metadata(view)
        await deliver_token(
            deps,
            client,
            org,
            issued,
            user_id=user_id,
            message=token_blocks.new_token_message(issued),
            response_url=where.get("response_url"),
            channel_id=where.get("channel_id"),
        )


async def deliver_token(
    deps: Deps,
    client: AsyncWebClient,
    org: str,
    issued: IssuedToken,
    *,
    user_id: str,
    message: dict[str, Any],
    response_url: str | None,
    channel_id: str | None,
) -> bool:
    """Show a new token to its owner once (R14); it becomes valid only then. One that
    reaches nobody is revoked at once; one whose delivery was cut short (a crash) is
    revoked by the sweep after its delivery deadline."""
    delivered = await deliver_ephemeral(
        client,
        user_id=user_id,
        message=message,
        response_url=response_url,
        channel_id=channel_id,
    )
    if delivered is None:
        # Nobody can ever see this token, so it must never become valid.
        await deps.call(tokens.revoke_undelivered, deps.db, org, issued.info.id, deps.clock())
        log.warning("token %s could not be delivered and was revoked", issued.info.id)
        return False
    valid = await deps.call(
        tokens.mark_delivered, deps.db, org, issued.info.id, deps.clock(), delivered
    )
    if valid is None:
        # Revoked meanwhile, or shown after its delivery deadline: it stays invalid.
        log.warning("token %s was shown too late to become valid", issued.info.id)
        return False
    return True
