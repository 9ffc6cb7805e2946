"""What listeners need besides the Slack payload, handed to them in Bolt's ``context``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from cachetools import TLRUCache, TTLCache

from bot.config import Settings
from bot.metrics import Metrics
from bot.webhooks import WebhookClient
from storage.db import Database, run

if TYPE_CHECKING:
    from bot.installs import Installations

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
DRAIN_TIMEOUT = 20  # seconds a shutdown waits for token deliveries in flight
FOLLOW_UP_TIMEOUT = 5  # seconds a shutdown waits for background work that must finish


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


class Background:
    """Work started to outlive the answer that started it: a member's profile refresh,
    the Slack side of a deactivation. Held here so that a shutdown reaches it before the
    Slack session closes and the database is disposed under it (:meth:`stop`)."""

    def __init__(self) -> None:
        # Each task, with whether a shutdown lets it finish (else it is cancelled).
        self.tasks: dict[asyncio.Task[Any], bool] = {}

    def start(self, work: Coroutine[Any, Any, T], *, finish: bool) -> asyncio.Task[T]:
        """Run ``work`` in the background. ``finish``: a shutdown waits for it a moment
        (it cannot be done again later); otherwise a shutdown cancels it."""
        task = asyncio.create_task(work)
        self.tasks[task] = finish
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.pop(task, None)

    async def stop(self, timeout: float) -> int:
        """Cancel what may be cancelled, wait up to ``timeout`` seconds for the rest, then
        cancel that too. Returns how many were cut short that should have finished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.tasks and (left := deadline - loop.time()) > 0:
            for task, finish in list(self.tasks.items()):
                if not finish:
                    task.cancel()
            # Until these are done; what they start meanwhile is seen on the next round.
            await asyncio.wait(list(self.tasks), timeout=left)
        cut = sum(self.tasks.values())
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1)
        return cut


async def wind_down(deps: Deps) -> None:
    """What a shutdown does before the Slack session closes and the database is disposed,
    in HTTP and in Socket Mode alike: the token deliveries in flight finish (a token is
    valid only once shown, R14), refreshes are cancelled (a later use fetches again), and
    the Slack side of deactivations gets a moment to finish."""
    if not await deps.deliveries.drain(DRAIN_TIMEOUT):
        log.warning("stopped with %d token deliveries unfinished", deps.deliveries.count)
    if cut := await deps.background.stop(FOLLOW_UP_TIMEOUT):
        log.warning("stopped with %d follow-ups of deactivations unfinished", cut)
    # A webhook cut short here is sent again later: the outbox still holds it.
    await deps.webhooks.aclose()


@dataclass(frozen=True)
class _Kept:
    answer: Any
    until: float  # POSIX time on the injected clock


class Directory:
    """Answers from Slack that change rarely, kept a while: who the approvers and admins
    are, the organization the bot token serves, the user groups. One TLRU cache on the
    injected clock: each answer is kept for the max age given when it was fetched (a
    key is always asked with the same one), and the least recently used go first when
    it is full. One fetch of a key runs at a time (:meth:`remember`)."""

    def __init__(
        self, clock: Callable[[], datetime], background: Background, size: int = 1024
    ) -> None:
        self.clock = clock
        self.background = background
        self.kept: TLRUCache[str, _Kept] = TLRUCache(
            maxsize=size, ttu=lambda _key, kept, _now: kept.until, timer=self._now
        )
        # The fetches running now, by key.
        self.fetching: dict[str, asyncio.Task[Any]] = {}

    def _now(self) -> float:
        return self.clock().timestamp()

    def keep(self, key: str, answer: Any, max_age: timedelta) -> None:
        """Keep ``answer`` for ``key``, fetched now, for ``max_age``."""
        self._keep(key, answer, self.clock() + max_age)

    def _keep(self, key: str, answer: Any, until: datetime) -> None:
        self.kept[key] = _Kept(answer, until.timestamp())

    async def remember(self, key: str, max_age: timedelta, fetch: Callable[[], Awaitable[T]]) -> T:
        """``fetch()``'s answer, reused while it is younger than ``max_age``. One fetch of
        a key runs at a time: whoever asks meanwhile awaits it too (when many members'
        profiles go stale together, Slack is asked once), and its error, which is not
        kept, is raised to each of them."""
        kept = self.kept.get(key)
        if kept is not None:
            answer: T = kept.answer
            return answer
        running = self.fetching.get(key)
        if running is None:
            until = self.clock() + max_age  # the answer's age counts from the asking
            running = self.background.start(self._fetch(key, until, fetch), finish=False)
            self.fetching[key] = running
            running.add_done_callback(partial(self._fetched, key))
        # Shielded: a caller that gives up does not cancel the others' fetch.
        shared: T = await asyncio.shield(running)
        return shared

    async def _fetch(self, key: str, until: datetime, fetch: Callable[[], Awaitable[T]]) -> T:
        answer = await fetch()
        self._keep(key, answer, until)
        return answer

    def _fetched(self, key: str, task: asyncio.Task[Any]) -> None:
        if self.fetching.get(key) is task:
            del self.fetching[key]
        if not task.cancelled():
            # Read here too: a failure whose callers all gave up is not "never retrieved".
            task.exception()


HOMES_KEPT = 100_000
HOME_OPEN_FOR = timedelta(days=1)


@dataclass
class Deps:
    settings: Settings
    db: Database
    clock: Callable[[], datetime] = field(default=utcnow)
    deliveries: InFlight = field(default_factory=InFlight)
    background: Background = field(default_factory=Background)
    webhooks: WebhookClient = field(default_factory=WebhookClient)  # to webhook endpoints
    # Multi-workspace mode: the installations' bot tokens (None: SLACK_BOT_TOKEN's one).
    installs: Installations | None = None
    metrics: Metrics = field(default_factory=Metrics)
    directory: Directory = field(init=False)
    # The members who opened the app's Home tab lately, by (organization, member): the
    # tabs worth publishing again after a change (bot.screens.refresh_homes).
    homes_open: TTLCache[tuple[str, str], bool] = field(init=False)

    def __post_init__(self) -> None:
        # Read through ``self``: tests and ``tokenbot sweep --now`` replace the clock.
        self.directory = Directory(lambda: self.clock(), self.background)
        self.homes_open = TTLCache(
            maxsize=HOMES_KEPT, ttl=HOME_OPEN_FOR.total_seconds(), timer=lambda: self._now()
        )

    async def remember(self, key: str, max_age: timedelta, fetch: Callable[[], Awaitable[T]]) -> T:
        """The directory's answer for ``key`` (:meth:`Directory.remember`)."""
        return await self.directory.remember(key, max_age, fetch)

    def _now(self) -> float:
        return self.clock().timestamp()

    def keep(self, key: str, answer: Any, max_age: timedelta) -> None:
        """Keep an answer fetched now from Slack for ``key`` (:meth:`Directory.keep`)."""
        self.directory.keep(key, answer, max_age)

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a storage function where the database says (``storage.db.run``): a quick
        one on the loop or natively async, any other in a worker thread. The loop never
        blocks."""
        return await run(fn, *args, **kwargs)


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
