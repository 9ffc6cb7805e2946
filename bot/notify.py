"""Delivery to Slack. A new token goes only where Slack does not keep it (R14)."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

log = logging.getLogger(__name__)


def retry_handlers() -> list[Any]:
    """Retries with backoff on connection errors, 429 (honouring Retry-After) and 5xx."""
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        AsyncServerErrorRetryHandler(max_retry_count=2),
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
        webhook = AsyncWebhookClient(response_url, retry_handlers=retry_handlers())
        try:
            response = await webhook.send(
                response_type="ephemeral", replace_original=False, **message
            )
            if response.status_code == 200:
                return "response_url"
            log.info("response_url answered %s; trying the channel", response.status_code)
        except Exception as error:  # a dead URL must not stop the fallbacks
            log.info("response_url failed (%s); trying the channel", type(error).__name__)
    if channel_id:
        try:
            await client.chat_postEphemeral(channel=channel_id, user=user_id, **message)
            return "channel"
        except SlackApiError as error:
            log.info("chat.postEphemeral in channel failed: %s", error.response.get("error"))
    try:
        opened = await client.conversations_open(users=user_id)
        dm = opened["channel"]["id"]
        await client.chat_postEphemeral(channel=dm, user=user_id, **message)
        return "dm"
    except SlackApiError as error:
        log.warning("could not reach %s in their DM: %s", user_id, error.response.get("error"))
    return None
