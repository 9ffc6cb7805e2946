"""Button clicks on tokenbot's messages."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.blocks import tokens as token_blocks
from bot.deps import Deps, org_of
from storage import tokens
from storage.errors import NotAllowed, TokenNotFound


def register(app: AsyncApp) -> None:
    app.action(token_blocks.REVOKE_ACTION)(handle_revoke)
    app.action(token_blocks.CANCEL_ACTION)(handle_cancel)


async def handle_revoke(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    context: AsyncBoltContext,
) -> None:
    await ack()
    deps: Deps = context["deps"]
    org, user_id = org_of(context), body["user"]["id"]
    try:
        token_id = int(action.get("value", ""))
        revoked = await deps.call(
            tokens.revoke_token, deps.db, org, user_id, token_id, deps.clock()
        )
        notice = token_blocks.revoked_notice(revoked)
    except ValueError:
        notice = "That button is out of date. Run the command again."
    except (TokenNotFound, NotAllowed) as refused:
        notice = str(refused)
    listing = await deps.call(tokens.list_user_tokens, deps.db, org, user_id, deps.clock())
    message = token_blocks.token_list_message(listing.tokens, listing.cap, notice)
    await respond(replace_original=True, **message)


async def handle_cancel(ack: AsyncAck, respond: AsyncRespond) -> None:
    await ack()
    await respond(replace_original=True, **token_blocks.text_message("Nothing was revoked."))
