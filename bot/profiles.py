"""Members' Slack profiles, fetched when the cached one is older than allowed (R1)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta

from slack_sdk.web.async_client import AsyncWebClient

from bot.deps import Deps
from bot.notify import deliver_ownerless_reports, update_request_copies
from storage import members
from storage.usage import ValidToken

log = logging.getLogger(__name__)


class GroupDirectory:
    """Which user groups each member belongs to, per organization, from
    ``usergroups.list``; one call serves every member until it is ``max_age`` old."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._cache: dict[str, tuple[float, dict[str, list[str]]]] = {}

    async def groups_of(self, client: AsyncWebClient, org: str, user_id: str) -> list[str]:
        fetched = self._cache.get(org)
        if fetched is None or time.monotonic() - fetched[0] > self.max_age:
            answer = await client.usergroups_list(include_users=True)
            by_user: dict[str, list[str]] = {}
            for group in answer.get("usergroups") or []:
                for member in group.get("users") or []:
                    by_user.setdefault(member, []).append(group["handle"])
            fetched = (time.monotonic(), by_user)
            self._cache[org] = fetched
        return sorted(fetched[1].get(user_id, []))


async def apply_profile(
    deps: Deps,
    client: AsyncWebClient,
    org: str,
    profile: members.Profile,
    now: datetime,
    *,
    wait: bool = True,
) -> members.Synced:
    """Store a member's profile as Slack gave it, then do in Slack what a deactivation
    asks (R17): the copies of their cancelled requests say so, and the admins hear of the
    service users left with no owner. With ``wait`` False those messages go out in the
    background, for callers that must answer now."""
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
    groups: GroupDirectory,
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
        user_groups = await groups.groups_of(client, token.org, token.owner)
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
