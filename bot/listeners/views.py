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
from bot.notify import _why, deliver_ephemeral
from storage import tokens
from storage.errors import CapReached, InvalidName, NameTaken

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


async def open_modal(client: AsyncWebClient, trigger_id: str | None, view: dict[str, Any]) -> bool:
    """Open ``view``; False when Slack would not (an expired trigger, Slack unreachable),
    for the caller to say so to the person."""
    if not trigger_id:
        log.info("no trigger_id to open a modal with")
        return False
    try:
        await client.views_open(trigger_id=trigger_id, view=view)
    except Exception as error:
        log.info("views.open failed (%s)", _why(error))
        return False
    return True


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
    org, user_id = org_of(context), body["user"]["id"]
    values = view.get("state", {}).get("values", {})
    raw_name = values.get(token_blocks.NAME_BLOCK, {}).get(token_blocks.NAME_INPUT, {}).get("value")
    try:
        issued = await deps.call(
            tokens.issue_user_token, deps.db, org, user_id, raw_name, deps.clock()
        )
    except (InvalidName, NameTaken, CapReached) as refused:
        await ack(response_action="errors", errors={token_blocks.NAME_BLOCK: str(refused)})
        return
    await ack()
    where = private_metadata(view)
    delivered = await deliver_ephemeral(
        client,
        user_id=user_id,
        message=token_blocks.new_token_message(issued),
        response_url=where.get("response_url"),
        channel_id=where.get("channel_id"),
    )
    if delivered is None:
        # Nobody can ever see this token, so it must not stay valid.
        await deps.call(tokens.revoke_undelivered, deps.db, org, issued.info.id, deps.clock())
        log.warning("token %s could not be delivered and was revoked", issued.info.id)
