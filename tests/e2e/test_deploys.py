"""A deploy or a crash while a new token is being delivered leaves no token valid that
nobody saw (R14): ``tokenbot serve`` as a real process, stopped mid-delivery."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa

from bot.deps import utcnow
from bot.standin.client import SlackClient, http_client
from bot.standin.harness import BOT_TOKEN, RESOURCE_SERVER, SIGNING_SECRET, running_tokenbot
from bot.standin.server import Call, SlackStandin, free_port
from storage import audit, sweep, tokenformat, usage
from storage.db import Database
from storage.models import DELIVERY_DEADLINE, Token
from tests.e2e.conftest import ALICE

ORG = "T0TOKENBOT"
GATEWAY = httpx.BasicAuth(*RESOURCE_SERVER)


@contextmanager
def tokenbot_serve(
    database_url: str,
    standin: SlackStandin,
    log: Path,
    *args: str,
    sweep_interval: int = 3600,
) -> Iterator[Server]:
    """``tokenbot serve ARGS`` as a process of its own, on a free loopback port."""
    port = free_port()
    env = {
        **os.environ,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": standin.base_url + "/api/",
        "TOKENBOT_DATABASE_URL": database_url,
        "TOKENBOT_RESOURCE_SERVERS": ":".join(RESOURCE_SERVER),
        "TOKENBOT_SWEEP_INTERVAL": str(sweep_interval),
    }
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)),
                *args,
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


class Server:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    async def healthy(self) -> bool:
        try:
            async with http_client(base_url=self.url, timeout=2) as http:
                return (await http.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    async def ready(self) -> None:
        for _ in range(600):
            if self.process.poll() is not None:
                raise AssertionError(f"tokenbot stopped:\n{self.log.read_text()}")
            if await self.healthy():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"tokenbot did not start:\n{self.log.read_text()}")


async def introspect(url: str, secret: str) -> dict:
    async with http_client(base_url=url, auth=GATEWAY) as http:
        response = await http.post("/api/v1/introspect", data={"token": secret})
    assert response.status_code == 200
    return dict(response.json())


@asynccontextmanager
async def standin_running() -> AsyncIterator[SlackStandin]:
    standin = SlackStandin()
    standin.add_user(ALICE, "alice")
    async with standin.running():
        yield standin


async def submit_generate(standin: SlackStandin, server: Server, names: list[str]) -> int:
    """Open the Generate modal once per name and submit them all at once; return the
    index of the stand-in's calls from which the deliveries are to be found."""
    slack = SlackClient(server.url, SIGNING_SECRET, standin)
    try:
        views = []
        for _ in names:
            mark = len(standin.calls)
            assert (await slack.command("/token", "new", ALICE)).status_code == 200
            opened = await standin.wait_for("views.open", after=mark, timeout=10)
            views.append(opened.result["view"]["id"])
        mark = len(standin.calls)
        answers = await asyncio.gather(
            *(
                slack.submit_view(view, ALICE, {"token_name": {"name": name}})
                for view, name in zip(views, names, strict=True)
            )
        )
        assert all(a.status_code == 200 and a.content == b"" for a in answers)
        return mark
    finally:
        await slack.aclose()


async def deliveries(standin: SlackStandin, mark: int, count: int) -> list[Call]:
    """Wait for ``count`` token deliveries to have reached Slack (held there)."""
    calls = await standin.wait_for_count("response_url", count, after=mark, timeout=15)
    assert len(calls) == count
    return calls


def secret_in(call: Call) -> str:
    [secret] = tokenformat.TOKEN_PATTERN.findall(call.text_content())
    return str(secret)


def valid_tokens(database_url: str) -> int:
    """Tokens that would pass a check now: active, delivered and not past their cutoff."""
    db = Database(database_url)
    try:
        with db.read() as session:
            query = sa.select(sa.func.count()).where(
                Token.state == "active",
                Token.delivered_at.is_not(None),  # type: ignore[union-attr]
                Token.cutoff_at > utcnow(),
            )
            return int(session.execute(query).scalar_one())
    finally:
        db.dispose()


async def test_a_server_killed_before_delivering_leaves_no_token_valid(
    database_url: str, tmp_path: Path
) -> None:
    names = [f"t{n}" for n in range(5)]
    async with standin_running() as standin:
        held = standin.hold("response_url")  # Slack takes the messages but never answers
        with tokenbot_serve(database_url, standin, tmp_path / "first.log") as server:
            await server.ready()
            mark = await submit_generate(standin, server, names)
            calls = await deliveries(standin, mark, len(names))
            server.process.kill()  # a crash, or a deploy that could not wait
            await asyncio.to_thread(server.process.wait, timeout=30)
        held.set()
    secrets = [secret_in(c) for c in calls]
    # The server started after the crash (the process of it is not the point here).
    async with running_tokenbot(database_url, migrate=False) as restarted:
        restarted.standin.add_user(ALICE, "alice")
        for secret in secrets:
            assert await introspect(restarted.url, secret) == {"active": False}
    assert valid_tokens(database_url) == 0
    # They hold their places under the cap until the sweep revokes them, when their
    # delivery deadline has passed.
    db = Database(database_url)
    try:
        now = utcnow()
        assert sweep.sweep(db, now).undelivered == []
        report = sweep.sweep(db, now + DELIVERY_DEADLINE)
        assert sorted(t.name for _, t in report.undelivered) == names
        revoked = [e for e in audit.events(db, ORG) if e.action == "token.revoked"]
        assert {e.detail["reason"] for e in revoked} == {"not delivered"}
        assert len(revoked) == len(names)
        assert all(usage.validate(db, s, now) is None for s in secrets)
    finally:
        db.dispose()


async def test_a_server_told_to_stop_finishes_the_delivery_in_flight(
    database_url: str, tmp_path: Path
) -> None:
    async with standin_running() as standin:
        held = standin.hold("response_url")
        # When Slack does answer, the response_url has expired: the token must then go
        # to the channel, which only a server still running can do.
        standin.fail_next("response_url", status=404, error="expired_url")
        with tokenbot_serve(database_url, standin, tmp_path / "serve.log") as server:
            await server.ready()
            mark = await submit_generate(standin, server, ["ci"])
            [call] = await deliveries(standin, mark, 1)
            server.process.send_signal(signal.SIGTERM)  # a deploy
            for _ in range(200):
                if not await server.healthy():
                    break  # no longer taking requests: shutting down
                await asyncio.sleep(0.05)
            assert not await server.healthy()
            # Without waiting for its deliveries, a server is gone well within this.
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(server.process.wait, timeout=1)
            assert server.process.poll() is None, "stopped with a delivery in flight"
            held.set()
            shown = await standin.wait_for("chat.postEphemeral", after=mark, timeout=15)
            assert secret_in(shown) == secret_in(call)
            # Stopped gracefully once the delivery was recorded.
            stopped = await asyncio.to_thread(server.process.wait, timeout=30)
            assert stopped == 0, server.log.read_text()
    db = Database(database_url)
    try:
        assert usage.validate(db, secret_in(call), utcnow()) is not None
        delivered = [e for e in audit.events(db, ORG) if e.action == "token.delivered"]
        assert [e.detail["via"] for e in delivered] == ["channel"]
    finally:
        db.dispose()
