"""Service-token requests: the request modal, routing to approvers, Approve and Deny."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot import approvers
from bot.blocks import service as blocks
from bot.blocks.text import inline
from bot.deps import Deps, org_of
from bot.listeners.payload import button_value, private_metadata, request_id_of, text_of
from bot.listeners.views import COULD_NOT_OPEN, deliver_token
from bot.notify import update_request_copies
from bot.sender import (
    Responder,
    deliver_ephemeral,
    dm,
    failure_reason,
    is_slack_response_url,
    open_modal,
    post,
)
from storage import approvals, reports, services
from storage.approvals import RequestInfo
from storage.errors import (
    AlreadyDecided,
    CapReached,
    InvalidField,
    NotAllowed,
    RequestNotFound,
)

log = logging.getLogger(__name__)
RESPONSE_URL_LIFETIME = timedelta(minutes=30)  # Slack's, for a command's response_url


def register(app: AsyncApp) -> None:
    app.view(blocks.REQUEST_CALLBACK)(handle_request_submission)
    app.action(blocks.APPROVE_ACTION)(handle_approve)
    app.action(blocks.DENY_ACTION)(handle_deny)
    app.view(blocks.DENY_CALLBACK)(handle_deny_submission)
    app.action(blocks.CANCEL_REQUEST_ACTION)(handle_cancel_request)


async def open_request_modal(
    deps: Deps, client: AsyncWebClient, org: str, command: dict[str, Any]
) -> bool:
    """Open the request modal; False if Slack would not."""
    catalogue = await deps.call(approvals.scope_catalogue, deps.db, org)
    where = {"response_url": command.get("response_url"), "channel_id": command.get("channel_id")}
    view = blocks.service_request_modal(catalogue, json.dumps(where))
    return await open_modal(client, command.get("trigger_id"), view)


def _value(view: dict[str, Any], block: str) -> Any:
    state = view.get("state", {}).get("values", {}).get(block, {}).get(blocks.INPUT, {})
    if "selected_options" in state:
        return [o["value"] for o in state["selected_options"] or []]
    return state.get("value")


async def handle_request_submission(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    deps: Deps = context["deps"]
    org, user_id, where = org_of(context), body["user"]["id"], private_metadata(view)
    # Kept with the request to show the token once approved: only Slack's own URL.
    response_url = text_of(where, "response_url")
    if not is_slack_response_url(response_url, deps.settings.slack_api_url):
        response_url = None
    channel_id = text_of(where, "channel_id", 32)
    try:
        request = await deps.call(
            approvals.request_service_token,
            deps.db,
            org,
            user_id,
            name=_value(view, blocks.NAME_BLOCK),
            purpose=_value(view, blocks.PURPOSE_BLOCK),
            scopes=_value(view, blocks.SCOPES_BLOCK) or [],
            justification=_value(view, blocks.WHY_BLOCK),
            now=deps.clock(),
            response_url=response_url,
            channel_id=channel_id,
        )
    except InvalidField as bad:
        await ack(response_action="errors", errors={bad.field: str(bad)})
        return
    await ack()
    sent_to = await _route(deps, client, request)
    await deliver_ephemeral(
        client,
        user_id=user_id,
        message=blocks.request_sent_message(request, sent_to),
        response_url=response_url,
        channel_id=channel_id,
    )


async def _route(deps: Deps, client: AsyncWebClient, request: RequestInfo) -> str:
    """Post the request to the approvals channel, or to each approver by DM (R20); each
    copy is recorded as it goes out, to be updated with the decision (R22)."""
    message = blocks.approval_request_message(request)
    if channel := deps.settings.approvals_channel:
        copy = await post(client, channel, message)
        await deps.call(approvals.add_message, deps.db, request.id, *copy)
        return f"<#{channel}>"
    people = [u for u in await approvers.approvers(client, deps.settings) if u != request.requester]
    for person in people:
        copy = await dm(client, person, message)
        await deps.call(approvals.add_message, deps.db, request.id, *copy)
    return f"{len(people)} approver(s) by DM"


async def _refuse(client: AsyncWebClient, body: dict[str, Any], text: str) -> None:
    """Tell the clicker ``text`` where they clicked, only them to see it."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    await deliver_ephemeral(
        client,
        user_id=body["user"]["id"],
        message={"text": inline(text)},
        response_url=None,  # in the channel (or, failing that, the DM), as before
        channel_id=channel,
    )


async def handle_approve(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    deps: Deps = context["deps"]
    # Held from before the acknowledgement: a shutdown waits for the token's delivery.
    async with deps.deliveries.hold():
        await ack()
        await _approve(deps, client, org_of(context), body, action)


async def _approve(
    deps: Deps,
    client: AsyncWebClient,
    org: str,
    body: dict[str, Any],
    action: dict[str, Any],
) -> None:
    user_id = body["user"]["id"]
    if (refused := await approvers.refusal(client, deps.settings, user_id)) is not None:
        await _refuse(client, body, refused)
        return
    request_id = button_value(action)
    if request_id is None:
        await _refuse(client, body, "That button is out of date.")
        return
    try:
        decision = await deps.call(
            approvals.decide,
            deps.db,
            org,
            request_id,
            user_id,
            approve=True,
            reason=None,
            now=deps.clock(),
        )
    except (AlreadyDecided, NotAllowed, RequestNotFound, CapReached) as refused_now:
        await _refuse(client, body, str(refused_now))
        return
    request, issued = decision.request, decision.issued
    if issued is None:  # closed instead: the name was taken meanwhile
        await update_request_copies(deps, client, request)
        await _refuse(client, body, decision.refusal or f"This request is {request.state}.")
        closed = blocks.closed_as_taken_message(request, deps.settings.command)
        await _tell_requester(client, request, closed)
        return
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


async def _tell_requester(
    client: AsyncWebClient, request: RequestInfo, message: blocks.Message
) -> None:
    """A DM to the requester about their request; a failure is logged, not raised."""
    try:
        await dm(client, request.requester, message)
    except Exception as error:
        log.warning("requester of request %s not told (%s)", request.id, failure_reason(error))


async def handle_deny(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    await ack()
    deps: Deps = context["deps"]
    org, user_id = org_of(context), body["user"]["id"]
    if (refused := await approvers.refusal(client, deps.settings, user_id)) is not None:
        await _refuse(client, body, refused)
        return
    request_id = button_value(action)
    try:
        if request_id is None:
            raise RequestNotFound("That request does not exist in this workspace.")
        request = await deps.call(approvals.get_request, deps.db, org, request_id)
    except RequestNotFound as missing:
        await _refuse(client, body, str(missing))
        return
    if request.state != "pending":
        await _refuse(client, body, f"This request is already {request.state}.")
        return
    view = blocks.deny_modal(request, json.dumps({"request": request.id}))
    if not await open_modal(client, body["trigger_id"], view):
        await _refuse(client, body, f"{COULD_NOT_OPEN} Click Deny again.")


async def handle_deny_submission(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    deps: Deps = context["deps"]
    org, user_id = org_of(context), body["user"]["id"]
    request_id = request_id_of(private_metadata(view)) or 0  # payload.malformed checked it
    if (refused := await approvers.refusal(client, deps.settings, user_id)) is not None:
        await ack(response_action="errors", errors={blocks.REASON_BLOCK: refused})
        return
    try:
        decision = await deps.call(
            approvals.decide,
            deps.db,
            org,
            request_id,
            user_id,
            approve=False,
            reason=_value(view, blocks.REASON_BLOCK),
            now=deps.clock(),
        )
    except InvalidField as bad:
        await ack(response_action="errors", errors={blocks.REASON_BLOCK: str(bad)})
        return
    except (AlreadyDecided, NotAllowed, RequestNotFound) as refused_now:
        await ack(response_action="errors", errors={blocks.REASON_BLOCK: str(refused_now)})
        return
    await ack()
    await update_request_copies(deps, client, decision.request)
    await _tell_requester(client, decision.request, blocks.denied_message(decision.request))


async def requests_listing(
    deps: Deps, client: AsyncWebClient, org: str, user_id: str
) -> blocks.Message:
    """``/token requests``: pending requests the caller made, or may decide."""
    pending = await deps.call(approvals.pending_requests, deps.db, org)
    mine = [r for r in pending if r.requester == user_id]
    others = [r for r in pending if r.requester != user_id]
    may_decide = bool(others) and await approvers.refusal(client, deps.settings, user_id) is None
    return blocks.requests_message(mine, others if may_decide else [])


async def handle_cancel_request(
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
    try:
        request_id = button_value(action)
        if request_id is None:
            raise RequestNotFound("That button is out of date.")
        request = await deps.call(
            approvals.cancel_request, deps.db, org, user_id, request_id, deps.clock()
        )
    except (AlreadyDecided, NotAllowed, RequestNotFound) as refused:
        await respond(
            replace_original=False,
            response_type="ephemeral",
            text=inline(str(refused) or "That button is out of date."),
        )
        return
    await update_request_copies(deps, client, request)
    listing = await requests_listing(deps, client, org, user_id)
    await respond(replace_original=True, **listing)


async def report(deps: Deps, client: AsyncWebClient, org: str, user_id: str) -> blocks.Message:
    """``/token report``: for admins and owners only (R6)."""
    if not await approvers.is_admin(client, user_id):
        return {"text": "Only workspace admins and owners can see the report."}
    return blocks.report_message(await deps.call(reports.report, deps.db, org, deps.clock()))


async def service_list(
    deps: Deps, client: AsyncWebClient, org: str, user_id: str, notice: str | None = None
) -> blocks.Message:
    """``/token service list``: every service user for an admin, else those the caller
    owns (R5)."""
    admin = await approvers.is_admin(client, user_id)
    found = await deps.call(
        services.list_service_users, deps.db, org, user_id, admin=admin, now=deps.clock()
    )
    return blocks.service_list_message(found, admin, deps.settings.command, notice)
