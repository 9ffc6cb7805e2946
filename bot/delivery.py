"""Getting a token, or a request's outcome, to the people it is for: a new token to its
owner, once (R14, R24); a request to the approvers (R20); a decision to the requester
and to every copy of the request (R22, R23)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot import approvers, screens
from bot.blocks import service as blocks
from bot.blocks.tokens import Message
from bot.deps import Deps
from bot.notify import update_request_copies
from bot.sender import deliver_ephemeral, dm, failure_reason, post
from storage import approvals, tokens
from storage.approvals import RequestInfo
from storage.tokens import IssuedToken

log = logging.getLogger(__name__)
RESPONSE_URL_LIFETIME = timedelta(minutes=30)  # Slack's, for a command's response_url


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
    screens.refresh_homes(deps, client, org, [user_id])
    return True


async def route_request(deps: Deps, client: AsyncWebClient, request: RequestInfo) -> str:
    """Post the request to the organization's approvals channel, or to each approver by
    DM (R20); each copy is recorded as it goes out, to be updated with the decision
    (R22). Returns where it went, for the requester."""
    message = blocks.approval_request_message(request)
    route = await approvers.routing(deps, request.org)
    if channel := route.approvals_channel:
        copy = await post(client, channel, message)
        await deps.call(approvals.add_message, deps.db, request.id, *copy)
        return f"<#{channel}>"
    chosen = await approvers.approvers(client, route.approver_group)
    people = [u for u in chosen if u != request.requester]
    for person in people:
        copy = await dm(client, person, message)
        await deps.call(approvals.add_message, deps.db, request.id, *copy)
    return f"{len(people)} approver(s) by DM"


async def deliver_service_token(
    deps: Deps, client: AsyncWebClient, org: str, request: RequestInfo, issued: IssuedToken
) -> None:
    """An approved request's token to its requester (R24), then the decision on every
    copy of the request, saying whether the token reached them."""
    fresh = deps.clock() - request.created_at < RESPONSE_URL_LIFETIME
    delivered = await deliver_token(
        deps,
        client,
        org,
        issued,
        user_id=request.requester,
        message=blocks.service_token_message(issued, request),
        response_url=request.response_url if fresh else None,
        channel_id=None,  # later than that, only the requester's DM is sure to reach them
    )
    # The token first: it has a deadline, and updating every copy may wait on Slack.
    message = blocks.decided_message(
        request, undelivered=not delivered, command=deps.settings.command
    )
    await update_request_copies(deps, client, request, message)


async def announce_closed(deps: Deps, client: AsyncWebClient, request: RequestInfo) -> None:
    """A request closed instead of approved (its name was taken meanwhile): the copies
    say so, and the requester hears what to do instead."""
    await update_request_copies(deps, client, request)
    closed = blocks.closed_as_taken_message(request, deps.settings.command)
    await _tell_requester(client, request, closed)


async def announce_denial(deps: Deps, client: AsyncWebClient, request: RequestInfo) -> None:
    """A denied request: the copies show it, and the requester gets the reason (R23)."""
    await update_request_copies(deps, client, request)
    await _tell_requester(client, request, blocks.denied_message(request))


async def _tell_requester(client: AsyncWebClient, request: RequestInfo, message: Message) -> None:
    """A DM to the requester about their request; a failure is logged, not raised."""
    try:
        await dm(client, request.requester, message)
    except Exception as error:
        log.warning("requester of request %s not told (%s)", request.id, failure_reason(error))
