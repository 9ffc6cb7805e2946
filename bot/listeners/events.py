"""Events from Slack's Events API."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import screens
from bot.approvers import Standing
from bot.deps import Deps
from bot.members import profile_from_slack
from bot.profiles import apply_profile

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(handle_app_home_opened)
    app.event("user_change")(handle_member_profile)
    app.event("team_join")(handle_member_profile)


async def handle_app_home_opened(
    event: dict[str, Any],
    client: AsyncWebClient,
    deps: Deps,
    org: str,
    actor: str,
    standing: Standing,
) -> None:
    if event.get("tab") != "home":
        return  # the Messages tab needs nothing from us
    await screens.publish_home(deps, client, org, actor, standing=standing)


async def handle_member_profile(
    event: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str
) -> None:
    """``user_change`` and ``team_join`` carry the whole user: keep the profile current.
    A deactivated member's user tokens are revoked at once (R17)."""
    profile = profile_from_slack(event["user"])
    synced = await apply_profile(deps, client, org, profile, deps.clock())
    if synced.newly_deactivated:
        log.info(
            "member %s deactivated: %d user token(s) revoked", profile.user_id, len(synced.revoked)
        )
