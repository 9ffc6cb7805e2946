"""Standing in the workspace, checked against Slack when it matters. Who may decide on
service-token requests (R20, R21): the members of the configured user group, or else the
workspace's admins and owners; never a deactivated member or a guest. Who is an admin
(R5, R6, R16, R17): a workspace admin or owner who is not deactivated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings


def _eligible(user: dict[str, Any]) -> bool:
    return not (
        user.get("deleted")
        or user.get("is_bot")
        or user.get("is_restricted")
        or user.get("is_ultra_restricted")
    )


async def _group_members(client: AsyncWebClient, handle: str) -> set[str]:
    answer = await client.usergroups_list(include_users=True)
    for group in answer.get("usergroups") or []:
        if group.get("handle") == handle:
            return set(group.get("users") or [])
    return set()


def _admin(user: dict[str, Any]) -> bool:
    return bool(user.get("is_admin") or user.get("is_owner"))


async def _people(client: AsyncWebClient, chosen: Callable[[dict[str, Any]], bool]) -> list[str]:
    """The workspace's eligible people for whom ``chosen`` holds, from ``users.list``."""
    found = []
    async for page in await client.users_list(limit=200):
        for user in page.get("members") or []:
            if _eligible(user) and chosen(user):
                found.append(str(user["id"]))
    return found


async def approvers(client: AsyncWebClient, settings: Settings) -> list[str]:
    """Everyone who may decide now, for sending them the request by DM."""
    if settings.approver_group:
        group = await _group_members(client, settings.approver_group)
        return await _people(client, lambda user: user["id"] in group)
    return await _people(client, _admin)


async def admins(client: AsyncWebClient) -> list[str]:
    """The workspace's admins and owners, to tell them what needs an admin (R17)."""
    return await _people(client, _admin)


async def is_admin(client: AsyncWebClient, user_id: str) -> bool:
    """Whether ``user_id`` is, as of now, an admin or owner who is not deactivated."""
    user = (await client.users_info(user=user_id))["user"]
    return _admin(user) and not user.get("deleted")


async def refusal(client: AsyncWebClient, settings: Settings, user_id: str) -> str | None:
    """Why ``user_id`` may not decide, as of now; None if they may (R21)."""
    user = (await client.users_info(user=user_id))["user"]
    if user.get("deleted"):
        return "Your account is deactivated."
    if user.get("is_restricted") or user.get("is_ultra_restricted"):
        return "Guests cannot decide on requests."
    if settings.approver_group:
        if user_id not in await _group_members(client, settings.approver_group):
            return f"Only members of @{settings.approver_group} can decide on requests."
    elif not _admin(user):
        return "Only workspace admins and owners can decide on requests."
    return None
