"""Service-token requests: the request modal's submission, Approve, Deny (with its
modal), and Cancel."""

from __future__ import annotations

import json
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import delivery, screens
from bot.approvers import Standing
from bot.blocks import service as blocks
from bot.blocks.text import inline
from bot.deps import Deps
from bot.guards import require_approver
from bot.listeners.payload import (
    button_id,
    clicked_on_home,
    input_value,
    private_metadata,
    request_id_of,
    text_of,
)
from bot.listeners.replies import Replies, Unavailable, answering
from bot.notify import update_request_copies
from bot.sender import Responder, deliver_ephemeral, is_slack_response_url, open_modal
from storage import approvals
from storage.errors import AlreadyDecided


def register(app: AsyncApp) -> None:
    on_the_name = Replies(field=blocks.NAME_BLOCK)
    app.view(blocks.REQUEST_CALLBACK, middleware=[on_the_name])(
        answering(handle_request_submission)
    )
    # Deciding: refusals of a click go in the channel of the copy clicked; of the Deny
    # modal, on its reason.
    in_channel = Replies(in_channel=True)
    app.action(blocks.APPROVE_ACTION, middleware=[in_channel, require_approver])(
        answering(handle_approve)
    )
    app.action(blocks.DENY_ACTION, middleware=[in_channel, require_approver])(
        answering(handle_deny)
    )
    on_the_reason = Replies(field=blocks.REASON_BLOCK)
    app.view(blocks.DENY_CALLBACK, middleware=[on_the_reason, require_approver])(
        answering(handle_deny_submission)
    )
    app.action(blocks.CANCEL_REQUEST_ACTION)(answering(handle_cancel_request))


def _value(view: dict[str, Any], block: str) -> Any:
    return input_value(view, block, blocks.INPUT)


async def handle_request_submission(
    ack: AsyncAck, view: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str, actor: str
) -> None:
    """Record the request, send it to the approvers (R20), and tell the requester where
    it went."""
    where = private_metadata(view)
    # Kept with the request to show the token once approved: only Slack's own URL.
    response_url = text_of(where, "response_url")
    if not is_slack_response_url(response_url, deps.settings.slack_api_url):
        response_url = None
    channel_id = text_of(where, "channel_id", 32)
    request = await deps.call(
        approvals.request_service_token,
        deps.db,
        org,
        actor,
        name=_value(view, blocks.NAME_BLOCK),
        purpose=_value(view, blocks.PURPOSE_BLOCK),
        scopes=_value(view, blocks.SCOPES_BLOCK) or [],
        justification=_value(view, blocks.WHY_BLOCK),
        now=deps.clock(),
        response_url=response_url,
        channel_id=channel_id,
    )
    await ack()
    sent_to = await delivery.route_request(deps, client, request)
    screens.refresh_homes(deps, client, org, [actor], approvers_too=True)
    await deliver_ephemeral(
        client,
        user_id=actor,
        message=blocks.request_sent_message(request, sent_to),
        response_url=response_url,
        channel_id=channel_id,
    )


async def handle_approve(
    ack: AsyncAck, action: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str, actor: str
) -> None:
    """Approve (R22, R24): the first decision wins; the token goes to the requester."""
    # Held from before the acknowledgement: a shutdown waits for the token's delivery.
    async with deps.deliveries.hold():
        await ack()
        decision = await deps.call(
            approvals.decide,
            deps.db,
            org,
            button_id(action),
            actor,
            approve=True,
            reason=None,
            now=deps.clock(),
        )
        request = decision.request
        screens.refresh_homes(deps, client, org, [actor, request.requester], approvers_too=True)
        if decision.issued is None:  # closed instead: the name was taken meanwhile
            await delivery.announce_closed(deps, client, request)
            raise AlreadyDecided(decision.refusal or f"This request is {request.state}.")
        await delivery.deliver_service_token(deps, client, org, request, decision.issued)


async def handle_deny(
    ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str
) -> None:
    """Deny asks the approver for the reason, in a modal (R23)."""
    await ack()
    clicked = body["actions"][0]  # the Deny button (payload.malformed checked there is one)
    request = await deps.call(approvals.get_request, deps.db, org, button_id(clicked))
    if request.state != "pending":
        raise AlreadyDecided(f"This request is already {request.state}.")
    view = blocks.deny_modal(request, json.dumps({"request": request.id}))
    if not await open_modal(client, body["trigger_id"], view):
        raise Unavailable(f"{screens.COULD_NOT_OPEN} Click Deny again.")


async def handle_deny_submission(
    ack: AsyncAck, view: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str, actor: str
) -> None:
    """Deny with the reason given (R23); a refusal is said on the reason's field."""
    decision = await deps.call(
        approvals.decide,
        deps.db,
        org,
        request_id_of(private_metadata(view)) or 0,  # payload.malformed checked it
        actor,
        approve=False,
        reason=_value(view, blocks.REASON_BLOCK),
        now=deps.clock(),
    )
    await ack()
    await delivery.announce_denial(deps, client, decision.request)
    screens.refresh_homes(
        deps, client, org, [actor, decision.request.requester], approvers_too=True
    )


async def handle_cancel_request(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    client: AsyncWebClient,
    respond: Responder,
    deps: Deps,
    org: str,
    actor: str,
    standing: Standing,
) -> None:
    """The requester cancels a pending request (R25): its copies say so."""
    await ack()
    request = await deps.call(
        approvals.cancel_request, deps.db, org, actor, button_id(action), deps.clock()
    )
    await update_request_copies(deps, client, request)
    if clicked_on_home(body):
        notice = f"Cancelled your request for *{inline(request.name)}*."
        await screens.publish_home(deps, client, org, actor, notice, standing)
    else:
        listing = await screens.requests_listing(deps, org, actor, standing)
        await respond(replace_original=True, **listing)
    screens.refresh_homes(deps, client, org, [], approvers_too=True)
