"""Background work at shutdown: refreshes are cancelled, follow-ups get a moment."""

from __future__ import annotations

import asyncio

from bot.deps import Background


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
