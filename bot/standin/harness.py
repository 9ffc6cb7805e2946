"""tokenbot's real server and the Slack stand-in, running together on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from slack_sdk.web.async_client import AsyncWebClient

from bot.app import build_app
from bot.config import Settings
from bot.deps import Deps, utcnow
from bot.standin.client import SlackClient
from bot.standin.server import SlackStandin, free_port, serve_in_background
from bot.web import build_web
from storage.db import Database
from storage.migrate import upgrade

SIGNING_SECRET = "standin-signing-secret-0123456789"
BOT_TOKEN = "xoxb-standin-0000-bot-token"
RESOURCE_SERVER = ("gateway", "gateway-secret-0123456789")
# Multi-workspace mode: the app's OAuth credentials.
CLIENT_ID, CLIENT_SECRET = "1234567890.0987654321", "standin-client-secret-0123456789"


class Clock:
    """A clock that stands still until told to move: time travel for tests and the demo."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@dataclass
class Running:
    url: str
    standin: SlackStandin
    slack: SlackClient
    deps: Deps

    slack_app_client: AsyncWebClient

    @property
    def db(self) -> Database:
        return self.deps.db


@asynccontextmanager
async def running_tokenbot(
    database_url: str,
    *,
    clock: Callable[[], datetime] = utcnow,
    migrate: bool = True,
    enterprise_id: str | None = None,
    multi_workspace: bool = False,
) -> AsyncIterator[Running]:
    """Start the stand-in, then tokenbot's ASGI app under uvicorn, both on free ports.
    With ``multi_workspace``, the app is installed through OAuth (no bot token of its
    own): each workspace installs it through /slack/install."""
    standin = SlackStandin()
    async with standin.running():
        credentials: dict[str, str] = {"slack_bot_token": BOT_TOKEN}
        if multi_workspace:
            credentials = {"slack_client_id": CLIENT_ID, "slack_client_secret": CLIENT_SECRET}
        settings = Settings(
            slack_signing_secret=SIGNING_SECRET,
            **credentials,  # type: ignore[arg-type]
            slack_api_url=standin.base_url + "/api/",
            database_url=database_url,
            resource_servers={RESOURCE_SERVER[0]: RESOURCE_SERVER[1]},
        )
        db = Database(settings.database_url)
        if migrate:
            upgrade(db)
        deps = Deps(settings=settings, db=db, clock=clock)
        # The scheduler stays off: whoever drives the harness decides when time passes
        # and when the sweep runs (bot.jobs.sweep_and_deliver).
        bolt = build_app(deps)
        web = build_web(deps, bolt, scheduler=False)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        async with serve_in_background(web, port):
            slack = SlackClient(url, SIGNING_SECRET, standin, enterprise_id=enterprise_id)
            try:
                yield Running(
                    url=url, standin=standin, slack=slack, deps=deps, slack_app_client=bolt.client
                )
            finally:
                await slack.aclose()
