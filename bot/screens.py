"""What the listeners show, where more than one shows it: the Home tab, the token list
(a member's own, or an admin's of a member), the service users' list, the pending
requests, the report, the audit log, and the modals commands and buttons open. Each
reads storage, renders one builder of :mod:`bot.blocks`, and returns the message (or
shows the view); listeners answer with it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot import approvers, sender
from bot.approvers import Standing
from bot.blocks import audit as audit_blocks
from bot.blocks import owners as owner_blocks
from bot.blocks import service as service_blocks
from bot.blocks import settings as settings_blocks
from bot.blocks import tokens as token_blocks
from bot.blocks import webhooks as webhook_blocks
from bot.blocks.home import Home, home_view
from bot.blocks.tokens import Message
from bot.deps import Deps
from storage import approvals, audit, reports, services, tokens, webhooks
from storage import settings as org_settings
from storage.errors import CapReached, NotAllowed

log = logging.getLogger(__name__)
COULD_NOT_OPEN = "Slack could not open the form just now (the request may have come too late)."


async def publish_home(
    deps: Deps,
    client: AsyncWebClient,
    org: str,
    user_id: str,
    notice: str | None = None,
    standing: Standing | None = None,
) -> None:
    """Show the member their Home tab as it is now: their tokens, their pending requests,
    the requests they may decide and, for an admin, the report's figures. ``standing``:
    the member's, when the request that led here has it already."""
    standing = standing or approvers.standing_of(deps, client, org, user_id)
    now = deps.clock()
    listing = await deps.call(tokens.list_user_tokens, deps.db, org, user_id, now)
    pending = await deps.call(approvals.pending_requests, deps.db, org)
    mine = [r for r in pending if r.requester == user_id]
    others = [r for r in pending if r.requester != user_id]
    try:
        decidable = others if others and await standing.refusal_to_decide() is None else []
        admin = await standing.is_admin()
    except NotAllowed:  # Slack could not say: the member's own part is shown all the same
        decidable, admin = [], False
    found = await deps.call(reports.report, deps.db, org, now) if admin else None
    home = Home(listing.tokens, listing.cap, mine, decidable, found)
    await sender.publish_home(client, user_id, home_view(home, deps.settings.command, notice))
    deps.homes_open[(org, user_id)] = True


def refresh_homes(
    deps: Deps,
    client: AsyncWebClient,
    org: str,
    users: Iterable[str],
    *,
    approvers_too: bool = False,
) -> None:
    """Publish again, in the background, the Home tabs a change has altered: of ``users``
    (a token issued or ended, a request made or decided) and, with ``approvers_too``, of
    everyone who may decide on requests, whose queue changed (who they are is read from
    Slack at most once an hour). Only the tabs this process published in the last day
    (HOME_OPEN_FOR) are: a Home tab is published anew whenever its member opens it, so
    the others show the change then. A failure is logged."""
    users = [u for u in users if (org, u) in deps.homes_open]
    if users or approvers_too:
        refresh = _refresh(deps, client, org, users, approvers_too)
        deps.background.start(refresh, finish=False)


async def _refresh(
    deps: Deps, client: AsyncWebClient, org: str, users: list[str], approvers_too: bool
) -> None:
    if approvers_too:
        try:
            users += await approvers.known_approvers(deps, client, org)
        except Exception as error:
            log.info("approvers not known (%s); their Home tabs wait", sender.failure_reason(error))
    for user_id in dict.fromkeys(u for u in users if (org, u) in deps.homes_open):
        try:
            await publish_home(deps, client, org, user_id)
        except Exception as error:
            log.info("home of %s not refreshed (%s)", user_id, sender.failure_reason(error))


async def token_list(deps: Deps, org: str, user_id: str, notice: str | None = None) -> Message:
    """``/token list``: the member's active tokens, with Rotate and Revoke buttons."""
    listing = await deps.call(tokens.list_user_tokens, deps.db, org, user_id, deps.clock())
    return token_blocks.token_list_message(listing.tokens, listing.cap, notice)


async def member_token_list(
    deps: Deps, org: str, member: str, notice: str | None = None
) -> Message:
    """``/token list @member`` for an admin: that member's active tokens, with Revoke
    buttons (R16)."""
    listing = await deps.call(tokens.list_user_tokens, deps.db, org, member, deps.clock())
    return token_blocks.member_token_list_message(member, listing.tokens, listing.cap, notice)


async def audit_log(
    deps: Deps, org: str, size: int, *, before: int | None = None, after: int | None = None
) -> Message:
    """``/token audit [n]`` and its Older and Newer buttons: a page of the log (R27)."""
    found = await deps.call(audit.page, deps.db, org, size, before=before, after=after)
    return audit_blocks.audit_message(found, size)


async def service_list(
    deps: Deps, org: str, user_id: str, standing: Standing, notice: str | None = None
) -> Message:
    """``/token service list``: every service user for an admin, else those the member
    owns (R5)."""
    admin = await standing.is_admin()
    found = await deps.call(
        services.list_service_users, deps.db, org, user_id, admin=admin, now=deps.clock()
    )
    return service_blocks.service_list_message(found, admin, deps.settings.command, notice)


async def requests_listing(deps: Deps, org: str, user_id: str, standing: Standing) -> Message:
    """``/token requests``: pending requests the member made, or may decide (R21)."""
    pending = await deps.call(approvals.pending_requests, deps.db, org)
    mine = [r for r in pending if r.requester == user_id]
    others = [r for r in pending if r.requester != user_id]
    may_decide = bool(others) and await standing.refusal_to_decide() is None
    return service_blocks.requests_message(mine, others if may_decide else [])


async def report(deps: Deps, org: str) -> Message:
    """``/token report``: seats, service users and tokens by state (R6)."""
    found = await deps.call(reports.report, deps.db, org, deps.clock())
    return service_blocks.report_message(found)


async def webhook_list(deps: Deps, org: str, notice: str | None = None) -> Message:
    """``/token webhooks``: the organization's webhook endpoints (admins)."""
    endpoints = await deps.call(webhooks.list_endpoints, deps.db, org)
    return webhook_blocks.webhook_list_message(endpoints, notice)


async def cap_reached(deps: Deps, org: str, user_id: str) -> CapReached | None:
    """CapReached when the member has no room for another token (R9), else None."""
    try:
        await deps.call(tokens.check_room_for_user_token, deps.db, org, user_id, deps.clock())
    except CapReached as full:
        return full
    return None


def _where(command: dict[str, Any]) -> str:
    """Where to answer once the modal is submitted: the command's (or click's)
    response_url and channel travel in the modal's metadata."""
    return json.dumps(
        {"response_url": command.get("response_url"), "channel_id": command.get("channel_id")}
    )


async def open_generate_modal(
    client: AsyncWebClient, trigger_id: str | None, initial_name: str, command: dict[str, Any]
) -> bool:
    """Open the Generate modal; False if Slack would not. ``command`` (the slash command,
    or {} from the Home tab) says where to show the token once it exists."""
    view = token_blocks.generate_modal(initial_name, _where(command))
    return await sender.open_modal(client, trigger_id, view)


async def open_owner_modal(
    client: AsyncWebClient,
    trigger_id: str | None,
    service: services.ServiceOwners,
    *,
    adding: bool,
    where: dict[str, Any],
) -> bool:
    """Open the modal that adds an owner to ``service``, or removes one; False if Slack
    would not. ``where``: the list clicked on, to show again once the change is made."""
    metadata = json.dumps({"service_user": service.id, **where})
    view = owner_blocks.owner_modal(
        service.name, service.owners, adding=adding, private_metadata=metadata
    )
    return await sender.open_modal(client, trigger_id, view)


async def open_settings_modal(
    deps: Deps, client: AsyncWebClient, org: str, command: dict[str, Any]
) -> bool:
    """Open the organization's settings, filled in as they are now; False if Slack would
    not. The approvers are chosen among the user groups Slack lists now."""
    current = await deps.call(org_settings.current_settings, deps.db, org)
    groups = await approvers.user_groups(client)  # None: the handle is asked as text
    where = {
        "response_url": command.get("response_url"),
        "channel_id": command.get("channel_id"),
        "version": current.version(),  # the values shown: saved onto these or refused
    }
    view = settings_blocks.settings_modal(
        current,
        groups,
        default_group=deps.settings.approver_group,
        default_channel=deps.settings.approvals_channel,
        private_metadata=json.dumps(where),
    )
    return await sender.open_modal(client, command.get("trigger_id"), view)


async def open_add_webhook_modal(
    client: AsyncWebClient, trigger_id: str | None, response_url: str | None, channel: str | None
) -> bool:
    """Open the Add endpoint modal; False if Slack would not. The secret of the endpoint
    added is shown where the button was clicked (``response_url``, ``channel``)."""
    where = _where({"response_url": response_url, "channel_id": channel})
    return await sender.open_modal(client, trigger_id, webhook_blocks.add_endpoint_modal(where))


async def open_request_modal(
    deps: Deps, client: AsyncWebClient, org: str, command: dict[str, Any]
) -> bool:
    """Open the service-token request modal; False if Slack would not."""
    catalogue = await deps.call(approvals.scope_catalogue, deps.db, org)
    view = service_blocks.service_request_modal(catalogue, _where(command))
    return await sender.open_modal(client, command.get("trigger_id"), view)
