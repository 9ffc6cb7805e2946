"""The ASGI apps: the public one (``/slack/events``, ``/healthz``, ``/readyz`` and, unless
the API has a listener of its own, ``/api/v1/*`` and ``/metrics``) and the internal one
(``/api/v1/*``, ``/metrics``, ``/healthz``, ``/readyz``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from slack_bolt.adapter.starlette.async_handler import (
    to_async_bolt_request,
    to_starlette_response,
)
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot import api
from bot.app import shared_session
from bot.deps import Deps, wind_down
from bot.jobs import build_scheduler
from bot.logs import RequestIdMiddleware
from bot.metrics import HttpMetrics, OutboxFigures, metrics_route
from storage import outbox
from storage.db import WORKER_THREADS, InvalidationListener
from storage.migrate import schema_lag

log = logging.getLogger(__name__)

# Slack's rule, as Bolt applies it: a request more than 5 minutes from now is refused.
STALE_AFTER = 5 * 60
# Bodies larger than this are verified and parsed in a worker thread, off the event loop.
PARSE_IN_THREAD_OVER = 64 * 1024


class SlackSignature:
    """Slack's signature, checked over the raw bytes of a request before anything parses
    them (Bolt's own check is off: one is enough). Says why a request is refused."""

    def __init__(self, signing_secret: str | None) -> None:
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None

    def refusal(self, headers: Headers, body: bytes) -> str | None:
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if self._verifier is None:
            return "no signing secret is configured"
        if timestamp is None or signature is None:
            return "no signature"
        # Seconds since the epoch, as Slack sends them; anything else would make the
        # verifier raise (int("1.5"), a 5,000-digit number).
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            return "malformed timestamp"
        if abs(time.time() - int(timestamp)) > STALE_AFTER:
            return "stale timestamp"
        if not signature.isascii():
            return "bad signature"
        try:
            valid = self._verifier.is_valid(body, timestamp, signature)
        except UnicodeDecodeError:  # the verifier reads the body as UTF-8, as Slack sends it
            return "bad signature"
        return None if valid else "bad signature"


def _read_request(
    signature: SlackSignature, request: Request, body: bytes
) -> AsyncBoltRequest | Response:
    """The Bolt request for a verified body, or the answer to one that is refused."""
    refusal = signature.refusal(request.headers, body)
    if refusal is not None:
        # The size and the reason, never the body: it is nobody's until it is verified.
        log.info("refused a %d-byte request to /slack/events: %s", len(body), refusal)
        return JSONResponse({"error": "invalid request"}, status_code=401)
    try:
        return to_async_bolt_request(request, body)
    except Exception as error:
        # A signed body Bolt cannot parse is the sender's fault, not a server error.
        log.info("refused a malformed body on /slack/events (%s)", type(error).__name__)
        return PlainTextResponse("malformed request", status_code=400)


class BodyLimit:
    """Reads each request's body before the app sees it, counting as it arrives: over
    ``max_body`` bytes is 413 (from Content-Length up front, else as soon as the count
    passes it), not all there within ``timeout`` seconds is 408. Both close the connection.
    """

    def __init__(self, app: ASGIApp, max_body: int, timeout: float) -> None:
        self.app = app
        self.max_body = max_body
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and (len(declared) > 18 or int(declared) > self.max_body):
            log.info("refused a %s-byte request body: over %d bytes", declared, self.max_body)
            await _refuse(scope, send, 413, "request body too large")
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # nobody left to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        log.info("refused a request body: over %d bytes", self.max_body)
                        await _refuse(scope, send, 413, "request body too large")
                        return
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            log.info("refused a request body: %d bytes after %g s", size, self.timeout)
            await _refuse(scope, send, 408, "request body too slow")
            return
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(scope: Scope, send: Send, status: int, text: str) -> None:
    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    response = PlainTextResponse(text, status_code=status, headers={"Connection": "close"})
    await response(scope, nothing, send)


def _middleware(deps: Deps, routes: list[BaseRoute]) -> list[Middleware]:
    settings = deps.settings
    return [
        Middleware(HttpMetrics, metrics=deps.metrics, routes=routes),
        Middleware(RequestIdMiddleware),
        Middleware(BodyLimit, max_body=settings.http_max_body, timeout=settings.http_body_timeout),
    ]


def _health(deps: Deps) -> list[Route]:
    """``/healthz``: the process serves (nothing else is asked, so it stays cheap);
    ``/readyz``: it can do its work, its database reachable and at the code's schema."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            lag = await deps.call(schema_lag, deps.db)
        except Exception as error:
            log.warning("readiness check: database unreachable (%s)", type(error).__name__)
            lag = "database unreachable"
        if lag is not None:
            return JSONResponse({"status": lag}, status_code=503)
        return JSONResponse({"status": "ok"})

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]


def _metrics(deps: Deps) -> Route:
    async def figures() -> OutboxFigures:
        found = await deps.call(outbox.backlog, deps.db)
        oldest = found.oldest_queued_at
        age = (deps.clock() - oldest).total_seconds() if oldest is not None else 0.0
        return OutboxFigures(found.pending, max(age, 0.0))

    return metrics_route(deps.metrics, figures)


def _internal_routes(deps: Deps, bolt: AsyncApp) -> list[BaseRoute]:
    """What only the operators' side calls: the API and the metrics."""
    return [*api.routes(deps, bolt.client), _metrics(deps)]


def _install_routes(bolt: AsyncApp) -> list[BaseRoute]:
    """Multi-workspace mode: ``GET /slack/install`` sends the browser to Slack's install
    screen with a new state; Slack sends it back to ``GET /slack/oauth_redirect``."""
    flow = bolt.oauth_flow
    if flow is None:
        return []

    async def install(request: Request) -> Response:
        return to_starlette_response(await flow.handle_installation(_browser(request)))

    async def oauth_redirect(request: Request) -> Response:
        return to_starlette_response(await flow.handle_callback(_browser(request)))

    return [
        Route(flow.install_path, install, methods=["GET"]),
        Route(flow.redirect_uri_path, oauth_redirect, methods=["GET"]),
    ]


def _browser(request: Request) -> AsyncBoltRequest:
    return to_async_bolt_request(request, b"")  # a GET: its query and cookies, no body


def build_api_web(deps: Deps, bolt: AsyncApp) -> Starlette:
    """The internal listener's app: ``/api/v1/*``, ``/metrics`` and the health checks.
    It has no lifespan of its own: it runs beside the public app, inside that one's."""
    routes = [*_health(deps), *_internal_routes(deps, bolt)]
    return Starlette(routes=routes, middleware=_middleware(deps, routes))


def build_web(
    deps: Deps,
    bolt: AsyncApp,
    *,
    scheduler: bool = True,
    with_api: bool = True,
    freeze_after_start: bool = False,
) -> Starlette:
    """The public ASGI app. With ``scheduler``, the sweep and reconciliation run inside it;
    without ``with_api``, ``/api/v1/*`` and ``/metrics`` are left to :func:`build_api_web`. With
    ``freeze_after_start`` (a server process), what start-up built is frozen out of the
    garbage collector's scans once it is done."""
    signature = SlackSignature(
        deps.settings.slack_signing_secret.get_secret_value()
        if deps.settings.slack_signing_secret
        else None
    )

    async def slack_events(request: Request) -> Response:
        body = await request.body()  # whole and within the limit: BodyLimit has read it
        if len(body) > PARSE_IN_THREAD_OVER:
            outcome = await deps.call(_read_request, signature, request, body)
        else:
            outcome = _read_request(signature, request, body)
        if isinstance(outcome, Response):
            return outcome
        return to_starlette_response(await bolt.async_dispatch(outcome))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # As many worker threads as the database keeps connections for.
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        async with shared_session(bolt):
            jobs = build_scheduler(deps, bolt.client) if scheduler else None
            # Beside the scheduler's poll: hears other replicas' revocations at once.
            listener = InvalidationListener(deps.db) if scheduler else None
            if jobs and listener:
                jobs.start()
                await listener.start()
            if freeze_after_start:
                # All of it lives as long as the process: kept out of the collector's
                # scans, which otherwise show up as pauses in request latency.
                gc.collect()
                gc.freeze()
            try:
                yield
            finally:
                if jobs:
                    jobs.pause()  # no sweep starts while the deliveries in flight finish
                await wind_down(deps)
                if jobs and listener:
                    jobs.shutdown(wait=False)
                    await listener.stop()
        await deps.call(deps.db.dispose)

    routes: list[BaseRoute] = [
        Route("/slack/events", slack_events, methods=["POST"]),
        *_health(deps),
    ]
    routes += _install_routes(bolt)
    if with_api:
        routes += _internal_routes(deps, bolt)
    return Starlette(routes=routes, middleware=_middleware(deps, routes), lifespan=lifespan)
