"""Who may decide on service-token requests, checked against Slack when it matters (R20,
R21): the members of the configured user group, or else the workspace's admins and
owners; never a deactivated member or a guest."""

from __future__ import annotations

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


async def approvers(client: AsyncWebClient, settings: Settings) -> list[str]:
    """Everyone who may decide now, for sending them the request by DM."""
    group = (
        await _group_members(client, settings.approver_group) if settings.approver_group else None
    )
    found = []
    async for page in await client.users_list(limit=200):
        for user in page.get("members") or []:
            if not _eligible(user):
                continue
            if group is not None:
                chosen = user["id"] in group
            else:
                chosen = bool(user.get("is_admin") or user.get("is_owner"))
            if chosen:
                found.append(str(user["id"]))
    return found


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
    elif not (user.get("is_admin") or user.get("is_owner")):
        return "Only workspace admins and owners can decide on requests."
    return None
