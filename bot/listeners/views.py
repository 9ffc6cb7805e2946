"""The Generate modal's submission."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import tokens as token_blocks
from bot.delivery import deliver_token
from bot.deps import Deps
from bot.listeners.payload import private_metadata
from bot.listeners.replies import Replies, answering
from bot.profiles import refresh_profile
from storage import tokens


def register(app: AsyncApp) -> None:
    on_the_name = Replies(field=token_blocks.NAME_BLOCK)
    app.view(token_blocks.GENERATE_CALLBACK, middleware=[on_the_name])(answering(handle_generate))


def _name(view: dict[str, Any]) -> Any:
    values = view.get("state", {}).get("values", {})
    return values.get(token_blocks.NAME_BLOCK, {}).get(token_blocks.NAME_INPUT, {}).get("value")


async def handle_generate(
    ack: AsyncAck, view: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str, actor: str
) -> None:
    """Issue the token, then show it once (R14, R15). A name refused is said on the
    name's field, in the acknowledgement (so nothing acknowledges before the storage
    call that may refuse it)."""
    # Held from before the acknowledgement to the end of the delivery, so that a
    # shutdown waits for it (bot.web).
    async with deps.deliveries.hold():
        issued = await deps.call(
            tokens.issue_user_token, deps.db, org, actor, _name(view), deps.clock()
        )
        await ack()
        # Before the token can be used, so that its first answers carry a current
        # profile (R1); without Slack, a later use fetches it.
        await refresh_profile(deps, client, org, actor)
        where = private_metadata(view)
        await deliver_token(
            deps,
            client,
            org,
            issued,
            user_id=actor,
            message=token_blocks.new_token_message(issued),
            response_url=where.get("response_url"),
            channel_id=where.get("channel_id"),
        )
