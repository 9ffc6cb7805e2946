"""Deps' shared fetches, and background work at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import Settings
from bot.deps import Background, Deps
from storage.db import Database


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[Deps]:
    db = Database(f"sqlite:///{tmp_path / 'unused.db'}")
    yield Deps(settings=Settings(), db=db)
    db.dispose()


async def test_concurrent_askers_of_an_expired_answer_share_one_fetch(deps: Deps) -> None:
    release = asyncio.Event()
    fetches = 0

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        await release.wait()
        return "answer"

    askers = [deps.remember("k", timedelta(minutes=1), fetch) for _ in range(10)]
    gathered = asyncio.gather(*askers)
    await asyncio.sleep(0)  # every asker has started
    release.set()
    assert await asyncio.wait_for(gathered, 5) == ["answer"] * 10
    assert fetches == 1
    assert await deps.remember("k", timedelta(minutes=1), fetch) == "answer"
    assert fetches == 1  # kept


async def test_a_failed_fetch_is_raised_to_every_asker_and_not_kept(deps: Deps) -> None:
    release = asyncio.Event()
    fetches = 0

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        await release.wait()
        if fetches == 1:
            raise RuntimeError("slack says no")
        return "answer"

    askers = asyncio.gather(
        *(deps.remember("k", timedelta(minutes=1), fetch) for _ in range(3)),
        return_exceptions=True,
    )
    await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.wait_for(askers, 5)
    assert [type(o) for o in outcomes] == [RuntimeError] * 3 and fetches == 1
    assert await deps.remember("k", timedelta(minutes=1), fetch) == "answer"
    assert fetches == 2


async def test_an_asker_that_gives_up_does_not_cancel_the_others_fetch(deps: Deps) -> None:
    release = asyncio.Event()

    async def fetch() -> str:
        await release.wait()
        return "answer"

    quitter = asyncio.create_task(deps.remember("k", timedelta(minutes=1), fetch))
    stayer = asyncio.create_task(deps.remember("k", timedelta(minutes=1), fetch))
    await asyncio.sleep(0)
    quitter.cancel()
    release.set()
    assert await asyncio.wait_for(stayer, 5) == "answer"


async def test_a_shutdown_cancels_refreshes_and_lets_follow_ups_finish() -> None:
    background = Background()
    release = asyncio.Event()
    finished: list[str] = []

    async def refresh() -> None:
        await asyncio.Event().wait()  # a Slack that never answers

    async def follow_up() -> None:
        await release.wait()
        finished.append("follow-up")

    refreshing = background.start(refresh(), finish=False)
    following = background.start(follow_up(), finish=True)
    stopping = asyncio.create_task(background.stop(timeout=5))
    await asyncio.wait([refreshing], timeout=5)
    assert refreshing.cancelled() and not stopping.done()  # the follow-up is awaited
    release.set()
    assert await asyncio.wait_for(stopping, 5) == 0
    assert finished == ["follow-up"] and following.done() and not background.tasks


async def test_a_follow_up_that_outlasts_the_shutdown_is_cut_short_and_counted() -> None:
    background = Background()

    async def stuck() -> None:
        await asyncio.Event().wait()

    task = background.start(stuck(), finish=True)
    assert await asyncio.wait_for(background.stop(timeout=0.05), 5) == 1
    assert task.cancelled() and not background.tasks


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_an_answer_is_kept_for_its_max_age_on_the_injected_clock(deps: Deps) -> None:
    deps.clock = clock = Clock()  # replaced after Deps was made, as tests and `sweep --now` do
    fetches = 0

    async def fetch() -> int:
        nonlocal fetches
        fetches += 1
        return fetches

    assert await deps.remember("k", timedelta(hours=1), fetch) == 1
    clock.now += timedelta(minutes=59)
    assert await deps.remember("k", timedelta(hours=1), fetch) == 1
    clock.now += timedelta(minutes=2)
    assert await deps.remember("k", timedelta(hours=1), fetch) == 2


async def test_an_answer_kept_by_hand_is_reused_until_its_max_age(deps: Deps) -> None:
    deps.clock = clock = Clock()

    async def fetch() -> str:
        return "fetched"

    deps.keep("groups", "kept", timedelta(minutes=5))
    assert await deps.remember("groups", timedelta(minutes=5), fetch) == "kept"
    clock.now += timedelta(minutes=6)
    assert await deps.remember("groups", timedelta(minutes=5), fetch) == "fetched"
