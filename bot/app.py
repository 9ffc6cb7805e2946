"""Wiring: the Bolt app with its client, dependencies and listeners."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncApp, AsyncBoltContext, AsyncBoltRequest
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.internals import (
    extract_enterprise_id,
    extract_team_id,
    extract_user_id,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import approvers, listeners
from bot.deps import Deps, org_of
from bot.installs import Installations
from bot.listeners import payload, replies
from bot.logs import quiet_slack_libraries
from bot.metrics import Metrics
from bot.sender import FailureCounter, Responder, counter_of, retry_handlers
from storage import events

log = logging.getLogger(__name__)


def build_client(deps: Deps) -> AsyncWebClient:
    token = deps.settings.slack_bot_token
    return AsyncWebClient(
        token=token.get_secret_value() if token else None,
        base_url=deps.settings.slack_api_url,
        retry_handlers=retry_handlers(
            FailureCounter(deps.metrics.slack_api_errors, deps.settings.slack_api_url)
        ),
    )


def build_app(deps: Deps) -> AsyncApp:
    quiet_slack_libraries()
    secret = deps.settings.slack_signing_secret
    oauth: dict[str, Any] = {}
    if deps.settings.multi_workspace:
        deps.installs = installs = Installations(deps)
        oauth = {
            "oauth_settings": installs.oauth_settings(),
            "authorize": installs.authorize(),
            "before_authorize": RefuseNotInstalled(installs),
        }
    app = AsyncApp(
        client=build_client(deps),
        signing_secret=secret.get_secret_value() if secret else "",
        logger=logging.getLogger("slack_bolt.tokenbot"),
        # bot.web checks every signature over the raw body before anything parses it, and
        # Socket Mode needs none; Bolt's second check would also log refused bodies whole.
        request_verification_enabled=False,
        **oauth,
    )

    app.use(ListenerMetrics(deps.metrics))
    app.use(RefuseMalformed())

    @app.middleware
    async def provide_deps(
        req: AsyncBoltRequest, context: AsyncBoltContext, next: Any
    ) -> BoltResponse | None:
        event_id = req.body.get("event_id")
        # A message with no token in it, most of what the app hears, costs no write.
        remembered = event_id and not payload.is_idle_message(req.body)
        if remembered and not await deps.call(
            events.first_delivery, deps.db, str(event_id), deps.clock()
        ):
            return BoltResponse(status=200, body="")  # a repeated delivery: no second effect
        # What every listener and guard takes as parameters (Bolt passes context keys
        # by name): the dependencies, the organization, and the member acting, if any.
        context["deps"] = deps
        context["org"] = org_of(context)
        context["actor"] = actor = payload.actor_of(req.body)
        if actor is not None:
            client = context.client or app.client
            context["standing"] = approvers.standing_of(deps, client, context["org"], actor)
        # Always ours, so no answer goes to a response_url that is not Slack's.
        context["respond"] = Responder(
            context.response_url or "",
            app.client.session,
            deps.settings.slack_api_url,
            counter_of(app.client),
        )
        await next()
        return None

    app.error(replies.answer_error)
    listeners.register(app, deps.settings)
    return app


class ListenerMetrics(AsyncMiddleware):
    """Counts each request from Slack and times it until it is acknowledged, by the kind
    of request (``payload.listener_label``: a bounded set, never what a person typed).
    First, so that refused and repeated requests are counted too; in HTTP and in Socket
    Mode alike."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        label = payload.listener_label(req.body, listeners.KNOWN)
        started = time.perf_counter()
        try:
            return await next()
        finally:
            self.metrics.slack_requests.labels(label).inc()
            self.metrics.slack_seconds.labels(label).observe(time.perf_counter() - started)


class RefuseMalformed(AsyncMiddleware):
    """A 400 for a signed payload that cannot be Slack's (a field of the wrong type, one
    missing), before anything reads it: Bolt's function middleware and listeners would
    fail on it with a 500. Runs after Bolt has checked the signature."""

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        if not _identifies_sender(req.body):
            return BoltResponse(status=400, body="malformed request: no team or user")
        if (why := payload.malformed(req.body)) is not None:
            log.info("refused a malformed %s (%s)", payload.kind_of(req.body), why)
            return BoltResponse(status=400, body="malformed request")
        await next()
        return resp


class RefuseNotInstalled(AsyncMiddleware):
    """Multi-workspace mode: a request from an organization that does not have the app
    installed is refused with 401 before Bolt looks for its bot token, and logged once per
    organization. The events that say the app was removed pass."""

    def __init__(self, installs: Installations) -> None:
        self.installs = installs

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        body = req.body
        if body.get("type") in ("url_verification", "ssl_check") or (
            body.get("type") == "event_callback"
            and (body.get("event") or {}).get("type") in UNINSTALL_EVENTS
        ):
            return await next()
        if not _identifies_sender(body):
            return BoltResponse(status=400, body="malformed request: no team or user")
        refusal = await self.installs.refusal(org_of(req.context))
        return refusal if refusal is not None else await next()


UNINSTALL_EVENTS = ("app_uninstalled", "tokens_revoked")


def _identifies_sender(body: dict[str, Any]) -> bool:
    """Every request names its organization; commands and clicks also name the member.

    Read from the body itself: in single-workspace mode Bolt fills the context's team and
    user from the bot's own credentials.
    """
    if not (extract_team_id(body) or extract_enterprise_id(body)):
        return False
    return body.get("type") == "event_callback" or bool(extract_user_id(body))


@asynccontextmanager
async def shared_session(app: AsyncApp) -> AsyncIterator[None]:
    """One HTTP session, for keep-alive connections, for every call to Slack while the
    block runs. aiohttp sessions belong to a running event loop, hence not at build time.
    """
    async with aiohttp.ClientSession() as session:
        app.client.session = session
        try:
            yield
        finally:
            app.client.session = None
