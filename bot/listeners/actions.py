"""Button clicks on tokenbot's messages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot import approvers
from bot.blocks import tokens as token_blocks
from bot.blocks.text import inline
from bot.deps import Deps, org_of
from bot.listeners.events import publish_home
from bot.listeners.payload import button_value
from bot.listeners.service import service_list
from bot.listeners.views import COULD_NOT_OPEN, cap_reached, open_generate_modal
from bot.sender import Responder
from storage import tokens, usage
from storage.errors import NotAllowed, PolicyForbids, TokenNotFound
from storage.tokens import TokenInfo

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.action(token_blocks.REVOKE_ACTION)(handle_revoke)
    app.action(token_blocks.SERVICE_REVOKE_ACTION)(handle_service_revoke)
    app.action(token_blocks.CANCEL_ACTION)(handle_cancel)
    app.action(token_blocks.OPEN_GENERATE_ACTION)(handle_open_generate)
    app.action(token_blocks.KEEP_ALIVE_ACTION)(handle_keep_alive)


async def handle_revoke(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Responder,
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    await ack()
    deps: Deps = context["deps"]
    org, user_id = org_of(context), body["user"]["id"]
    notice = await _revoke_clicked(deps, client, org, user_id, action)
    if body.get("container", {}).get("type") == "view":  # clicked on the Home tab
        await publish_home(deps, client, org, user_id, notice)
        return
    listing = await deps.call(tokens.list_user_tokens, deps.db, org, user_id, deps.clock())
    message = token_blocks.token_list_message(listing.tokens, listing.cap, notice)
    await respond(replace_original=True, **message)


async def handle_service_revoke(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Responder,
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    """Revoke on ``/token service list`` or on a service token's reminder: answered with
    the service users' list as the clicker may see it now."""
    await ack()
    deps: Deps = context["deps"]
    org, user_id = org_of(context), body["user"]["id"]
    notice = await _revoke_clicked(deps, client, org, user_id, action)
    await respond(replace_original=True, **await service_list(deps, client, org, user_id, notice))


async def _revoke_clicked(
    deps: Deps, client: AsyncWebClient, org: str, user_id: str, action: dict[str, Any]
) -> str:
    """Revoke the token a Revoke button names; the sentence to show."""
    return await _act_on_token(
        action,
        lambda token_id: _as_owner_or_admin(
            deps, client, tokens.revoke_token, org, user_id, token_id
        ),
        token_blocks.revoked_notice,
    )


async def _as_owner_or_admin(
    deps: Deps,
    client: AsyncWebClient,
    act: Callable[..., TokenInfo],
    org: str,
    user_id: str,
    token_id: int,
) -> TokenInfo:
    """``act`` on the token as its owner; failing that, as an admin if Slack says the
    member is one now (R16)."""
    try:
        return await deps.call(act, deps.db, org, user_id, token_id, deps.clock())
    except NotAllowed as refused:
        try:
            admin = await approvers.is_admin(client, user_id)
        except Exception as error:
            log.warning("standing of %s not checked (%s)", user_id, type(error).__name__)
            raise NotAllowed(
                "Slack could not confirm your standing just now. Try again."
            ) from error
        if not admin:
            raise refused
    return await deps.call(act, deps.db, org, user_id, token_id, deps.clock(), admin=True)


async def handle_cancel(ack: AsyncAck, respond: Responder) -> None:
    await ack()
    await respond(replace_original=True, **token_blocks.text_message("Nothing was revoked."))


async def handle_open_generate(
    ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    """The Home tab's Generate button. With no channel to answer in, the token goes to
    the member's DM with the app, ephemerally."""
    await ack()
    deps: Deps = context["deps"]
    org, user_id = org_of(context), body["user"]["id"]
    full = await cap_reached(deps, org, user_id)
    if full is not None:
        await publish_home(deps, client, org, user_id, notice=str(full))
        return
    if not await open_generate_modal(client, body["trigger_id"], "", {}):
        await publish_home(deps, client, org, user_id, notice=f"{COULD_NOT_OPEN} Try again.")


async def handle_keep_alive(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Responder,
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    """The reminder's "Keep for another period": a keep-alive, never a use (R12)."""
    await ack()
    deps: Deps = context["deps"]
    org, user_id = org_of(context), body["user"]["id"]
    notice = await _act_on_token(
        action,
        lambda token_id: _as_owner_or_admin(deps, client, usage.keep_alive, org, user_id, token_id),
        token_blocks.kept_notice,
    )
    await respond(replace_original=True, **token_blocks.text_message(notice))


async def _act_on_token(
    action: dict[str, Any],
    act: Callable[[int], Awaitable[TokenInfo]],
    done: Callable[[TokenInfo], str],
) -> str:
    """Do ``act`` to the token a button names; return the sentence to show."""
    token_id = button_value(action)
    if token_id is None:
        return "That button is out of date. Run the command again."
    try:
        return done(await act(token_id))
    except (TokenNotFound, NotAllowed, PolicyForbids) as refused:
        return inline(str(refused))  # it may quote the token's name
