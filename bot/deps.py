"""What listeners need besides the Slack payload, handed to them in Bolt's ``context``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread

from bot.config import Settings
from storage.db import Database

P = ParamSpec("P")
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class InFlight:
    """Work a shutdown must let finish: the delivery of a new token, which is valid only
    once shown (R14). Bolt answers Slack before its listener has finished, so the
    server's graceful shutdown does not wait for that work; the app's lifespan does,
    through :meth:`drain`."""

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            self._idle.set()
        return self._idle

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        self.count += 1
        self._event().clear()
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                self._event().set()

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is held, for at most ``timeout`` seconds; False if cut short."""
        try:
            await asyncio.wait_for(self._event().wait(), timeout)
        except TimeoutError:
            return False
        return True


@dataclass
class Deps:
    settings: Settings
    db: Database
    clock: Callable[[], datetime] = field(default=utcnow)
    # Answers from Slack that change rarely, kept a while by ``remember``.
    memo: dict[str, tuple[datetime, Any]] = field(default_factory=dict)
    deliveries: InFlight = field(default_factory=InFlight)

    async def remember(self, key: str, max_age: timedelta, fetch: Callable[[], Awaitable[T]]) -> T:
        """``fetch()``'s answer, reused while it is younger than ``max_age``."""
        kept = self.memo.get(key)
        now = self.clock()
        if kept is None or now - kept[0] > max_age:
            kept = (now, await fetch())
            self.memo[key] = kept
        answer: T = kept[1]
        return answer

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a synchronous storage function in a worker thread: the loop never blocks."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))


def org_of(context: Any) -> str:
    """The organization a request belongs to: the enterprise for org-wide installs (R10)."""
    if context.get("is_enterprise_install") and context.get("enterprise_id"):
        return str(context["enterprise_id"])
    return str(context["team_id"])


async def workspace_of(client: Any) -> str:
    """The organization the app's bot token serves (``auth.test``): the enterprise for
    org-wide installs."""
    who = await client.auth_test()
    if who.get("is_enterprise_install") and who.get("enterprise_id"):
        return str(who["enterprise_id"])
    return str(who["team_id"])
