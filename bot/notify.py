"""Messages that must eventually arrive: one deliverer sends whatever the outbox
(:mod:`storage.outbox`) holds that is due, each kind of message through its renderer;
and the copies of a decided request are updated. Sent through :mod:`bot.sender`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from bot import approvers, webhooks
from bot.blocks import leaks as leak_blocks
from bot.blocks import service as service_blocks
from bot.blocks import tokens as token_blocks
from bot.deps import workspace_of
from bot.sender import PERMANENT, dm, failure_reason, permalink, retry_delay, update
from storage import approvals, digests, outbox
from storage.approvals import RequestInfo
from storage.models import NoticeKind

if TYPE_CHECKING:
    from bot.deps import Deps

log = logging.getLogger(__name__)


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


NOBODY_TO_TELL = timedelta(hours=1)  # when to try again a report no admin was there to get
# Messages about a token go to its owners, whatever their organization; the others are
# about an organization's members and requests, and only the organization the bot token
# serves is told of its own (R10).
TOKEN_KINDS = (NoticeKind.REMINDER, NoticeKind.EXPIRED, NoticeKind.LEAKED, NoticeKind.REVOKED)
WORKSPACE_KINDS = (NoticeKind.DIGEST, NoticeKind.OWNERLESS)

# A renderer turns a claimed message into the Block Kit to send, or None when there is
# nothing left to say (the message is then settled as skipped). It may ask Slack for what
# the message shows (a permalink), through the client it is given.
Renderer = Callable[["Deps", AsyncWebClient, outbox.Message], Awaitable[dict[str, Any] | None]]


async def _reminder(
    deps: Deps, client: AsyncWebClient, message: outbox.Message
) -> dict[str, Any] | None:
    assert message.token is not None  # a reminder is about a token
    return token_blocks.reminder_message(
        message.token,
        message.payload["stage"],
        message.allow_keep_alive,
        deps.settings.command,
        message.service_user,
    )


async def _expired(
    deps: Deps, client: AsyncWebClient, message: outbox.Message
) -> dict[str, Any] | None:
    assert message.token is not None  # an expiry notice is about a token
    return token_blocks.expired_message(message.token, deps.settings.command, message.service_user)


async def _revoked(
    deps: Deps, client: AsyncWebClient, message: outbox.Message
) -> dict[str, Any] | None:
    assert message.token is not None  # a revocation notice is about a token
    return token_blocks.revoked_by_admin_message(
        message.token, message.payload["by"], deps.settings.command
    )


async def _ownerless_report(
    deps: Deps, client: AsyncWebClient, message: outbox.Message
) -> dict[str, Any] | None:
    return service_blocks.orphaned_message(
        message.payload["member"], message.payload["service_users"], deps.settings.command
    )


def _digest_for(
    approver: str | None, pending: list[RequestInfo], now: datetime
) -> list[RequestInfo]:
    """What the approver's digest lists: the pending requests they may decide (not their
    own), or nothing when none of them has waited a day yet."""
    theirs = [r for r in pending if r.requester != approver]
    return theirs if any(now - r.created_at >= digests.WAITING for r in theirs) else []


async def _digest(
    deps: Deps, client: AsyncWebClient, message: outbox.Message
) -> dict[str, Any] | None:
    """The requests waiting for the approver, as they stand when the digest is sent."""
    pending = await deps.call(approvals.pending_requests, deps.db, message.org)
    if listed := _digest_for(message.recipient, pending, deps.clock()):
        return service_blocks.digest_message(listed, deps.settings.command)
    return None  # decided meanwhile


async def _leaked(
    deps: Deps, client: AsyncWebClient, message: outbox.Message
) -> dict[str, Any] | None:
    """Which token was revoked for being pasted, linking to the message where it was."""
    assert message.token is not None  # a leak notice is about a token
    channel, ts = str(message.payload["channel"]), str(message.payload["ts"])
    return leak_blocks.leaked_message(
        message.token,
        deps.settings.command,
        channel=channel,
        permalink=await permalink(client, channel, ts),
        poster=message.payload.get("poster"),
        service_user=message.service_user,
    )


RENDERERS: dict[NoticeKind, Renderer] = {
    NoticeKind.REMINDER: _reminder,
    NoticeKind.EXPIRED: _expired,
    NoticeKind.OWNERLESS: _ownerless_report,
    NoticeKind.DIGEST: _digest,
    NoticeKind.LEAKED: _leaked,
    NoticeKind.REVOKED: _revoked,
}


async def _own_workspace(deps: Deps, client: AsyncWebClient) -> str:
    """The organization the bot token serves: it does not change, so Slack is asked once
    a day at most."""
    return await deps.remember("workspace", timedelta(days=1), lambda: workspace_of(client))


async def served(deps: Deps, client: AsyncWebClient) -> list[tuple[str, AsyncWebClient]]:
    """Every organization tokenbot serves now, each with the client that speaks for it:
    the one the bot token serves (single-workspace mode), or every installed one."""
    if deps.installs is None:
        return [(await _own_workspace(deps, client), client)]
    return await deps.installs.served(client)


async def queue_digests(deps: Deps, client: AsyncWebClient) -> int:
    """Owe each approver, once a day, a reminder of the requests that have waited a day
    or more for a decision they may make (R25); return how many digests were queued. Only
    the organizations served are considered, each with its own bot token: their
    approvers see only their requests (R10). Who the approvers are is read from Slack at
    most once an hour."""
    now = deps.clock()
    due = await deps.call(digests.orgs_due, deps.db, now)
    if not due:
        return 0
    queued = 0
    try:
        speakers = await served(deps, client)
    except Exception as error:
        log.info("approvers not known (%s); digests wait for a later sweep", failure_reason(error))
        return 0
    for org, org_client in speakers:
        if org not in due:
            continue
        try:
            people = await approvers.known_approvers(deps, org_client, org)
        except Exception as error:
            log.info(
                "approvers not known (%s); digests wait for a later sweep",
                failure_reason(error),
            )
            continue
        pending = await deps.call(approvals.pending_requests, deps.db, org)
        owed = [approver for approver in people if _digest_for(approver, pending, now)]
        if owed:
            queued += await deps.call(outbox.queue_digests, deps.db, org, owed, now)
    return queued


async def deliver(
    deps: Deps, client: AsyncWebClient, kinds: Iterable[NoticeKind] = outbox.EVERY_KIND
) -> int:
    """Send the outbox's messages of ``kinds`` that are due, by DM (or, for webhook
    messages, to their endpoints: :mod:`bot.webhooks`); return how many went out. A
    message that cannot be delivered now is tried again later, with backoff (the outbox
    keeps it), and given up only when Slack (or the endpoint) says it never can be, or
    after ``outbox.MAX_ATTEMPTS``."""
    wanted = set(kinds)
    sent = 0
    if wanted & set(webhooks.KINDS):
        sent += await webhooks.deliver_due(deps)
    about_tokens = [k for k in TOKEN_KINDS if k in wanted]
    if about_tokens and deps.installs is None:
        sent += await _deliver_due(deps, client, about_tokens, None)
        about_tokens = []
    # Each organization's messages with its own bot token; in multi-workspace mode, those
    # of an organization that removed the app wait until it installs it again.
    kinds = about_tokens + [k for k in WORKSPACE_KINDS if k in wanted]
    if kinds:
        try:
            speakers = await served(deps, client)
        except Exception as error:
            log.info(
                "workspace not known (%s); its messages wait for a later sweep",
                failure_reason(error),
            )
            return sent
        for org, org_client in speakers:
            sent += await _deliver_due(deps, org_client, kinds, org)
    return sent


def deliver_soon(deps: Deps, client: AsyncWebClient, kinds: Iterable[NoticeKind]) -> None:
    """Send the outbox's messages of ``kinds`` now, in the background, for a listener
    that has just queued one and answers meanwhile. What this cannot send, the sweep
    sends later: the outbox keeps it."""

    async def send() -> None:
        try:
            await deliver(deps, client, kinds)
        except Exception as error:  # logged here: nothing awaits this
            log.warning("messages not sent now (%s); the sweep sends them", failure_reason(error))

    deps.background.start(send(), finish=False)


async def _deliver_due(
    deps: Deps, client: AsyncWebClient, kinds: list[NoticeKind], org: str | None
) -> int:
    sent = 0
    while batch := await deps.call(outbox.claim_due, deps.db, deps.clock(), kinds, org):
        for message in batch:
            sent += await _deliver_one(deps, client, message)
    return sent


async def _recipients(deps: Deps, client: AsyncWebClient, message: outbox.Message) -> list[str]:
    """Who gets the message: its recipient, or else the organization's admins as Slack
    lists them now."""
    if message.recipient is not None:
        return [message.recipient]
    return await approvers.known_admins(deps, client, message.org)


async def _deliver_one(deps: Deps, client: AsyncWebClient, message: outbox.Message) -> bool:
    """Render, send and settle one claimed message; True if anyone got it."""
    rendered = await RENDERERS[message.kind](deps, client, message)
    if rendered is None:
        await deps.call(outbox.mark_skipped, deps.db, message)
        return False
    try:
        people = await _recipients(deps, client, message)
    except Exception as error:  # the admins are not known just now
        await _retry(deps, message, error)
        return False
    reached, failures = 0, []
    for user in people:
        try:
            await dm(client, user, rendered)
            reached += 1
        except Exception as error:
            failures.append(error)
            log.info(
                "%s %s not delivered to %s (%s)",
                message.kind,
                message.id,
                user,
                failure_reason(error),
            )
    if reached:
        await deps.call(outbox.mark_sent, deps.db, message, deps.clock())
        return True
    passing = [e for e in failures if failure_reason(e) not in PERMANENT]
    if failures and not passing:
        reason = failure_reason(failures[-1])
        await deps.call(outbox.mark_failed, deps.db, message, reason)
        log.warning("%s %s dropped: %s", message.kind, message.id, reason)
        return False
    await _retry(deps, message, passing[-1] if passing else None)
    return False


async def _retry(deps: Deps, message: outbox.Message, error: Exception | None) -> None:
    """Put the message back for later: after Slack's Retry-After or a backoff, or after
    NOBODY_TO_TELL when there was nobody to send it to."""
    if error is None:
        delay, reason = NOBODY_TO_TELL, "nobody to tell"
    else:
        delay, reason = retry_delay(error, message.attempts), failure_reason(error)
    await deps.call(outbox.mark_retry, deps.db, message, deps.clock(), delay, reason)
    log.info("%s %s will be retried in %s (%s)", message.kind, message.id, delay, reason)
