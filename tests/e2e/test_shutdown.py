"""What a shutdown does with the work that outlives the answer that started it."""

from __future__ import annotations

import asyncio
import logging
import warnings
from datetime import timedelta

import pytest

from bot.standin.harness import Clock, running_tokenbot
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate
from tests.e2e.test_introspection import answer


async def test_a_refresh_in_flight_at_shutdown_ends_quietly(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = asyncio.all_tasks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with running_tokenbot(database_url, migrate=False) as env:
            env.standin.add_user(ALICE, "alice")
            clock = env.deps.clock = Clock()
            secret = await generate(env, ALICE, "ci")
            clock.advance(timedelta(seconds=env.deps.settings.profile_max_age))
            env.standin.hold("users.info")
            mark = len(env.standin.calls)
            assert (await answer(env, secret))["active"] is True
            await env.standin.wait_for("users.info", after=mark)  # held in flight
            caplog.clear()
        left = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    assert not left, left  # nothing keeps running on a closed session and database
    complaints = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not complaints, [r.getMessage() for r in complaints]
    assert not [w for w in caught if "destroyed" in str(w.message)]
