"""Messages that must eventually arrive: reminders and expiry notices, digests, reports
to the admins, and the copies of a decided request. Sent through :mod:`bot.sender`."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from bot import approvers
from bot.blocks import service as service_blocks
from bot.blocks import tokens as token_blocks
from bot.deps import workspace_of
from bot.sender import PERMANENT, dm, failure_reason, retry_delay, update
from storage import approvals, digests, notices, ownerless
from storage.approvals import RequestInfo
from storage.models import NoticeKind

if TYPE_CHECKING:
    from bot.deps import Deps

log = logging.getLogger(__name__)


async def deliver_notices(deps: Deps, client: AsyncWebClient) -> int:
    """Send the reminders and expiry notices that are due, by DM; return how many were
    sent. A delivery that fails is tried again later (the outbox keeps it), never lost."""
    sent = 0
    while batch := await deps.call(notices.claim_due, deps.db, deps.clock()):
        for notice in batch:
            if notice.kind == NoticeKind.REMINDER:
                message = token_blocks.reminder_message(
                    notice.token,
                    notice.stage,
                    notice.allow_keep_alive,
                    deps.settings.command,
                    notice.service_user,
                )
            else:
                message = token_blocks.expired_message(
                    notice.token, deps.settings.command, notice.service_user
                )
            try:
                await dm(client, notice.recipient, message)
            except Exception as error:
                reason = failure_reason(error)
                if reason in PERMANENT:
                    await deps.call(notices.mark_failed, deps.db, notice, reason)
                    log.warning("notice %s to %s dropped: %s", notice.id, notice.recipient, reason)
                else:
                    delay = retry_delay(error, notice.attempts)
                    await deps.call(
                        notices.mark_retry, deps.db, notice, deps.clock(), delay, reason
                    )
                    log.info("notice %s will be retried in %s (%s)", notice.id, delay, reason)
                continue
            await deps.call(notices.mark_sent, deps.db, notice, deps.clock())
            sent += 1
    return sent


async def update_request_copies(
    deps: Deps, client: AsyncWebClient, request: RequestInfo, message: dict[str, Any] | None = None
) -> None:
    """Every copy of the request shows the decision, who made it and when (R22), or
    ``message`` when there is more to say."""
    message = message or service_blocks.decided_message(request)
    for channel, ts in await deps.call(approvals.messages, deps.db, request.id):
        try:
            await update(client, channel, ts, message)
        except Exception as error:  # one copy out of reach must not keep the others stale
            log.warning(
                "copy %s/%s of request %s not updated (%s)",
                channel,
                ts,
                request.id,
                failure_reason(error),
            )


PEOPLE_MAX_AGE = timedelta(hours=1)  # how long the sweep trusts a list of approvers or admins


async def _own_workspace(deps: Deps, client: AsyncWebClient) -> str:
    """The organization the bot token serves: it does not change, so Slack is asked once
    a day at most."""
    return await deps.remember("workspace", timedelta(days=1), lambda: workspace_of(client))


async def deliver_digests(deps: Deps, client: AsyncWebClient) -> int:
    """Remind each approver, once a day, of the requests that have waited a day or more
    for a decision they may make (R25); return how many digests were sent. A digest that
    cannot be delivered is given back, and a later sweep tries again that day. Only the
    organization the bot token serves is considered: its approvers see only its requests
    (R10). Who the approvers are is read from Slack at most once an hour."""
    now = deps.clock()
    due = await deps.call(digests.orgs_due, deps.db, now)
    if not due:
        return 0
    try:
        org = await _own_workspace(deps, client)
        if org not in due:
            return 0
        people = await deps.remember(
            f"approvers:{org}",
            PEOPLE_MAX_AGE,
            lambda: approvers.approvers(client, deps.settings),
        )
    except Exception as error:
        log.info("approvers not known (%s); digests wait for a later sweep", failure_reason(error))
        return 0
    pending = await deps.call(approvals.pending_requests, deps.db, org)
    sent = 0
    for approver in people:
        theirs = [r for r in pending if r.requester != approver]
        if not any(now - r.created_at >= digests.WAITING for r in theirs):
            continue
        if not await deps.call(digests.claim, deps.db, org, approver, now):
            continue  # sent today already (or on its way), here or by another replica
        try:
            await dm(client, approver, service_blocks.digest_message(theirs, deps.settings.command))
        except Exception as error:
            await deps.call(digests.release, deps.db, org, approver, now)
            log.info("digest to %s not delivered (%s); will retry", approver, failure_reason(error))
            continue
        sent += 1
    return sent


async def deliver_ownerless_reports(deps: Deps, client: AsyncWebClient) -> int:
    """Tell the admins, by DM, of service users a deactivated member of the bot's own
    organization solely owned (R17, R10); return how many reports went out. A report no
    admin could be sent is tried again later (the outbox keeps it)."""
    sent = 0
    try:
        org = await _own_workspace(deps, client)
    except Exception as error:
        log.info("workspace not known (%s); reports wait for a later sweep", failure_reason(error))
        return 0
    while report := await deps.call(ownerless.claim_next, deps.db, org, deps.clock()):
        message = service_blocks.orphaned_message(
            report.member, report.service_users, deps.settings.command
        )
        reached, error = 0, None
        try:
            admins = await deps.remember(
                f"admins:{org}", PEOPLE_MAX_AGE, lambda: approvers.admins(client)
            )
            for admin in admins:
                try:
                    await dm(client, admin, message)
                    reached += 1
                except Exception as failed:
                    error = failed
                    log.info(
                        "admin %s not told of report %s (%s)",
                        admin,
                        report.id,
                        failure_reason(failed),
                    )
        except Exception as failed:  # the admins are not known just now
            error = failed
        if reached:
            await deps.call(ownerless.mark_sent, deps.db, report, deps.clock())
            sent += 1
        else:
            delay = retry_delay(error, report.attempts) if error else timedelta(hours=1)
            await deps.call(ownerless.mark_retry, deps.db, report, deps.clock(), delay)
            log.warning("report %s to the admins will be retried in %s", report.id, delay)
    return sent
