"""Socket Mode's shutdown: like HTTP mode's, it lets token deliveries in flight finish."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot import cli
from bot.config import Settings
from bot.deps import Deps
from bot.standin.harness import BOT_TOKEN, SIGNING_SECRET
from bot.standin.server import SlackStandin
from storage.db import Database, invalidates
from tests.conftest import TEST_DATABASE_URL

APP_TOKEN = "xapp-standin-0000-app-token"


class Recorder:
    """Stands in for Slack's Socket Mode connection and notes the order of the shutdown."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()

    def handler(self, app: Any, app_token: str) -> Any:
        recorder = self

        class Handler:
            async def start_async(self) -> None:
                recorder.connected.set()
                await asyncio.Event().wait()  # as Bolt's: runs until cancelled

            async def close_async(self) -> None:
                recorder.events.append("connection closed")
                recorder.closed.set()

        return Handler()


@pytest.fixture
async def deps(database_url: str) -> AsyncIterator[Deps]:
    async with SlackStandin().running() as standin:  # for the scheduler's jobs, if they run
        settings = Settings(
            slack_signing_secret=SIGNING_SECRET,
            slack_bot_token=BOT_TOKEN,
            slack_api_url=standin.base_url + "/api/",
            database_url=database_url,
        )
        db = Database(settings.database_url)
        yield Deps(settings=settings, db=db)
        db.dispose()


async def stop_with_a_delivery_in_flight(
    deps: Deps, monkeypatch: pytest.MonkeyPatch, stop: Any
) -> list[str]:
    """Run Socket Mode, stop it with ``stop(task)`` while a token is being delivered, and
    say in what order the delivery, the connection and the database ended."""
    recorder = Recorder()
    monkeypatch.setattr(
        "slack_bolt.adapter.socket_mode.websockets.AsyncSocketModeHandler", recorder.handler
    )
    dispose = deps.db.dispose
    monkeypatch.setattr(
        deps.db, "dispose", lambda: (recorder.events.append("database disposed"), dispose())[1]
    )
    holding, release = asyncio.Event(), asyncio.Event()

    async def deliver() -> None:
        async with deps.deliveries.hold():
            holding.set()
            await release.wait()
            recorder.events.append("token delivered")

    delivery = asyncio.create_task(deliver())
    running = asyncio.create_task(cli.serve_socket_mode(deps, APP_TOKEN))
    await asyncio.wait_for(asyncio.gather(holding.wait(), recorder.connected.wait()), 5)
    stop(running)
    await asyncio.wait_for(recorder.closed.wait(), 5)
    release.set()
    await asyncio.wait_for(asyncio.wait([running, delivery]), 5)
    return recorder.events


ORDER = ["connection closed", "token delivered", "database disposed"]


async def test_stopping_socket_mode_waits_for_deliveries_in_flight(
    deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await stop_with_a_delivery_in_flight(deps, monkeypatch, lambda t: t.cancel()) == ORDER


async def test_sigterm_stops_socket_mode_the_same_way(
    deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unhandled(signum: int, frame: Any) -> None:
        raise AssertionError("SIGTERM was not handled by Socket Mode")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        events = await stop_with_a_delivery_in_flight(
            deps, monkeypatch, lambda t: signal.raise_signal(signal.SIGTERM)
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert events == ORDER


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="LISTEN/NOTIFY is PostgreSQL's")
async def test_socket_mode_hears_of_a_revocation_elsewhere_without_its_poll(
    deps: Deps, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(
        "slack_bolt.adapter.socket_mode.websockets.AsyncSocketModeHandler", recorder.handler
    )
    monkeypatch.setattr(deps.db, "refresh_generation", lambda: deps.db.generation)  # no poll
    running = asyncio.create_task(cli.serve_socket_mode(deps, APP_TOKEN))
    try:
        await asyncio.wait_for(recorder.connected.wait(), 10)  # listening before connecting
        before = deps.db.generation
        elsewhere = Database(database_url)
        try:
            with elsewhere.write() as session:
                invalidates(session)
        finally:
            elsewhere.dispose()
        for _ in range(100):
            if deps.db.generation > before:
                break
            await asyncio.sleep(0.01)
        assert deps.db.generation > before
    finally:
        running.cancel()
        await asyncio.wait_for(asyncio.wait([running]), 10)
