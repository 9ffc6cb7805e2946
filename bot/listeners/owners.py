"""Who owns a service user: Add owner and Remove owner on ``/token service list`` (each
opens a modal), and the admins' Take over on the report of a service user left with no
owner (R17). Owners and admins may change the owners; only admins take over."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import approvers, screens
from bot.approvers import Standing
from bot.blocks import owners as blocks
from bot.deps import Deps
from bot.guards import OwnerOrAdmin, owner_or_admin, require_admin
from bot.listeners.payload import (
    button_id,
    button_text,
    channel_of,
    private_metadata,
    service_user_of,
    text_of,
)
from bot.listeners.replies import Replies, Unavailable, answering, service_list_again
from bot.sender import Responder, deliver_ephemeral, replace_original
from storage import services
from storage.errors import InvalidField


def register(app: AsyncApp) -> None:
    # A refused click shows the service users' list again, the sentence on top.
    on_the_list = Replies(redraw=service_list_again)
    for action_id in (blocks.ADD_OWNER_ACTION, blocks.REMOVE_OWNER_ACTION):
        app.action(action_id, middleware=[on_the_list, owner_or_admin])(
            answering(handle_open_owner_modal)
        )
    on_the_member = Replies(field=blocks.OWNER_BLOCK)
    for callback in blocks.OWNER_CALLBACKS:
        app.view(callback, middleware=[on_the_member, owner_or_admin])(
            answering(handle_owner_submission)
        )
    app.action(
        blocks.TAKE_OVER_ACTION, middleware=[Replies(), require_admin("take over a service user")]
    )(answering(handle_take_over))


async def handle_open_owner_modal(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    client: AsyncWebClient,
    as_owner_or_admin: OwnerOrAdmin,
) -> None:
    """Add owner or Remove owner: the modal that chooses the member, for an owner of the
    service user or an admin."""
    await ack()
    service = await as_owner_or_admin(services.owners_of, button_id(action))
    where = {"response_url": body.get("response_url"), "channel_id": channel_of(body)}
    adding = action["action_id"] == blocks.ADD_OWNER_ACTION
    if not await screens.open_owner_modal(
        client, body["trigger_id"], service, adding=adding, where=where
    ):
        raise Unavailable(f"{screens.COULD_NOT_OPEN} Click the button again.")


def _chosen(view: dict[str, Any]) -> str | None:
    values = view.get("state", {}).get("values", {})
    chosen = values.get(blocks.OWNER_BLOCK, {}).get(blocks.OWNER_INPUT, {}).get("selected_user")
    return chosen if isinstance(chosen, str) else None


async def handle_owner_submission(
    ack: AsyncAck,
    view: dict[str, Any],
    client: AsyncWebClient,
    deps: Deps,
    org: str,
    actor: str,
    standing: Standing,
    as_owner_or_admin: OwnerOrAdmin,
) -> None:
    """Add or remove the member chosen, as an owner of the service user or an admin; a
    refusal is said on the member's field. The list the modal was opened from shows the
    owners as they are now."""
    member = _chosen(view)
    if member is None:
        raise InvalidField(blocks.OWNER_BLOCK, "Choose a member.")
    adding = view["callback_id"] == blocks.ADD_OWNER_CALLBACK
    if adding and not approvers.eligible(
        await approvers.standing_of(deps, client, org, member).user()
    ):
        raise InvalidField(
            blocks.OWNER_BLOCK, "Choose an active member of the workspace, not a bot or a guest."
        )
    where = private_metadata(view)
    changed = await as_owner_or_admin(
        services.add_owner if adding else services.remove_owner,
        service_user_of(where) or 0,  # payload.malformed checked it
        member=member,
    )
    await ack()
    notice = blocks.owners_changed_notice(changed.name, member, added=adding)
    listing = await screens.service_list(deps, org, actor, standing, notice)
    response_url = text_of(where, "response_url")
    if not await replace_original(client, response_url, deps.settings.slack_api_url, listing):
        await deliver_ephemeral(
            client,
            user_id=actor,
            message=listing,
            response_url=None,
            channel_id=text_of(where, "channel_id", 32),
        )


async def handle_take_over(
    ack: AsyncAck, action: dict[str, Any], respond: Responder, deps: Deps, org: str, actor: str
) -> None:
    """Take over, for an admin: they become the owner of a service user whose owners
    have all been deactivated."""
    await ack()
    name = button_text(action)
    taken = await deps.call(services.take_over, deps.db, org, actor, name, deps.clock())
    message = blocks.taken_over_message(taken.name, deps.settings.command)
    await respond(response_type="ephemeral", replace_original=False, **message)
