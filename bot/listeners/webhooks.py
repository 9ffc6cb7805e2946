"""``/token webhooks``'s buttons and modal: Add endpoint (its modal, then the submission)
and Remove. Admins only, at every step: the guard runs on each, so a click or a
submission from anyone else is refused and changes nothing."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import screens
from bot.blocks import webhooks as blocks
from bot.deps import Deps
from bot.guards import require_admin
from bot.listeners.payload import button_id, channel_of, input_value, private_metadata, text_of
from bot.listeners.replies import Replies, Unavailable, answering
from bot.sender import Responder, deliver_ephemeral
from storage import webhooks

log = logging.getLogger(__name__)
ADMINS_ONLY = require_admin("manage webhooks")


def register(app: AsyncApp) -> None:
    app.action(blocks.ADD_ACTION, middleware=[ADMINS_ONLY])(answering(handle_open_add))
    app.action(blocks.REMOVE_ACTION, middleware=[ADMINS_ONLY])(answering(handle_remove))
    on_the_url = Replies(field=blocks.URL_BLOCK)
    app.view(blocks.ADD_CALLBACK, middleware=[on_the_url, ADMINS_ONLY])(answering(handle_add))


async def handle_open_add(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
    """Add endpoint: the modal asking for the URL and the events."""
    await ack()
    response_url = body.get("response_url")
    opened = await screens.open_add_webhook_modal(
        client,
        body.get("trigger_id"),
        response_url if isinstance(response_url, str) else None,
        channel_of(body),
    )
    if not opened:
        raise Unavailable(f"{screens.COULD_NOT_OPEN} Click Add endpoint again.")


async def handle_add(
    ack: AsyncAck, view: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str, actor: str
) -> None:
    """Add the endpoint, then show its secret once, to the admin alone. A URL refused is
    said on its field, in the acknowledgement, and nothing is added."""
    new = await deps.call(
        webhooks.add_endpoint,
        deps.db,
        org,
        actor,
        url=input_value(view, blocks.URL_BLOCK, blocks.INPUT),
        events=input_value(view, blocks.EVENTS_BLOCK, blocks.INPUT),
        now=deps.clock(),
        allow_loopback=deps.settings.webhooks_allow_loopback,
    )
    await ack()
    where = private_metadata(view)
    shown = await deliver_ephemeral(
        client,
        user_id=actor,
        message=blocks.endpoint_added_message(new, new.endpoints),
        response_url=text_of(where, "response_url"),
        channel_id=text_of(where, "channel_id", 32),
    )
    if shown is None:
        # Nobody has its secret, so nobody could check what it is sent: it goes at once.
        await deps.call(webhooks.remove_endpoint, deps.db, org, actor, new.info.id, deps.clock())
        log.warning("webhook endpoint %s removed: its secret could not be shown", new.info.id)


async def handle_remove(
    ack: AsyncAck,
    action: dict[str, Any],
    respond: Responder,
    deps: Deps,
    org: str,
    actor: str,
) -> None:
    """Remove (after its confirm dialog): answered with the list as it is now."""
    await ack()
    removed = await deps.call(
        webhooks.remove_endpoint, deps.db, org, actor, button_id(action), deps.clock()
    )
    listing = await screens.webhook_list(deps, org, blocks.removed_notice(removed))
    await respond(replace_original=True, **listing)
