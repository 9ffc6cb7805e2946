"""The ASGI app: ``/slack/events`` and ``/healthz``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from slack_bolt.adapter.starlette.async_handler import (
    to_async_bolt_request,
    to_starlette_response,
)
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot import api
from bot.app import shared_session
from bot.deps import Deps
from bot.jobs import build_scheduler
from bot.logs import RequestIdMiddleware

log = logging.getLogger(__name__)
DRAIN_TIMEOUT = 20  # seconds a shutdown waits for token deliveries in flight


def build_web(deps: Deps, bolt: AsyncApp, *, scheduler: bool = True) -> Starlette:
    """The ASGI app. With ``scheduler``, the sweep and reconciliation run inside it."""

    async def slack_events(request: Request) -> Response:
        body = await request.body()
        try:
            bolt_request = to_async_bolt_request(request, body)
        except Exception as error:
            # Bolt parses the body before it checks the signature; a body it cannot
            # parse is the sender's fault, not a server error.
            log.info("refused a malformed body on /slack/events (%s)", type(error).__name__)
            return PlainTextResponse("malformed request", status_code=400)
        return to_starlette_response(await bolt.async_dispatch(bolt_request))

    async def healthz(request: Request) -> Response:
        try:
            await deps.call(deps.db.ping)
        except Exception as error:
            log.warning("health check: database unreachable (%s)", type(error).__name__)
            return JSONResponse({"status": "database unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with shared_session(bolt):
            jobs = build_scheduler(deps, bolt.client) if scheduler else None
            if jobs:
                jobs.start()
            try:
                yield
            finally:
                # Tokens being delivered become valid only once shown: let them finish.
                if not await deps.deliveries.drain(DRAIN_TIMEOUT):
                    log.warning(
                        "stopped with %d token deliveries unfinished", deps.deliveries.count
                    )
                if jobs:
                    jobs.shutdown(wait=False)
        await deps.call(deps.db.dispose)

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            *api.routes(deps, bolt.client),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
