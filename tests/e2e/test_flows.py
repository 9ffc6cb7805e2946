"""The e2e waits: one whose outcome never comes fails the test, and one whose outcome
comes returns as soon as it does."""

import asyncio

import pytest

from bot.standin import SlackStandin
from bot.standin.client import http_client
from tests.e2e.flows import eventually, eventually_async


async def test_eventually_fails_when_the_outcome_never_comes() -> None:
    with pytest.raises(AssertionError, match=r"not done after 0\.1 s; last read: 1"):
        await eventually(lambda: 1, lambda value: value == 2, timeout=0.1)


async def test_eventually_returns_the_value_that_satisfied_it() -> None:
    reads = iter(range(100))
    assert await eventually(lambda: next(reads), lambda value: value >= 3) == 3


async def test_eventually_async_fails_when_the_outcome_never_comes() -> None:
    async def read() -> int:
        return 1

    with pytest.raises(AssertionError, match=r"not done after 0\.1 s"):
        await eventually_async(read, lambda value: value == 2, timeout=0.1)


async def test_a_wait_for_a_call_that_never_comes_fails_saying_what_came() -> None:
    standin = SlackStandin()
    async with standin.running(), http_client(base_url=standin.base_url) as http:
        await http.post("/api/auth.test")
        with pytest.raises(TimeoutError, match=r"no views.open call .*\['auth.test'\]"):
            await standin.wait_for("views.open", timeout=0.1)
        with pytest.raises(TimeoutError, match=r"fewer than 2 auth.test calls \(1 so far\)"):
            await standin.wait_for_count("auth.test", 2, timeout=0.1)
        with pytest.raises(TimeoutError):  # one arrived, but before the mark
            await standin.wait_for("auth.test", after=1, timeout=0.1)


async def test_waits_return_once_the_calls_arrive_and_once_they_are_answered() -> None:
    standin = SlackStandin()
    async with standin.running(), http_client(base_url=standin.base_url) as http:
        gate = standin.hold("auth.test")
        posts = [asyncio.create_task(http.post("/api/auth.test")) for _ in range(3)]
        arrived = await standin.wait_for_count("auth.test", 3)
        assert len(arrived) == 3 and not any(c.result for c in arrived)  # held: unanswered
        answered = asyncio.create_task(
            standin.wait_for_count("auth.test", 3, lambda call: bool(call.result))
        )
        await asyncio.sleep(0)
        assert not answered.done()
        gate.set()
        assert all(c.result["ok"] for c in await answered)
        assert all(r.status_code == 200 for r in await asyncio.gather(*posts))
