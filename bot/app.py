"""Wiring: the Bolt app with its client, dependencies and listeners."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot import listeners
from bot.deps import Deps
from bot.logs import quiet_slack_libraries
from bot.notify import retry_handlers

log = logging.getLogger(__name__)


def build_client(deps: Deps) -> AsyncWebClient:
    token = deps.settings.slack_bot_token
    return AsyncWebClient(
        token=token.get_secret_value() if token else None,
        base_url=deps.settings.slack_api_url,
        retry_handlers=retry_handlers(),
    )


def build_app(deps: Deps) -> AsyncApp:
    quiet_slack_libraries()
    secret = deps.settings.slack_signing_secret
    app = AsyncApp(
        client=build_client(deps),
        signing_secret=secret.get_secret_value() if secret else "",
        logger=logging.getLogger("slack_bolt.tokenbot"),
    )

    @app.middleware
    async def provide_deps(context: AsyncBoltContext, next: Any) -> None:
        context["deps"] = deps
        await next()

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        # The type and where it came from, never the payload: it may carry a secret.
        kind = body.get("type") or body.get("command") or "request"
        log.error("handling %s failed: %s", kind, type(error).__name__, exc_info=error)

    listeners.register(app, deps.settings)
    return app


def _identifies_sender(body: dict[str, Any], context: AsyncBoltContext) -> bool:
    """Every request names its organization; commands and clicks also name the member."""
    if not (context.team_id or context.enterprise_id):
        return False
    return body.get("type") == "event_callback" or bool(context.user_id)
