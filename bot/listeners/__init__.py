"""Slack listeners, one module per kind of request, each with ``register(app, settings)``."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.config import Settings
from bot.listeners import actions, commands, events, service, views, webhooks


def register(app: AsyncApp, settings: Settings) -> None:
    commands.register(app, settings)
    actions.register(app)
    views.register(app)
    events.register(app)
    service.register(app)
    webhooks.register(app)
