from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.standin.harness import Running, running_tokenbot
from tests.unit.test_manifest import SCOPES_FOR_METHODS

ALICE = "U0ALICE"
BOB = "U0BOB"


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[Running]:
    """tokenbot's real ASGI app under uvicorn, talking to the Slack stand-in."""
    async with running_tokenbot(database_url, migrate=False) as running:
        running.standin.add_user(ALICE, "alice")
        running.standin.add_user(BOB, "bob")
        yield running
        # Nothing the app sent broke Slack's limits (the stand-in refuses what Slack does).
        assert not running.standin.refused, running.standin.refused[0][1]
        # manifest.yml must grant a scope for every method the app called.
        called = {c.method for c in running.standin.calls} - {"response_url", "auth.test"}
        assert called <= set(SCOPES_FOR_METHODS), f"add to manifest and test: {called}"
