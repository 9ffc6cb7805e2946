"""Outbound webhooks: the one module that sends an organization's events to its webhook
endpoints. Each event is an outbox message (kind ``webhook``, queued with the change it
tells of: :mod:`storage.webhook_events`), so it is sent at least once, whatever happens
to the process meanwhile.

A delivery is an HTTPS POST of the event's JSON, signed the way Slack signs its own
requests: ``X-Tokenbot-Signature: v0=<hex HMAC-SHA256 of "v0:{timestamp}:{body}">`` with
the endpoint's secret, beside ``X-Tokenbot-Request-Timestamp``. A 2xx settles it; 408,
429, 5xx, a timeout or a connection error puts it back for later (after the endpoint's
Retry-After, else the outbox's backoff); any other answer makes it the dead letter, once
recorded. Redirects are not followed. Requests go through one httpx client, never
through :mod:`bot.sender`, which is Slack's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

from storage import outbox
from storage import webhooks as endpoints
from storage.models import NoticeKind

if TYPE_CHECKING:
    from bot.deps import Deps

log = logging.getLogger(__name__)

KINDS = (NoticeKind.WEBHOOK,)
USER_AGENT = "tokenbot"
SIGNATURE_VERSION = "v0"
TIMESTAMP_HEADER = "X-Tokenbot-Request-Timestamp"
SIGNATURE_HEADER = "X-Tokenbot-Signature"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # each step: connect, send, each read
DEADLINE = 15.0  # seconds a delivery may take in all, however slowly an endpoint answers
AT_ONCE = 8  # deliveries in flight at once: one slow endpoint does not hold up the rest
RETRY_AFTER_MAX = timedelta(days=1)  # however long an endpoint asks to be left alone
RETRY_AFTER_MIN = timedelta(seconds=1)
# Answers that say "later": the request timed out, too many, the server's trouble.
_LATER = {408, 429}


def body_of(event: dict[str, Any]) -> bytes:
    """The request body of an event: its JSON, compact, in UTF-8."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v0=`` and the hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` keyed with the
    endpoint's secret: Slack's scheme, so slack_sdk's SignatureVerifier checks it too."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(secret: str, event_id: str, body: bytes, timestamp: str) -> dict[str, str]:
    """The headers of a delivery of ``body`` (the event ``event_id``) at ``timestamp``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": event_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


class WebhookClient:
    """The one httpx client that posts to webhook endpoints: made on first use, on the
    running event loop (an httpx client belongs to one), kept for its connections, and
    closed at shutdown."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=TIMEOUT,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


@dataclass(frozen=True)
class Outcome:
    """How a delivery went: ``status`` for the admins' list ("HTTP 200", "timeout"), and
    whether it is done (``sent``), to be tried again (``later``), or never will be."""

    status: str
    sent: bool = False
    later: bool = False
    retry_after: timedelta | None = None


def _retry_after(value: str | None, now: datetime) -> timedelta | None:
    """An answer's Retry-After (seconds, or an HTTP date), within bounds; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= 9:
        wait = timedelta(seconds=int(value))
    else:
        try:
            wait = parsedate_to_datetime(value) - now
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(wait, RETRY_AFTER_MIN), RETRY_AFTER_MAX)


async def post(
    client: httpx.AsyncClient, target: endpoints.Target, event: dict[str, Any]
) -> Outcome:
    """Send ``event`` to ``target``, signed; how it went. The answer's body is never read."""
    body = body_of(event)
    # The signature's timestamp says when the request was sent, for the endpoint to turn
    # away replays: the wall clock's time, whatever time the domain is told it is.
    timestamp = str(int(time.time()))
    headers = signed_headers(target.secret, str(event.get("id", "")), body, timestamp)
    try:
        async with asyncio.timeout(DEADLINE):
            request = client.build_request("POST", target.url, content=body, headers=headers)
            response = await client.send(request, stream=True)
            await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        return Outcome("timeout", later=True)
    except httpx.HTTPError as error:  # could not connect, or the connection broke
        return Outcome(f"failed ({type(error).__name__})", later=True)
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(f"HTTP {status}", sent=True)
    if status in _LATER or status >= 500:
        wait = _retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        return Outcome(f"HTTP {status}", later=True, retry_after=wait)
    return Outcome(f"HTTP {status}")  # the endpoint refuses it: sending again changes nothing


async def deliver_due(deps: Deps) -> int:
    """Send the webhook messages that are due, AT_ONCE at a time; how many were sent."""
    sent = 0
    slots = asyncio.Semaphore(AT_ONCE)

    async def one(message: outbox.Message) -> bool:
        async with slots:
            return await _deliver_one(deps, message)

    while batch := await deps.call(outbox.claim_due, deps.db, deps.clock(), KINDS):
        # Every delivery of the batch runs to its end before a failure is raised: a
        # message left claimed is claimed again once its lease runs out.
        done = await asyncio.gather(*(one(message) for message in batch), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        sent += sum(1 for outcome in done if outcome is True)
    return sent


async def _resolves_inside(url: str, allow_loopback: bool) -> bool:
    """Whether the endpoint's host name now resolves to an internal address (as
    :func:`storage.webhooks.internal_address` says), where nothing is sent. A name that
    does not resolve is left to the request, which fails and is tried again later."""
    host = httpx.URL(url).host
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {str(info[4][0]) for info in found}
    if allow_loopback and all(ipaddress.ip_address(a).is_loopback for a in addresses):
        return False
    return any(endpoints.internal_address(a) for a in addresses)


async def _deliver_one(deps: Deps, message: outbox.Message) -> bool:
    """Send, record and settle one claimed message; True if the endpoint took it."""
    endpoint, event = message.payload.get("endpoint"), message.payload.get("event")
    if not isinstance(endpoint, int) or not isinstance(event, dict):
        await deps.call(outbox.mark_failed, deps.db, message, "malformed payload")
        return False
    target = await deps.call(endpoints.delivery_target, deps.db, message.org, endpoint)
    if target is None:  # removed since the event: told nothing more
        await deps.call(outbox.mark_skipped, deps.db, message)
        return False
    if await _resolves_inside(target.url, deps.settings.webhooks_allow_loopback):
        outcome = Outcome("refused: the name resolves to an internal address")
    else:
        outcome = await post(deps.webhooks.get(), target, event)
    now = deps.clock()
    await deps.call(endpoints.record_attempt, deps.db, target.id, outcome.status, now)
    host = endpoints.host_of(target.url)  # not the URL: its path may hold a secret
    if outcome.sent:
        await deps.call(outbox.mark_sent, deps.db, message, now)
        log.info("webhook %s sent to %s (%s)", message.id, host, outcome.status)
        return True
    if outcome.later:
        delay = outcome.retry_after or outbox.backoff(message.attempts)
        await deps.call(outbox.mark_retry, deps.db, message, now, delay, outcome.status)
        log.info(
            "webhook %s to %s will be retried in %s (%s)", message.id, host, delay, outcome.status
        )
        return False
    await deps.call(outbox.mark_failed, deps.db, message, outcome.status)
    log.warning("webhook %s to %s dropped: %s", message.id, host, outcome.status)
    return False
