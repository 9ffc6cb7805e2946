"""The e2e waits: one whose outcome never comes fails the test."""

import pytest

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
