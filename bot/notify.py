"""Delivery to Slack. A new token goes only where Slack does not keep it (R14)."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
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

log = logging.getLogger(__name__)


def _webhook(url: str, session: aiohttp.ClientSession | None) -> AsyncWebhookClient:
    return AsyncWebhookClient(url, session=session, retry_handlers=retry_handlers())


class Responder:
    """Bolt's ``respond()``, over the app's shared HTTP session and with retries.

    Bolt's own opens a new connection for every message; under load that costs more
    than the rest of the request.
    """

    def __init__(self, response_url: str, session: aiohttp.ClientSession | None) -> None:
        self.response_url = response_url
        self.session = session

    async def __call__(self, **message: Any) -> WebhookResponse:
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
            log.info("response_url failed (%s); trying the channel", _why(error))
    if channel_id:
        try:
            await client.chat_postEphemeral(channel=channel_id, user=user_id, **message)
            return "channel"
        except Exception as error:
            log.info("chat.postEphemeral in the channel failed (%s); trying the DM", _why(error))
    try:
        opened = await client.conversations_open(users=user_id)
        dm = opened["channel"]["id"]
        await client.chat_postEphemeral(channel=dm, user=user_id, **message)
        return "dm"
    except Exception as error:
        log.warning("could not reach %s in their DM (%s)", user_id, _why(error))
    return None


def _why(error: Exception) -> str:
    """What went wrong, in words safe to log: Slack's error code or the exception type."""
    if isinstance(error, SlackApiError):
        data = error.response.data
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
        return f"HTTP {error.response.status_code}"
    return type(error).__name__
