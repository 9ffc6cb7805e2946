"""Members' Slack profiles, fetched again in the background when the cached one is older
than allowed (R1)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cachetools import LRUCache
from slack_sdk.web.async_client import AsyncWebClient

from bot.deps import Deps
from bot.installs import client_for
from bot.members import profile_from_slack
from bot.notify import deliver, update_request_copies
from bot.sender import counter_of
from storage import members
from storage.models import NoticeKind
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
    deps.keep(_groups_key(org), groups, timedelta(seconds=deps.settings.profile_max_age))
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
            # Messages about a deactivation already stored: a shutdown lets them finish.
            deps.background.start(follow_up, finish=True).add_done_callback(_settled)
    return synced


def _settled(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("follow-up of a deactivation failed (%s)", type(error).__name__)


async def _after_deactivation(deps: Deps, client: AsyncWebClient, synced: members.Synced) -> None:
    for request in synced.cancelled:
        await update_request_copies(deps, client, request)
    if synced.orphaned:
        await deliver(deps, client, [NoticeKind.OWNERLESS])


REFRESH_TIMEOUT = 5  # seconds: a refresh that takes longer is tried again on a later use


def _without_retries(client: AsyncWebClient) -> AsyncWebClient:
    """``client`` on the same connections, but with no retries: nothing on the way to
    an answer, or holding a member's refresh, sleeps on a Retry-After."""
    return AsyncWebClient(
        token=client.token,
        base_url=client.base_url,
        session=client.session,
        timeout=REFRESH_TIMEOUT,
        retry_handlers=[counter] if (counter := counter_of(client)) else [],  # counts only
    )


@dataclass(frozen=True)
class Refreshed:
    """What a refresh did: ``synced`` is None when Slack gave no profile; ``failure`` is
    what Slack refused (the profile, or only the groups), for when to ask again."""

    synced: members.Synced | None
    failure: Exception | None = None


async def refresh_profile(deps: Deps, client: AsyncWebClient, org: str, user_id: str) -> Refreshed:
    """Fetch the member's profile and groups from Slack and store them (a member Slack
    says is gone loses their user tokens, R17). A profile whose groups Slack would not
    give is stored all the same, without them (its role and standing apply at once; it
    is not counted as fresh)."""
    quick = _without_retries(client)
    try:
        answer = await quick.users_info(user=user_id)
    except Exception as error:
        log.warning("profile of %s not refreshed (%s)", user_id, type(error).__name__)
        return Refreshed(None, error)
    groups: list[str] | None = None
    failure: Exception | None = None
    try:
        groups = (await known_groups(deps, quick, org)).get(user_id, [])
    except Exception as error:
        log.warning("groups of %s not refreshed (%s)", user_id, type(error).__name__)
        failure = error
    profile = profile_from_slack(answer["user"], groups)
    synced = await apply_profile(
        deps, client, org, profile, deps.clock(), wait=False, add_groups=False
    )
    return Refreshed(synced, failure)


BACKOFF_FIRST = timedelta(seconds=30)  # after a failure that says nothing of when to retry
BACKOFF_MAX = timedelta(minutes=15)


def _retry_after(error: Exception) -> timedelta | None:
    """Slack's ``Retry-After`` on a refused call (slack_sdk's SlackApiError keeps the
    response), if it gave one."""
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            value = value[0] if isinstance(value, list | tuple) and value else value
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            return timedelta(seconds=min(max(seconds, 0), BACKOFF_MAX.total_seconds()))
    return None


class ProfileRefresher:
    """Keeps members' cached profiles within their allowed age without making anyone
    wait (R1): a stale profile serves while one refresh per member runs in the
    background. A refresh that fails is not slept on, and not tried again before Slack's
    ``Retry-After`` (else a backoff that doubles with each failure, up to 15 minutes):
    a busy token would otherwise ask Slack again with every use.

    The profile a refresh stores reaches answers through the validation cache: a change
    of role, groups, name or standing moves the database's generation. ``fetched``
    remembers when each member was last refreshed, so that an unchanged profile is not
    fetched again for every cached answer that still carries the older age.
    """

    def __init__(self, deps: Deps, client: AsyncWebClient, size: int = 100_000) -> None:
        self.deps = deps
        self.client = client
        self.running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.fetched: LRUCache[tuple[str, str], datetime] = LRUCache(maxsize=size)
        # Members whose last refresh failed: not before when to try again, and how many
        # failures in a row.
        self.backoff: LRUCache[tuple[str, str], tuple[datetime, int]] = LRUCache(maxsize=size)

    def is_stale(self, token: ValidToken, now: datetime) -> bool:
        if token.owner is None:
            return False  # a service token carries no member's profile (R2)
        ages = [a for a in (token.profile_at, self.fetched.get((token.org, token.owner))) if a]
        max_age = timedelta(seconds=self.deps.settings.profile_max_age)
        return not ages or now - max(ages) >= max_age

    def refresh_if_stale(self, token: ValidToken, now: datetime) -> None:
        """Start a refresh of the token's member unless one is running, none is due, or
        the last one failed too recently."""
        if token.owner is None or not self.is_stale(token, now):
            return
        key = (token.org, token.owner)
        if key in self.running:
            return
        held = self.backoff.get(key)
        if held is not None and now < held[0]:
            return
        # A shutdown cancels it: the next use after a restart fetches the profile again.
        task = self.deps.background.start(self._refresh(key), finish=False)
        self.running[key] = task
        task.add_done_callback(lambda done: self._settled(key, done))

    async def _refresh(self, key: tuple[str, str]) -> None:
        client = await client_for(self.deps, self.client, key[0])
        if client is None:
            return  # not installed there (any more): its tokens are not valid either
        refreshed = await refresh_profile(self.deps, client, *key)
        now = self.deps.clock()
        if refreshed.failure is None:
            self.fetched[key] = now
            self.backoff.pop(key, None)
            return
        failures = self.backoff[key][1] + 1 if key in self.backoff else 1
        wait = _retry_after(refreshed.failure) or min(
            BACKOFF_FIRST * 2 ** min(failures - 1, 10), BACKOFF_MAX
        )
        self.backoff[key] = (now + wait, failures)

    def _settled(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        self.running.pop(key, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("profile of %s not refreshed (%s)", key[1], type(error).__name__)
