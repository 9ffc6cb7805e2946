"""Standing in the workspace, as Slack says it is. Who may decide on service-token
requests (R20, R21): the members of the approver group (the organization's, set with
``/token settings``, else the server's), or else the workspace's admins and owners;
never a deactivated member or a guest. Where requests go: :func:`routing`. Who is an
admin (R5, R6, R16, R17): a workspace admin or owner (:func:`bot.members.is_admin`) who
is not deactivated.

The lists of people serve the messages sent to them; :class:`Standing` serves the guards
(:mod:`bot.guards`) and the screens that show admins more."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.deps import Deps
from bot.members import is_admin
from bot.sender import failure_reason
from bot.sender import user_groups as user_groups_now
from storage import settings as org_settings
from storage.errors import NotAllowed

log = logging.getLogger(__name__)
PEOPLE_MAX_AGE = timedelta(hours=1)  # how long a list of approvers or admins is trusted
T = TypeVar("T")
UNCONFIRMED = "Slack could not confirm your standing just now. Try again."


def eligible(user: dict[str, Any]) -> bool:
    """Whether a Slack user may hold a standing: a person, active, not a guest."""
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


async def _people(client: AsyncWebClient, chosen: Callable[[dict[str, Any]], bool]) -> list[str]:
    """The workspace's eligible people for whom ``chosen`` holds, from ``users.list``."""
    found = []
    async for page in await client.users_list(limit=200):
        for user in page.get("members") or []:
            if eligible(user) and chosen(user):
                found.append(str(user["id"]))
    return found


@dataclass(frozen=True)
class Routing:
    """Who decides on an organization's requests (a user group's handle, else None: the
    admins and owners) and where they are posted (a channel, else None: by DM)."""

    approver_group: str | None
    approvals_channel: str | None


async def routing(deps: Deps, org: str) -> Routing:
    """The organization's own approver group and approvals channel (``/token settings``),
    each falling back to the server's (TOKENBOT_APPROVER_GROUP, TOKENBOT_APPROVALS_CHANNEL)."""
    group, channel = await deps.call(org_settings.approval_routing, deps.db, org)
    return Routing(
        group or deps.settings.approver_group, channel or deps.settings.approvals_channel
    )


async def approver_group(deps: Deps, org: str) -> str | None:
    """The handle of the group whose members decide on the organization's requests, if
    there is one (:func:`routing`)."""
    return (await routing(deps, org)).approver_group


async def approvers(client: AsyncWebClient, group: str | None) -> list[str]:
    """Everyone who may decide now, for sending them the request by DM: the members of
    ``group``, or the admins and owners when there is none."""
    if group:
        members = await _group_members(client, group)
        return await _people(client, lambda user: user["id"] in members)
    return await _people(client, is_admin)


async def user_groups(client: AsyncWebClient) -> dict[str, str] | None:
    """The workspace's user groups (handle -> name), to choose the approvers from; None
    when Slack cannot say just now."""
    try:
        return await user_groups_now(client)
    except Exception as error:
        log.info("user groups not listed (%s)", failure_reason(error))
        return None


async def admins(client: AsyncWebClient) -> list[str]:
    """The workspace's admins and owners, to tell them what needs an admin (R17)."""
    return await _people(client, is_admin)


async def known_approvers(deps: Deps, client: AsyncWebClient, org: str) -> list[str]:
    """:func:`approvers` of the organization, read from Slack at most once every
    PEOPLE_MAX_AGE."""
    group = await approver_group(deps, org)
    # Keyed by the group too: a group changed in the settings counts at once.
    return await deps.remember(
        f"approvers:{org}:{group or ''}", PEOPLE_MAX_AGE, lambda: approvers(client, group)
    )


def standing_of(deps: Deps, client: AsyncWebClient, org: str, user_id: str) -> Standing:
    """The :class:`Standing` of ``user_id`` in ``org``, to be asked of Slack when needed."""
    group = partial(approver_group, deps, org)
    return Standing(client, deps.settings, user_id, group)


async def known_admins(deps: Deps, client: AsyncWebClient, org: str) -> list[str]:
    """:func:`admins`, read from Slack at most once every PEOPLE_MAX_AGE."""
    return await deps.remember(f"admins:{org}", PEOPLE_MAX_AGE, lambda: admins(client))


class Standing:
    """What Slack says of the member acting in one request: asked at click time (R21),
    at most once per request, and only when a guard or a screen needs it. When Slack
    cannot say, the member is told so (NotAllowed), and nothing is done."""

    def __init__(
        self,
        client: AsyncWebClient,
        settings: Settings,
        user_id: str,
        approver_group: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.user_id = user_id
        # The approver group in force, asked only when a decision needs it; without it,
        # the server's.
        self._approver_group = approver_group
        self._user: dict[str, Any] | None = None

    async def _ask(self, what: str, question: Awaitable[T]) -> T:
        try:
            return await question
        except Exception as error:
            log.warning("%s of %s not checked (%s)", what, self.user_id, failure_reason(error))
            raise NotAllowed(UNCONFIRMED) from error

    async def user(self) -> dict[str, Any]:
        """The member's Slack user object, as of this request."""
        if self._user is None:
            answer = await self._ask("standing", self.client.users_info(user=self.user_id))
            self._user = dict(answer["user"])
        return self._user

    async def approver_group(self) -> str | None:
        """The handle of the group whose members decide on requests, if there is one."""
        if self._approver_group is None:
            return self.settings.approver_group
        return await self._approver_group()

    async def is_admin(self) -> bool:
        """Whether the member is, as of now, an admin or owner who is not deactivated."""
        user = await self.user()
        return is_admin(user) and not user.get("deleted")

    def said_admin(self) -> bool:
        """Whether Slack has already said, in this request, that the member is an admin
        or owner who is not deactivated; Slack is not asked."""
        user = self._user
        return user is not None and is_admin(user) and not user.get("deleted")

    async def refusal_to_decide(self) -> str | None:
        """Why the member may not decide on requests, as of now; None if they may (R21)."""
        user = await self.user()
        if user.get("deleted"):
            return "Your account is deactivated."
        if user.get("is_restricted") or user.get("is_ultra_restricted"):
            return "Guests cannot decide on requests."
        if group := await self.approver_group():
            members = await self._ask("group", _group_members(self.client, group))
            if self.user_id not in members:
                return f"Only members of @{group} can decide on requests."
        elif not is_admin(user):
            return "Only workspace admins and owners can decide on requests."
        return None
