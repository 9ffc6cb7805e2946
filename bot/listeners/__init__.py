"""Slack listeners, one module per kind of request, each with ``register(app, settings)``."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.config import Settings
from bot.listeners import (
    actions,
    admin,
    commands,
    events,
    installs,
    leaks,
    owners,
    service,
    views,
    webhooks,
)
from bot.listeners import settings as settings_form


def register(app: AsyncApp, settings: Settings) -> None:
    commands.register(app, settings)
    actions.register(app)
    views.register(app)
    events.register(app)
    service.register(app)
    leaks.register(app)
    admin.register(app)
    owners.register(app)
    settings_form.register(app)
    webhooks.register(app)
    if settings.multi_workspace:
        installs.register(app)
