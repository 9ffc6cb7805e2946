"""Members' Slack profiles, fetched when the cached one is older than allowed (R1)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from slack_sdk.web.async_client import AsyncWebClient

from bot.deps import Deps
from bot.notify import deliver_ownerless_reports, update_request_copies
from storage import members
from storage.usage import ValidToken

log = logging.getLogger(__name__)


async def group_memberships(client: AsyncWebClient) -> dict[str, list[str]]:
    """Slack user id → the handles of the user groups they belong to, sorted: one
    ``usergroups.list`` call for the whole organization."""
    answer = await client.usergroups_list(include_users=True)
    by_user: dict[str, list[str]] = {}
    for group in answer.get("usergroups") or []:
        for member in group.get("users") or []:
            by_user.setdefault(member, []).append(group["handle"])
    return {user: sorted(handles) for user, handles in by_user.items()}


def _groups_key(org: str) -> str:
    return f"usergroups:{org}"


async def known_groups(deps: Deps, client: AsyncWebClient, org: str) -> dict[str, list[str]]:
    """The organization's group memberships, fetched at most once per profile age."""
    max_age = timedelta(seconds=deps.settings.profile_max_age)
    return await deps.remember(_groups_key(org), max_age, lambda: group_memberships(client))


async def fetch_groups(deps: Deps, client: AsyncWebClient, org: str) -> dict[str, list[str]] | None:
    """The organization's group memberships as Slack has them now (and kept for
    :func:`known_groups`); None when Slack cannot say."""
    try:
        groups = await group_memberships(client)
    except Exception as error:
        log.warning("user groups not fetched (%s)", type(error).__name__)
        return None
    deps.memo[_groups_key(org)] = (deps.clock(), groups)
    return groups


async def apply_profile(
    deps: Deps,
    client: AsyncWebClient,
    org: str,
    profile: members.Profile,
    now: datetime,
    *,
    wait: bool = True,
    add_groups: bool = True,
) -> members.Synced:
    """Store a member's profile as Slack gave it, then do in Slack what a deactivation
    asks (R17): the copies of their cancelled requests say so, and the admins hear of the
    service users left with no owner. With ``wait`` False those messages go out in the
    background, for callers that must answer now.

    A profile without groups (Slack's user object has none) gets them from
    :func:`known_groups` when ``add_groups``; without them it is stored but not counted
    as fresh."""
    if profile.groups is None and add_groups:
        try:
            groups = await known_groups(deps, client, org)
        except Exception as error:
            log.info("user groups not known (%s)", type(error).__name__)
        else:
            profile = replace(profile, groups=groups.get(profile.user_id, []))
    synced = await deps.call(members.sync_member, deps.db, org, profile, now)
    if synced.cancelled or synced.orphaned:
        follow_up = _after_deactivation(deps, client, synced)
        if wait:
            await follow_up
        else:
            task = asyncio.create_task(follow_up)
            _background.add(task)
            task.add_done_callback(_settled)
    return synced


_background: set[asyncio.Task[None]] = set()  # held, so that they are not collected


def _settled(task: asyncio.Task[None]) -> None:
    _background.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("follow-up of a deactivation failed (%s)", type(error).__name__)


async def _after_deactivation(deps: Deps, client: AsyncWebClient, synced: members.Synced) -> None:
    for request in synced.cancelled:
        await update_request_copies(deps, client, request)
    if synced.orphaned:
        await deliver_ownerless_reports(deps, client)


async def with_current_profile(
    deps: Deps,
    client: AsyncWebClient,
    token: ValidToken,
    now: datetime,
) -> ValidToken | None:
    """``token`` with its member's role and groups no older than the allowed age; None if
    Slack says the member is gone. If Slack cannot be reached, the cached profile serves.
    """
    max_age = timedelta(seconds=deps.settings.profile_max_age)
    if token.owner is None or (token.profile_at and now - token.profile_at < max_age):
        return token
    try:
        answer = await client.users_info(user=token.owner)
        user_groups = (await known_groups(deps, client, token.org)).get(token.owner, [])
    except Exception as error:
        log.warning(
            "profile of %s not refreshed (%s); using the cached one",
            token.owner,
            type(error).__name__,
        )
        return token
    profile = members.profile_from_slack(answer["user"], user_groups)
    # The caller is an API waiting for its answer: the Slack messages go in the background.
    await apply_profile(deps, client, token.org, profile, now, wait=False)
    if profile.deleted:
        return None
    return replace(
        token,
        role=profile.role,
        groups=tuple(user_groups),
        display_name=profile.display_name,
        profile_at=now,
    )
