"""``tokenbot serve --workers N``: N replicas in one command, on PostgreSQL only."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bot.standin.client import SlackClient, http_client
from bot.standin.harness import SIGNING_SECRET
from bot.standin.server import Call, free_port
from storage import tokenformat
from tests.conftest import TEST_DATABASE_URL, Tokenbot
from tests.e2e.conftest import ALICE
from tests.e2e.flows import eventually, eventually_async
from tests.e2e.test_deploys import introspect, standin_running, tokenbot_serve

SECRETS = {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_BOT_TOKEN": "xoxb-1"}


def test_workers_are_refused_on_sqlite_with_one_line_saying_why(
    tokenbot: Tokenbot, tmp_path: Path
) -> None:
    database = tmp_path / "tokenbot.db"
    env = {**SECRETS, "TOKENBOT_DATABASE_URL": f"sqlite:///{database}"}
    result = tokenbot("serve", "--workers", "2", env=env)
    assert result.code == 2
    assert result.stderr.startswith(
        "tokenbot: --workers needs PostgreSQL: SQLite allows one writer process"
    )
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not database.exists()  # refused before anything was done


@pytest.mark.parametrize("count", ["0", "-1", "two", "65"])
def test_a_number_of_workers_that_is_not_one_is_refused(tokenbot: Tokenbot, count: str) -> None:
    result = tokenbot("serve", "--workers", count, env=SECRETS)
    assert result.code == 2
    assert "not a number of processes from 1 to 64" in result.stderr


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text()


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="--workers needs PostgreSQL")
async def test_two_workers_serve_both_listeners_as_one_come_back_when_killed_and_stop_together(
    database_url: str, tmp_path: Path
) -> None:
    async with standin_running() as standin:
        log = tmp_path / "serve.log"
        api = f"http://127.0.0.1:{free_port()}"
        listen = api.removeprefix("http://")
        with tokenbot_serve(
            database_url, standin, log, "--workers", "2", "--api-listen", listen
        ) as server:
            await server.ready()
            workers = await eventually(lambda: children(server.process.pid), lambda c: len(c) == 2)
            assert all("--sockets" in command_line(worker) for worker in workers)
            slack = SlackClient(server.url, SIGNING_SECRET, standin)
            try:
                mark = len(standin.calls)
                assert (await slack.command("/token", "new", ALICE)).status_code == 200
                opened = await standin.wait_for("views.open", after=mark, timeout=10)
                mark = len(standin.calls)
                await slack.submit_view(
                    opened.result["view"]["id"], ALICE, {"token_name": {"name": "ci"}}
                )
                shown = await standin.wait_for(
                    "response_url", lambda c: "tbu_" in c.text_content(), after=mark
                )
                [secret] = tokenformat.TOKEN_PATTERN.findall(shown.text_content())
                await eventually_async(lambda: introspect(api, secret), lambda a: a["active"])
                # On the internal listener only, which the workers share too; each check
                # is a new connection, taken by either worker.
                async with http_client(base_url=server.url) as http:
                    assert (await http.post("/api/v1/introspect")).status_code == 404
                answers = [(await introspect(api, secret))["active"] for _ in range(10)]
                assert answers == [True] * 10
                mark = len(standin.calls)
                listing = await slack.command("/token", "list", ALICE)
                await slack.click(Call("ack", listing.json()), "revoke_token", ALICE)
                await standin.wait_for("response_url", after=mark)
                answers = [(await introspect(api, secret))["active"] for _ in range(10)]
                assert answers == [False] * 10  # by both workers
            finally:
                await slack.aclose()
            # A worker that dies is started again.
            os.kill(workers[0], signal.SIGKILL)
            now = await eventually(
                lambda: children(server.process.pid),
                lambda c: len(c) == 2 and workers[0] not in c,
                timeout=15,
            )
            [new] = set(now) - set(workers)
            started = f"Started server process [{new}]"
            await eventually(log.read_text, lambda text: started in text, timeout=30)
            # SIGTERM stops them all, gracefully.
            server.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(server.process.wait, timeout=30) == 0, log.read_text()
            assert not any(alive(worker) for worker in now)
