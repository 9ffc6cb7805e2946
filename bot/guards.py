"""Who may act: one guard per standing, as listener middleware attached where the listener
is registered (``app.action(X, middleware=[require_approver])``), in the manner of
Dispatch's permission classes. A guard that refuses raises NotAllowed with the sentence
to show; :mod:`bot.listeners.replies` shows it where the person acted, and the listener
never runs. Standing is asked of Slack at click time (R21), through ``Standing``.

Acting on a token as its owner or as an admin (R16) is decided with the token at hand:
:func:`owner_or_admin` gives the listener a way to act that tries the first, then the
second."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from slack_bolt.async_app import AsyncBoltContext

from bot.approvers import Standing
from bot.deps import Deps
from storage.errors import NotAllowed

Next = Callable[[], Awaitable[None]]
Guard = Callable[..., Awaitable[None]]
Done = TypeVar("Done")


async def require_approver(standing: Standing, next: Next) -> None:
    """Only a member who may decide on service-token requests now (R20, R21)."""
    if (why := await standing.refusal_to_decide()) is not None:
        raise NotAllowed(why)
    await next()


def require_admin(to: str) -> Guard:
    """Only a workspace admin or owner who is not deactivated, to do what ``to`` says
    ("see the report", R6)."""

    async def admin_only(standing: Standing, next: Next) -> None:
        if not await standing.is_admin():
            raise NotAllowed(f"Only workspace admins and owners can {to}.")
        await next()

    return admin_only


# A storage function acting on a token for a member:
# (db, org, actor, token_id, now, *, admin) -> what it did (the token as it is now, say).
TokenAct = Callable[..., Done]


class OwnerOrAdmin:
    """Acts on a token as its owner; failing that, as an admin if Slack says the member
    is one now (R16). An owner acts without Slack being asked."""

    def __init__(self, deps: Deps, standing: Standing, org: str, actor: str) -> None:
        self.deps = deps
        self.standing = standing
        self.org = org
        self.actor = actor

    async def __call__(self, act: TokenAct[Done], token_id: int) -> Done:
        deps = self.deps
        try:
            return await deps.call(act, deps.db, self.org, self.actor, token_id, deps.clock())
        except NotAllowed:
            if not await self.standing.is_admin():
                raise
        return await deps.call(
            act, deps.db, self.org, self.actor, token_id, deps.clock(), admin=True
        )


async def owner_or_admin(
    context: AsyncBoltContext, deps: Deps, standing: Standing, org: str, actor: str, next: Next
) -> None:
    """For buttons acting on one token (Revoke, Keep, Rotate): the listener receives
    ``as_owner_or_admin``, an :class:`OwnerOrAdmin` for the member."""
    context["as_owner_or_admin"] = OwnerOrAdmin(deps, standing, org, actor)
    await next()
