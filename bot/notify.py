"""Delivery to Slack. A new token goes only where Slack does not keep it (R14)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import approvers
from bot.blocks import service as service_blocks
from bot.blocks import tokens as token_blocks
from bot.deps import workspace_of
from storage import approvals, digests, notices, ownerless
from storage.approvals import RequestInfo
from storage.models import NoticeKind

if TYPE_CHECKING:
    from bot.deps import Deps

log = logging.getLogger(__name__)


def _webhook(url: str, session: aiohttp.ClientSession | None) -> AsyncWebhookClient:
    return AsyncWebhookClient(url, session=session, retry_handlers=retry_handlers())


# Where Slack's response URLs live. Anything else in a payload is not Slack's, and a
# message posted there (a new token, say) would go to whoever forged it.
_SLACK_HOSTS = ("slack.com", "slack-gov.com")


def is_slack_response_url(url: object, api_url: str) -> bool:
    """True when ``url`` may be posted to: https on Slack's own hosts (``hooks.slack.com``,
    ``*.slack.com``, ``*.slack-gov.com``), or the scheme, host and port of the Web API the
    app is pointed at (``SLACK_API_URL``: the stand-in in tests and the demo)."""
    if not isinstance(url, str):
        return False
    try:  # parsed as aiohttp will parse it to connect, so both see the same host
        target, api = yarl.URL(url), yarl.URL(api_url)
    except (ValueError, TypeError):
        return False
    if not target.is_absolute() or target.user is not None or target.password is not None:
        return False
    if (target.scheme, target.host, target.port) == (api.scheme, api.host, api.port):
        return True
    host = (target.host or "").lower()
    return (
        target.scheme == "https"
        and target.port == 443
        and any(host == h or host.endswith("." + h) for h in _SLACK_HOSTS)
    )


class Responder:
    """Bolt's ``respond()``, over the app's shared HTTP session and with retries, and only
    to a response URL on Slack's hosts.

    Bolt's own opens a new connection for every message; under load that costs more
    than the rest of the request.
    """

    def __init__(
        self, response_url: str, session: aiohttp.ClientSession | None, api_url: str
    ) -> None:
        self.response_url = response_url
        self.session = session
        self.allowed = is_slack_response_url(response_url, api_url)

    async def __call__(self, **message: Any) -> WebhookResponse:
        if not self.allowed:
            log.warning("not answering at a response_url outside Slack's hosts")
            return WebhookResponse(
                url=self.response_url, status_code=403, body="not_slack", headers={}
            )
        return await _webhook(self.response_url, self.session).send_dict(message)


def retry_handlers() -> list[Any]:
    """Retries with backoff on connection errors, 429 (honouring Retry-After) and 5xx.

    The backoff is short (0.2 s, then 0.4 s): a person is waiting for the answer.
    """
    backoff = BackoffRetryIntervalCalculator(backoff_factor=0.2)
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=backoff),
        AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        AsyncServerErrorRetryHandler(max_retry_count=2, interval_calculator=backoff),
    ]


async def deliver_ephemeral(
    client: AsyncWebClient,
    *,
    user_id: str,
    message: dict[str, Any],
    response_url: str | None,
    channel_id: str | None,
) -> str | None:
    """Show ``message`` to ``user_id`` alone; return where it went, or None if nowhere.

    Tries the command's ``response_url``, then an ephemeral message in the channel, then
    an ephemeral message in the member's DM with the app. Never a message Slack keeps.
    """
    if response_url and not is_slack_response_url(response_url, client.base_url):
        log.warning("response_url outside Slack's hosts ignored; trying the channel")
        response_url = None
    if response_url:
        webhook = _webhook(response_url, client.session)
        try:
            response = await webhook.send(
                response_type="ephemeral", replace_original=False, **message
            )
            if response.status_code == 200:
                return "response_url"
            log.info("response_url answered %s; trying the channel", response.status_code)
        except Exception as error:  # a dead URL must not stop the fallbacks
            log.info("response_url failed (%s); trying the channel", failure_reason(error))
    if channel_id:
        try:
            await client.chat_postEphemeral(channel=channel_id, user=user_id, **message)
            return "channel"
        except Exception as error:
            log.info(
                "chat.postEphemeral in the channel failed (%s); trying the DM",
                failure_reason(error),
            )
    try:
        opened = await client.conversations_open(users=user_id)
        dm = opened["channel"]["id"]
        await client.chat_postEphemeral(channel=dm, user=user_id, **message)
        return "dm"
    except Exception as error:
        log.warning("could not reach %s in their DM (%s)", user_id, failure_reason(error))
    return None


def failure_reason(error: Exception) -> str:
    """What went wrong, in words safe to log: Slack's error code or the exception type."""
    if isinstance(error, SlackApiError):
        data = error.response.data
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
        return f"HTTP {error.response.status_code}"
    return type(error).__name__


# Slack errors after which a DM can never be delivered: give up rather than retry.
_PERMANENT = {
    "user_not_found",
    "account_inactive",
    "user_disabled",
    "cannot_dm_bot",
    "not_allowed_token_type",
    "invalid_auth",
    "channel_not_found",
}


def _retry_delay(error: Exception, attempts: int) -> timedelta:
    """Slack's Retry-After when it gave one, else exponential backoff up to an hour."""
    if isinstance(error, SlackApiError):
        retry_after = error.response.headers.get("Retry-After") or error.response.headers.get(
            "retry-after"
        )
        if retry_after and str(retry_after).isdigit():
            return timedelta(seconds=int(retry_after))
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


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
                opened = await client.conversations_open(users=notice.recipient)
                await client.chat_postMessage(channel=opened["channel"]["id"], **message)
            except Exception as error:
                reason = failure_reason(error)
                if reason in _PERMANENT:
                    await deps.call(notices.mark_failed, deps.db, notice, reason)
                    log.warning("notice %s to %s dropped: %s", notice.id, notice.recipient, reason)
                else:
                    delay = _retry_delay(error, notice.attempts)
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
            await client.chat_update(channel=channel, ts=ts, **message)
        except Exception as error:  # one copy out of reach must not keep the others stale
            log.warning(
                "copy %s/%s of request %s not updated (%s)",
                channel,
                ts,
                request.id,
                failure_reason(error),
            )


async def _dm(client: AsyncWebClient, user_id: str, message: dict[str, Any]) -> None:
    opened = await client.conversations_open(users=user_id)
    await client.chat_postMessage(channel=opened["channel"]["id"], **message)


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
            await _dm(
                client, approver, service_blocks.digest_message(theirs, deps.settings.command)
            )
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
                    await _dm(client, admin, message)
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
            delay = _retry_delay(error, report.attempts) if error else timedelta(hours=1)
            await deps.call(ownerless.mark_retry, deps.db, report, deps.clock(), delay)
            log.warning("report %s to the admins will be retried in %s", report.id, delay)
    return sent
