"""Who may act: one guard per standing, as listener middleware attached where the listener
is registered (``app.action(X, middleware=[require_approver])``), in the manner of
Dispatch's permission classes. A guard that refuses raises NotAllowed with the sentence
to show; :mod:`bot.listeners.replies` shows it where the person acted, and the listener
never runs. Standing is asked of Slack at click time (R21), through ``Standing``.

Acting on a token as its owner or as an admin (R16), and on a service user's owners as
one of them or as an admin, is decided with the token or service user at hand:
:func:`owner_or_admin` gives the listener a way to act that tries the first, then the
second."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from slack_bolt.async_app import AsyncBoltContext

from bot.approvers import Standing
from bot.deps import Deps
from storage.errors import NotAllowed

Next = Callable[[], Awaitable[None]]
Guard = Callable[..., Awaitable[None]]


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


T = TypeVar("T")


class OwnerOrAdmin:
    """Acts on a token (or a service user) as its owner; failing that, as an admin if
    Slack says the member is one now (R16). An owner acts without Slack being asked."""

    def __init__(self, deps: Deps, standing: Standing, org: str, actor: str) -> None:
        self.deps = deps
        self.standing = standing
        self.org = org
        self.actor = actor

    async def __call__(self, act: Callable[..., T], target: int, **more: Any) -> T:
        """``act(db, org, actor, target, now, **more)``: a storage function acting on the
        token or service user ``target`` for the member, as its owner, else with
        ``admin=True``. Returns what it returns."""
        deps = self.deps
        try:
            return await deps.call(act, deps.db, self.org, self.actor, target, deps.clock(), **more)
        except NotAllowed:
            if not await self.standing.is_admin():
                raise
        return await deps.call(
            act, deps.db, self.org, self.actor, target, deps.clock(), admin=True, **more
        )


async def owner_or_admin(
    context: AsyncBoltContext, deps: Deps, standing: Standing, org: str, actor: str, next: Next
) -> None:
    """For buttons acting on one token (Revoke, Keep, Rotate) or on a service user's
    owners: the listener receives ``as_owner_or_admin``, an :class:`OwnerOrAdmin` for the
    member."""
    context["as_owner_or_admin"] = OwnerOrAdmin(deps, standing, org, actor)
    await next()
