"""Slack listeners, one module per kind of request, each with ``register(app, settings)``."""

from __future__ import annotations

from types import ModuleType

from slack_bolt.async_app import AsyncApp

from bot.blocks import audit as audit_blocks
from bot.blocks import owners as owner_blocks
from bot.blocks import service as service_blocks
from bot.blocks import settings as settings_blocks
from bot.blocks import tokens as token_blocks
from bot.blocks import webhooks as webhook_blocks
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
from bot.listeners.payload import Known

# The event types the listeners hear (manifest.yml subscribes to them).
EVENTS = frozenset(
    {"app_home_opened", "user_change", "team_join", "message", "app_uninstalled", "tokens_revoked"}
)


def _ids(*modules: ModuleType) -> frozenset[str]:
    """The action and view callback ids the blocks define (``*_ACTION``, ``*_CALLBACK``,
    ``*_CALLBACKS``): the ones the listeners answer."""
    found: set[str] = set()
    for module in modules:
        for name, value in vars(module).items():
            if name.endswith(("_ACTION", "_CALLBACK")) and isinstance(value, str):
                found.add(value)
            elif name.endswith("_CALLBACKS") and isinstance(value, tuple | list | frozenset):
                found.update(v for v in value if isinstance(v, str))
    return frozenset(found)


KNOWN = Known(
    subcommands=commands.SUBCOMMANDS,
    ids=_ids(
        audit_blocks, owner_blocks, service_blocks, settings_blocks, token_blocks, webhook_blocks
    ),
    events=EVENTS,
)


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
