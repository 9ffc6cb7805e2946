"""Button clicks on tokenbot's token messages and on the Home tab."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot import screens
from bot.approvers import Standing
from bot.blocks import tokens as token_blocks
from bot.delivery import deliver_token
from bot.deps import Deps
from bot.guards import OwnerOrAdmin, owner_or_admin
from bot.listeners.payload import button_id, channel_of, clicked_on_home
from bot.listeners.replies import (
    Listener,
    Redraw,
    Replies,
    Unavailable,
    answering,
    service_list_again,
)
from bot.sender import Responder
from storage import tokens, usage


def register(app: AsyncApp) -> None:
    # A refusal shows the screen the button was on again, the sentence on top.
    acting_on_a_token: list[tuple[str, Redraw, Listener]] = [
        (token_blocks.REVOKE_ACTION, _token_list, handle_revoke),
        (token_blocks.SERVICE_REVOKE_ACTION, service_list_again, handle_service_revoke),
        (token_blocks.KEEP_ALIVE_ACTION, _sentence, handle_keep_alive),
        (token_blocks.ROTATE_ACTION, _token_list, handle_rotate),
        (token_blocks.SERVICE_ROTATE_ACTION, service_list_again, handle_service_rotate),
    ]
    for action_id, redraw, handler in acting_on_a_token:
        replies = Replies(redraw=redraw)
        app.action(action_id, middleware=[replies, owner_or_admin])(answering(handler))
    app.action(token_blocks.CANCEL_ACTION)(answering(handle_cancel))
    app.action(token_blocks.CANCEL_ROTATE_ACTION)(answering(handle_cancel_rotate))
    app.action(token_blocks.OPEN_GENERATE_ACTION)(answering(handle_open_generate))


async def _token_list(context: AsyncBoltContext, notice: str) -> dict[str, Any]:
    return await screens.token_list(context["deps"], context["org"], context["actor"], notice)


async def _sentence(context: AsyncBoltContext, notice: str) -> dict[str, Any]:
    return token_blocks.text_message(notice)


async def _revoke(action: dict[str, Any], as_owner_or_admin: OwnerOrAdmin) -> str:
    """Revoke the token the button names; the sentence that says so."""
    revoked = await as_owner_or_admin(tokens.revoke_token, button_id(action))
    return token_blocks.revoked_notice(revoked)


async def handle_revoke(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Responder,
    client: AsyncWebClient,
    deps: Deps,
    org: str,
    actor: str,
    standing: Standing,
    as_owner_or_admin: OwnerOrAdmin,
) -> None:
    """Revoke on ``/token list``, on a reminder, or on the Home tab: answered with the
    member's tokens again, where they clicked."""
    await ack()
    notice = await _revoke(action, as_owner_or_admin)
    await _show_tokens(body, respond, client, deps, org, actor, standing, notice)


async def _show_tokens(
    body: dict[str, Any],
    respond: Responder,
    client: AsyncWebClient,
    deps: Deps,
    org: str,
    actor: str,
    standing: Standing,
    notice: str,
) -> None:
    """The member's tokens as they are now, ``notice`` on top, where they clicked: the
    Home tab, or the message in place (and their Home tab published again)."""
    if clicked_on_home(body):
        await screens.publish_home(deps, client, org, actor, notice, standing)
        return
    await respond(replace_original=True, **await screens.token_list(deps, org, actor, notice))
    screens.refresh_homes(deps, client, org, [actor])


async def _show_service_users(
    respond: Responder, deps: Deps, org: str, actor: str, standing: Standing, notice: str
) -> None:
    """The service users' list as the clicker may see it now, ``notice`` on top, in
    place of the message clicked."""
    listing = await screens.service_list(deps, org, actor, standing, notice)
    await respond(replace_original=True, **listing)


async def handle_service_revoke(
    ack: AsyncAck,
    action: dict[str, Any],
    respond: Responder,
    deps: Deps,
    org: str,
    actor: str,
    standing: Standing,
    as_owner_or_admin: OwnerOrAdmin,
) -> None:
    """Revoke on ``/token service list`` or on a service token's reminder: answered with
    the service users' list as the clicker may see it now."""
    await ack()
    notice = await _revoke(action, as_owner_or_admin)
    await _show_service_users(respond, deps, org, actor, standing, notice)


async def handle_keep_alive(
    ack: AsyncAck,
    action: dict[str, Any],
    respond: Responder,
    client: AsyncWebClient,
    deps: Deps,
    org: str,
    actor: str,
    as_owner_or_admin: OwnerOrAdmin,
) -> None:
    """The reminder's "Keep for another period": a keep-alive, never a use (R12)."""
    await ack()
    kept = await as_owner_or_admin(usage.keep_alive, button_id(action))
    await respond(
        replace_original=True, **token_blocks.text_message(token_blocks.kept_notice(kept))
    )
    screens.refresh_homes(deps, client, org, [actor])  # the new cutoff


async def _rotate(
    body: dict[str, Any],
    action: dict[str, Any],
    client: AsyncWebClient,
    deps: Deps,
    org: str,
    actor: str,
    as_owner_or_admin: OwnerOrAdmin,
) -> str:
    """Rotate the token the button names, and show the new one once to whoever clicked,
    as a new token is shown (R14, R18); the sentence that says how it went."""
    # Held to the end of the delivery, so that a shutdown waits for it (bot.web).
    async with deps.deliveries.hold():
        rotation = await as_owner_or_admin(tokens.rotate_token, button_id(action))
        on_home = clicked_on_home(body)  # no response_url: the DM with the app, then
        delivered = await deliver_token(
            deps,
            client,
            org,
            rotation.issued,
            user_id=actor,
            message=token_blocks.rotated_token_message(rotation),
            response_url=None if on_home else body.get("response_url"),
            channel_id=None if on_home else channel_of(body),
        )
    return token_blocks.rotated_notice(rotation, delivered)


async def handle_rotate(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Responder,
    client: AsyncWebClient,
    deps: Deps,
    org: str,
    actor: str,
    standing: Standing,
    as_owner_or_admin: OwnerOrAdmin,
) -> None:
    """Rotate on ``/token list``, on a reminder, on the confirmation of ``/token rotate``
    or on the Home tab: the new token shown once, then the member's tokens again where
    they clicked."""
    await ack()
    notice = await _rotate(body, action, client, deps, org, actor, as_owner_or_admin)
    await _show_tokens(body, respond, client, deps, org, actor, standing, notice)


async def handle_service_rotate(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Responder,
    client: AsyncWebClient,
    deps: Deps,
    org: str,
    actor: str,
    standing: Standing,
    as_owner_or_admin: OwnerOrAdmin,
) -> None:
    """Rotate on ``/token service list`` or on a service token's reminder, by an owner of
    the service user or an admin, with no new approval (its grant is unchanged): the new
    token shown once, then the service users' list as the clicker may see it now."""
    await ack()
    notice = await _rotate(body, action, client, deps, org, actor, as_owner_or_admin)
    await _show_service_users(respond, deps, org, actor, standing, notice)


async def handle_cancel(ack: AsyncAck, respond: Responder) -> None:
    await ack()
    await respond(replace_original=True, **token_blocks.text_message("Nothing was revoked."))


async def handle_cancel_rotate(ack: AsyncAck, respond: Responder) -> None:
    await ack()
    await respond(replace_original=True, **token_blocks.text_message("Nothing was rotated."))


async def handle_open_generate(
    ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str, actor: str
) -> None:
    """The Home tab's Generate button. With no channel to answer in, the token goes to
    the member's DM with the app, ephemerally; at the cap, the Home tab says so (R9)."""
    await ack()
    await deps.call(tokens.check_room_for_user_token, deps.db, org, actor, deps.clock())
    if not await screens.open_generate_modal(client, body["trigger_id"], "", {}):
        raise Unavailable(f"{screens.COULD_NOT_OPEN} Try again.")
