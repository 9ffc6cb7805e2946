"""The one place that talks to Slack's Web API to show things to people: messages in
channels and DMs, ephemeral messages, updates, modals and the Home tab, and the user
groups a modal offers. Everything else renders blocks and calls these. Retries
(connection errors, 429 with Retry-After, 5xx) come from slack_sdk's retry handlers, set
on the client in :func:`retry_handlers`; the failures are counted there too
(:class:`FailureCounter`)."""

from __future__ import annotations

import logging
import re
import sys
from datetime import timedelta
from typing import Any, Protocol

import aiohttp
import yarl
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from storage.outbox import backoff

log = logging.getLogger(__name__)


class Failures(Protocol):
    """Where failed calls are counted: a prometheus-client counter labelled (method, error)."""

    def labels(self, method: str, error: str) -> Any: ...


_METHOD = re.compile(r"[a-zA-Z]{1,30}(\.[a-zA-Z]{1,30}){1,3}")


class FailureCounter(AsyncRetryHandler):
    """Retries nothing: first in the list of retry handlers, it sees each attempt's
    answer or error, and counts the failed ones by Web API method (``response_url`` for
    a response URL) and kind of error. Rate limits (429) are counted here even when a
    retry then succeeds."""

    def __init__(self, failures: Failures, api_url: str) -> None:
        super().__init__(max_retry_count=sys.maxsize)
        self.failures = failures
        self.api_url = api_url

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        kind = _failure(response, error)
        if kind is not None:
            self.failures.labels(self._method(request.url), kind).inc()
        return False

    def _method(self, url: str) -> str:
        if not url.startswith(self.api_url):
            return "response_url"
        method = url.removeprefix(self.api_url).partition("?")[0]
        return method if _METHOD.fullmatch(method) else "other"


def _failure(response: HttpResponse | None, error: Exception | None) -> str | None:
    if error is not None:
        return "connection"
    if response is None:
        return None
    if response.status_code == 429:
        return "ratelimited"
    if response.status_code >= 500:
        return "server_error"
    if response.status_code >= 400:
        return "http_error"
    if isinstance(response.body, dict) and response.body.get("ok") is False:
        return "api_error"
    return None


def counter_of(client: AsyncWebClient) -> FailureCounter | None:
    """The client's failure counter, for the response URLs its calls answer at."""
    found = [h for h in client.retry_handlers if isinstance(h, FailureCounter)]
    return found[0] if found else None


def _webhook(
    url: str, session: aiohttp.ClientSession | None, counter: FailureCounter | None
) -> AsyncWebhookClient:
    return AsyncWebhookClient(url, session=session, retry_handlers=retry_handlers(counter))


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
        self,
        response_url: str,
        session: aiohttp.ClientSession | None,
        api_url: str,
        counter: FailureCounter | None = None,
    ) -> None:
        self.response_url = response_url
        self.session = session
        self.counter = counter
        self.allowed = is_slack_response_url(response_url, api_url)

    async def __call__(self, **message: Any) -> WebhookResponse:
        if not self.allowed:
            log.warning("not answering at a response_url outside Slack's hosts")
            return WebhookResponse(
                url=self.response_url, status_code=403, body="not_slack", headers={}
            )
        return await _webhook(self.response_url, self.session, self.counter).send_dict(message)


async def replace_original(
    client: AsyncWebClient, response_url: str | None, api_url: str, message: dict[str, Any]
) -> bool:
    """Replace the message a ``response_url`` came with (one a modal was opened from, say)
    by ``message``; False when Slack would not take it, or the URL is not Slack's."""
    if not response_url:
        return False
    try:
        answer = await Responder(response_url, client.session, api_url, counter_of(client))(
            replace_original=True, **message
        )
    except Exception as error:
        log.info("response_url failed (%s)", failure_reason(error))
        return False
    return answer.status_code == 200


def retry_handlers(counter: FailureCounter | None = None) -> list[Any]:
    """Retries with backoff on connection errors, 429 (honouring Retry-After) and 5xx;
    with ``counter``, each failed attempt counted first.

    The backoff is short (0.2 s, then 0.4 s): a person is waiting for the answer.
    """
    backoff = BackoffRetryIntervalCalculator(backoff_factor=0.2)
    return [
        *([counter] if counter is not None else []),
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
        webhook = _webhook(response_url, client.session, counter_of(client))
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


async def note_to(
    client: AsyncWebClient, *, user_id: str, channel_id: str, message: dict[str, Any], app_dm: bool
) -> str | None:
    """Show ``message`` to ``user_id`` in the conversation they are in; return where it
    went, or None if nowhere. In their DM with the app (``app_dm``), nobody else reads
    it, so it is an ordinary message there; elsewhere it is ephemeral, as
    :func:`deliver_ephemeral` shows it (the channel, then their DM with the app)."""
    if not app_dm:
        return await deliver_ephemeral(
            client, user_id=user_id, message=message, response_url=None, channel_id=channel_id
        )
    try:
        await post(client, channel_id, message)
    except Exception as error:
        log.info("could not reach %s in their DM (%s)", user_id, failure_reason(error))
        return None
    return "dm"


def failure_reason(error: Exception) -> str:
    """What went wrong, in words safe to log: Slack's error code or the exception type."""
    if isinstance(error, SlackApiError):
        data = error.response.data
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
        return f"HTTP {error.response.status_code}"
    return type(error).__name__


# Slack errors after which a DM can never be delivered: give up rather than retry.
PERMANENT = {
    "user_not_found",
    "account_inactive",
    "user_disabled",
    "cannot_dm_bot",
    "not_allowed_token_type",
    "invalid_auth",
    "channel_not_found",
}


def retry_delay(error: Exception, attempts: int) -> timedelta:
    """Slack's Retry-After when it gave one, else the outbox's backoff."""
    if isinstance(error, SlackApiError):
        retry_after = error.response.headers.get("Retry-After") or error.response.headers.get(
            "retry-after"
        )
        if retry_after and str(retry_after).isdigit():
            return timedelta(seconds=int(retry_after))
    return backoff(attempts)


async def dm(client: AsyncWebClient, user_id: str, message: dict[str, Any]) -> tuple[str, str]:
    """Post ``message`` in the member's DM with the app; its (channel, ts)."""
    opened = await client.conversations_open(users=user_id)
    return await post(client, opened["channel"]["id"], message)


async def post(client: AsyncWebClient, channel: str, message: dict[str, Any]) -> tuple[str, str]:
    """Post ``message`` in ``channel``; its (channel, ts), to update it later."""
    posted = await client.chat_postMessage(channel=channel, **message)
    return str(posted["channel"]), str(posted["ts"])


async def permalink(client: AsyncWebClient, channel: str, ts: str) -> str | None:
    """A link to the message at (``channel``, ``ts``); None when Slack gives none (the
    message is gone, the app cannot see it), for the caller to name the channel instead."""
    try:
        answer = await client.chat_getPermalink(channel=channel, message_ts=ts)
    except Exception as error:
        log.info("no permalink for a message in %s (%s)", channel, failure_reason(error))
        return None
    link = answer.get("permalink")
    return link if isinstance(link, str) else None


async def update(client: AsyncWebClient, channel: str, ts: str, message: dict[str, Any]) -> None:
    """Replace the message at (``channel``, ``ts``) with ``message``."""
    await client.chat_update(channel=channel, ts=ts, **message)


async def open_modal(client: AsyncWebClient, trigger_id: str | None, view: dict[str, Any]) -> bool:
    """Open ``view``; False when Slack would not (an expired trigger, Slack unreachable),
    for the caller to say so to the person."""
    if not trigger_id:
        log.info("no trigger_id to open a modal with")
        return False
    try:
        await client.views_open(trigger_id=trigger_id, view=view)
    except Exception as error:
        log.info("views.open failed (%s)", failure_reason(error))
        return False
    return True


async def publish_home(client: AsyncWebClient, user_id: str, view: dict[str, Any]) -> None:
    """Show ``view`` on the member's Home tab."""
    await client.views_publish(user_id=user_id, view=view)


async def user_groups(client: AsyncWebClient) -> dict[str, str]:
    """The workspace's user groups now (``usergroups.list``), as handle -> name, for an
    admin to pick the approvers from."""
    answer = await client.usergroups_list()
    return {
        str(group["handle"]): str(group.get("name") or group["handle"])
        for group in answer.get("usergroups") or []
        if group.get("handle")
    }
