"""Who may act: the guards, the member's standing as Slack gives it, and acting on a token
as its owner or as an admin (R16, R20, R21). Slack is a fake client that answers
``users.info`` and ``usergroups.list`` from a dict and counts what it was asked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.approvers import UNCONFIRMED, Standing
from bot.config import Settings
from bot.deps import Deps
from bot.guards import OwnerOrAdmin, require_admin, require_approver
from bot.members import is_admin
from storage import tokens
from storage.db import Database
from storage.errors import NotAllowed
from storage.models import ADMIN_ROLES
from tests.conftest import NOW, shown

ORG, ALICE, BOB = "T0ORG", "U0ALICE", "U0BOB"


class FakeSlack:
    """The two Web API methods a standing needs, answered from ``users``."""

    def __init__(self, users: dict[str, dict[str, Any]], groups: dict[str, list[str]]) -> None:
        self.users = users
        self.groups = groups
        self.asked: list[str] = []
        self.down = False

    async def users_info(self, *, user: str) -> dict[str, Any]:
        self.asked.append("users.info")
        if self.down:
            raise ConnectionError("slack is down")
        return {"user": {"id": user, **self.users.get(user, {})}}

    async def usergroups_list(self, *, include_users: bool) -> dict[str, Any]:
        self.asked.append("usergroups.list")
        if self.down:
            raise ConnectionError("slack is down")
        found = [{"handle": h, "users": members} for h, members in self.groups.items()]
        return {"usergroups": found}


def standing_of(
    user: dict[str, Any], group: str | None = None, members: list[str] | None = None
) -> tuple[Standing, FakeSlack]:
    slack = FakeSlack({ALICE: user}, {group: members or []} if group else {})
    settings = Settings(approver_group=group)
    return Standing(cast(AsyncWebClient, slack), settings, ALICE), slack


class Next:
    """Bolt's ``next``: records that the chain went on."""

    def __init__(self) -> None:
        self.called = False

    async def __call__(self) -> None:
        self.called = True


def test_an_admin_is_an_owner_or_an_admin_and_no_one_else() -> None:
    assert set(ADMIN_ROLES) == {"owner", "admin"}
    assert is_admin({"is_admin": True}) and is_admin({"is_owner": True})
    assert is_admin({"is_primary_owner": True})
    assert not is_admin({}) and not is_admin({"is_restricted": True})


@pytest.mark.parametrize(
    ("user", "group", "members", "why"),
    [
        ({"is_admin": True, "deleted": True}, None, None, "Your account is deactivated."),
        ({"is_admin": True, "is_restricted": True}, None, None, "Guests cannot decide"),
        ({"is_ultra_restricted": True}, None, None, "Guests cannot decide"),
        ({}, None, None, "Only workspace admins and owners can decide on requests."),
        ({"is_admin": True}, "approvers", [BOB], "Only members of @approvers can decide"),
    ],
)
async def test_the_approver_guard_refuses_with_the_reason_and_stops_the_chain(
    user: dict[str, Any], group: str | None, members: list[str] | None, why: str
) -> None:
    standing, _ = standing_of(user, group, members)
    went_on = Next()
    with pytest.raises(NotAllowed, match=why):
        await require_approver(standing, went_on)
    assert not went_on.called


@pytest.mark.parametrize(
    ("user", "group", "members"),
    [({"is_admin": True}, None, None), ({"is_owner": True}, None, None), ({}, "ops", [ALICE])],
)
async def test_the_approver_guard_lets_an_approver_through(
    user: dict[str, Any], group: str | None, members: list[str] | None
) -> None:
    standing, _ = standing_of(user, group, members)
    went_on = Next()
    await require_approver(standing, went_on)
    assert went_on.called


async def test_the_admin_guard_says_what_only_admins_may_do() -> None:
    guard = require_admin("see the report")
    member, _ = standing_of({})
    went_on = Next()
    with pytest.raises(
        NotAllowed, match=r"^Only workspace admins and owners can see the report\.$"
    ):
        await guard(member, went_on)
    assert not went_on.called
    deactivated, _ = standing_of({"is_owner": True, "deleted": True})
    with pytest.raises(NotAllowed):
        await guard(deactivated, went_on)
    admin, _ = standing_of({"is_admin": True})
    await guard(admin, went_on)
    assert went_on.called


async def test_a_standing_slack_cannot_give_is_refused_plainly() -> None:
    standing, slack = standing_of({"is_admin": True})
    slack.down = True
    with pytest.raises(NotAllowed, match=UNCONFIRMED):
        await require_approver(standing, Next())
    with pytest.raises(NotAllowed, match=UNCONFIRMED):
        await standing.is_admin()


async def test_slack_is_asked_once_per_request_however_many_checks() -> None:
    standing, slack = standing_of({"is_admin": True})
    assert await standing.is_admin()
    assert await standing.refusal_to_decide() is None
    assert await standing.is_admin()
    assert slack.asked == ["users.info"]


@pytest.fixture
def deps(db: Database) -> Iterator[Deps]:
    yield Deps(settings=Settings(), db=db, clock=lambda: NOW)


def acting(deps: Deps, user: dict[str, Any], actor: str) -> tuple[OwnerOrAdmin, FakeSlack]:
    slack = FakeSlack({actor: user}, {})
    standing = Standing(cast(AsyncWebClient, slack), deps.settings, actor)
    return OwnerOrAdmin(deps, standing, ORG, actor), slack


async def test_an_owner_revokes_their_token_without_slack_being_asked(deps: Deps) -> None:
    issued = shown(deps.db, ORG, tokens.issue_user_token(deps.db, ORG, ALICE, "ci", NOW))
    as_owner_or_admin, slack = acting(deps, {}, ALICE)
    revoked = await as_owner_or_admin(tokens.revoke_token, issued.info.id)
    assert revoked.state == "revoked" and slack.asked == []


async def test_an_admin_revokes_another_members_token_once_slack_says_so(deps: Deps) -> None:
    issued = shown(deps.db, ORG, tokens.issue_user_token(deps.db, ORG, ALICE, "ci", NOW))
    as_owner_or_admin, slack = acting(deps, {"is_admin": True}, BOB)
    revoked = await as_owner_or_admin(tokens.revoke_token, issued.info.id)
    assert revoked.state == "revoked" and slack.asked == ["users.info"]


async def test_a_member_is_refused_another_members_token_with_the_storage_sentence(
    deps: Deps,
) -> None:
    issued = shown(deps.db, ORG, tokens.issue_user_token(deps.db, ORG, ALICE, "ci", NOW))
    as_owner_or_admin, _ = acting(deps, {}, BOB)
    with pytest.raises(NotAllowed, match=r"^You can revoke only your own tokens\.$"):
        await as_owner_or_admin(tokens.revoke_token, issued.info.id)
    assert [t.name for t in tokens.list_user_tokens(deps.db, ORG, ALICE, NOW).tokens] == ["ci"]
