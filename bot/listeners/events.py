"""Events from Slack's Events API."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot import sender
from bot.blocks import tokens as token_blocks
from bot.deps import Deps, org_of
from bot.members import profile_from_slack
from bot.profiles import apply_profile
from storage import tokens

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(handle_app_home_opened)
    app.event("user_change")(handle_member_profile)
    app.event("team_join")(handle_member_profile)


async def publish_home(
    deps: Deps, client: AsyncWebClient, org: str, user_id: str, notice: str | None = None
) -> None:
    """Show the member their tokens on the app's Home tab."""
    listing = await deps.call(tokens.list_user_tokens, deps.db, org, user_id, deps.clock())
    view = token_blocks.home_view(listing.tokens, listing.cap, notice)
    await sender.publish_home(client, user_id, view)


async def handle_app_home_opened(
    event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    if event.get("tab") != "home":
        return  # the Messages tab needs nothing from us
    await publish_home(context["deps"], client, org_of(context), event["user"])


async def handle_member_profile(
    event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    """``user_change`` and ``team_join`` carry the whole user: keep the profile current.
    A deactivated member's user tokens are revoked at once (R17)."""
    deps: Deps = context["deps"]
    profile = profile_from_slack(event["user"])
    synced = await apply_profile(deps, client, org_of(context), profile, deps.clock())
    if synced.newly_deactivated:
        log.info(
            "member %s deactivated: %d user token(s) revoked", profile.user_id, len(synced.revoked)
        )
