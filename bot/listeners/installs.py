"""Multi-workspace mode: an organization that removes the app, or revokes its bot token,
is no longer served (its tokens stay, not valid until it installs the app again)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.deps import Deps


def register(app: AsyncApp) -> None:
    app.event("app_uninstalled")(handle_app_uninstalled)
    app.event("tokens_revoked")(handle_tokens_revoked)


async def handle_app_uninstalled(deps: Deps, org: str) -> None:
    assert deps.installs is not None  # registered in multi-workspace mode only
    await deps.installs.uninstalled(org, "app_uninstalled")


async def handle_tokens_revoked(event: dict[str, Any], deps: Deps, org: str) -> None:
    """Only the bot token matters: tokenbot keeps no member's token."""
    assert deps.installs is not None
    if (event.get("tokens") or {}).get("bot"):
        await deps.installs.uninstalled(org, "tokens_revoked")
