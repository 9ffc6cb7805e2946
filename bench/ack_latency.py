"""Acknowledgement latency of Slack requests (SPEC §7: p99 ≤ 100 ms at 20 concurrent; a
``/token list`` ack p99 ≤ 1.5 times that of a bare Bolt app).

Runs ``tokenbot serve`` as its own process (temporary SQLite database unless
--database-url is given, which must name an empty database), and beside it, served the
same way (its own process, the same uvicorn set-up, the same signing secret), a bare Bolt
``AsyncApp`` whose ``/token`` command answers static blocks of the same size in the ack
and whose view submission just acks. The Slack stand-in runs in this process at zero
latency. Signed requests go in rounds of ``--concurrency`` at once, a round to tokenbot
and the same round to the bare app in turn (which goes first alternates), so that both
see the same machine: first ``/token list`` of members with no token, then Generate
modal submissions (each really issues a token, spread over 200 members so the cap never
interferes: at most 2,000 requests), then ``/token list`` again, of members who now have
five tokens or so. Prints p50, p99 and max of the time to the HTTP answer Slack waits
for, each server's CPU time per request, and tokenbot's figures over the bare app's. The
load comes from aiohttp with bodies signed beforehand, to keep the load generator's own
cost out of the figures.

    .venv/bin/python bench/ack_latency.py [--requests 1000] [--concurrency 20]
                                          [--database-url URL] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bot.blocks.tokens import GENERATE_CALLBACK, generate_modal, token_list_message
from bot.standin import SlackClient, SlackStandin
from bot.standin.server import free_port
from storage.tokens import TokenInfo

SIGNING_SECRET = "bench-signing-secret"
WARM_UP_ROUNDS = 3  # first rounds start worker threads and fill caches; not counted
LISTED = 5  # tokens of each member listed in the last phase, about


def static_answers() -> dict[str, dict[str, Any]]:
    """What the bare app answers ``/token <text>`` with: tokenbot's own messages for a
    member with no token and for one with ``LISTED`` tokens, built once."""
    now = datetime.now(UTC)
    listed = [
        TokenInfo(
            id=1000 + n,
            kind="user",
            name=f"bench-{1000 + n}",
            hint="tbu_…a1b2",
            created_at=now,
            last_used_at=None,
            cutoff_at=now + timedelta(days=30),
            state="active",
            delivered_at=now,
        )
        for n in range(LISTED)
    ]
    return {"list": token_list_message([], 10), "list full": token_list_message(listed, 10)}


def serve_bare(port: int, api_url: str) -> None:
    """The bare Bolt app: no storage, no middleware of tokenbot's, Bolt's own signature
    check, served by uvicorn with tokenbot's listener settings."""
    import uvicorn
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncAck, AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from bot.config import Settings
    from bot.server import listener_config

    answers = static_answers()
    bolt = AsyncApp(
        signing_secret=SIGNING_SECRET,
        client=AsyncWebClient(token="xoxb-bench", base_url=api_url),
    )

    @bolt.command("/token")
    async def token(ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack(response_type="ephemeral", **answers[command["text"]])

    @bolt.view(GENERATE_CALLBACK)
    async def submitted(ack: AsyncAck) -> None:
        await ack()

    handler = AsyncSlackRequestHandler(bolt)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    web = Starlette(
        routes=[Route("/slack/events", events, methods=["POST"]), Route("/healthz", healthz)]
    )
    uvicorn.Server(listener_config(web, "127.0.0.1", port, Settings())).run()


async def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args} exited with {proc.returncode}")
            try:
                if (await http.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{proc.args} did not become healthy")


async def follow_ups(standin: SlackStandin, mark: int, count: int) -> None:
    """Wait until ``count`` response_url posts have arrived after call index ``mark``."""
    after = mark
    for _ in range(count):
        call = await standin.wait_for("response_url", after=after, timeout=30)
        after = standin.calls.index(call, after) + 1


def cpu_seconds(pid: int) -> float:
    """User and system CPU time so far of a process and of its running children, such as
    the workers of ``serve --workers N`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


@dataclass
class Target:
    """One server under measurement, and what a round sends it."""

    name: str
    pid: int
    url: str
    build: Callable[[int], tuple[str, dict[str, str]]]
    follow_up: bool  # a round ends once its response_url posts have arrived too
    latencies: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)
    unexpected: int = 0
    cpu: float = 0.0

    def line(self, label: str, total: int, concurrency: int) -> str:
        q = statistics.quantiles(self.latencies, n=100)
        return (
            f"{label:<20} {self.name:<9} ack p50={q[49]:5.1f} ms  p99={q[98]:5.1f} ms  "
            f"max={max(self.latencies):5.1f} ms | round of {concurrency}: "
            f"p50={statistics.median(self.rounds):5.1f} ms | server CPU "
            f"{self.cpu * 1000 / total:4.1f} ms/req"
            + (f" | UNEXPECTED answers: {self.unexpected}" if self.unexpected else "")
        )


async def measure(
    label: str,
    standin: SlackStandin,
    http: aiohttp.ClientSession,
    targets: list[Target],
    total: int,
    concurrency: int,
) -> None:
    """Rounds of ``concurrency`` simultaneous requests, built and signed beforehand so
    the clock runs only while a request is on the wire, to each target in turn. With
    ``follow_up``, a round ends when the app has also finished the work that follows its
    acknowledgements (its response_url posts), so each round starts from a server that
    is not still busy."""

    async def timed(target: Target, body: str, headers: dict[str, str]) -> None:
        start = time.perf_counter()
        async with http.post(target.url, data=body.encode(), headers=headers) as response:
            content = await response.read()
        target.latencies.append((time.perf_counter() - start) * 1000)
        if response.status != 200 or b"errors" in content:
            target.unexpected += 1

    async def round_of(target: Target, numbers: range, counted: bool) -> None:
        batch = [target.build(n) for n in numbers]
        mark = len(standin.calls)
        start = time.perf_counter()
        if counted:
            await asyncio.gather(*(timed(target, body, headers) for body, headers in batch))
        else:
            await asyncio.gather(
                *(http.post(target.url, data=b.encode(), headers=h) for b, h in batch)
            )
        if target.follow_up:
            await follow_ups(standin, mark, len(batch))
        if counted:
            target.rounds.append((time.perf_counter() - start) * 1000)

    for first in range(0, WARM_UP_ROUNDS * concurrency, concurrency):  # not counted
        for target in targets:
            await round_of(target, range(total + first, total + first + concurrency), False)
    for target in targets:
        target.cpu = -cpu_seconds(target.pid)
    for first in range(0, total, concurrency):
        numbers = range(first, min(first + concurrency, total))
        turn = targets if (first // concurrency) % 2 == 0 else targets[::-1]
        for target in turn:
            await round_of(target, numbers, True)
        if os.environ.get("BENCH_ROUNDS"):
            print(
                f"  round {first // concurrency}: "
                + ", ".join(f"{t.name} {t.rounds[-1]:.1f} ms" for t in targets)
            )
    for target in targets:
        target.cpu += cpu_seconds(target.pid)
    app, bare = targets
    for target in targets:
        print(target.line(label, total, concurrency))
    qa = statistics.quantiles(app.latencies, n=100)
    qb = statistics.quantiles(bare.latencies, n=100)
    print(
        f"{label:<20} {'ratio':<9} ack p50 x{qa[49] / qb[49]:4.2f}  p99 x{qa[98] / qb[98]:4.2f}"
        f"  (tokenbot over the bare app)"
    )


def start(command: list[str], env: dict[str, str], log: str | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *command], env=env, stderr=open(log or os.devnull, "w")
    )


async def main(args: argparse.Namespace) -> None:
    standin = SlackStandin()
    async with standin.running():
        with tempfile.TemporaryDirectory() as tmp:
            port, bare_port = free_port(), free_port()
            env = {
                **os.environ,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_BOT_TOKEN": "xoxb-bench",
                "SLACK_API_URL": standin.base_url + "/api/",
                "TOKENBOT_DATABASE_URL": args.database_url or f"sqlite:///{Path(tmp) / 'b.db'}",
            }
            server_log = os.environ.get("BENCH_SERVER_LOG")
            # BENCH_SERVER_PREFIX: e.g. a profiler's command line, for tokenbot only.
            prefix = os.environ.get("BENCH_SERVER_PREFIX", "").split()
            serve = [*prefix, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)]
            serve += ["--workers", str(args.workers)] if args.workers > 1 else []
            proc = start(serve, env, server_log)
            bare = start(
                [__file__, "--serve-bare", str(bare_port)], env, os.environ.get("BENCH_BARE_LOG")
            )
            try:
                url, bare_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
                await wait_healthy(url, proc)
                await wait_healthy(bare_url, bare)
                slack = SlackClient(url, SIGNING_SECRET, standin)
                await slack.command("/token", "list", "U0WARM")  # auth.test happens once
                await slack.aclose()
                bare_slack = SlackClient(bare_url, SIGNING_SECRET, standin)
                await bare_slack.command("/token", "list", "U0WARM")
                await bare_slack.aclose()
                view = standin._views_open({"view": generate_modal("", "{}")})["view"]
                form = "application/x-www-form-urlencoded"

                def signed(body: str) -> tuple[str, dict[str, str]]:
                    return body, {"Content-Type": form, **slack.sign(body)}

                def token_list(text: str) -> Callable[[int], tuple[str, dict[str, str]]]:
                    def build(n: int) -> tuple[str, dict[str, str]]:
                        return signed(slack.command_body("/token", text, f"U{n % 50:05d}"))

                    return build

                def generate(n: int) -> tuple[str, dict[str, str]]:
                    user = f"U{n % 200:05d}"  # up to 200 x 10: the cap never interferes
                    where = {
                        "response_url": standin.new_response_url(user, "C1"),
                        "channel_id": "C1",
                    }
                    standin.views[view["id"]]["private_metadata"] = json.dumps(where)
                    values = {"token_name": {"name": f"bench-{n}"}}
                    return signed(slack.view_submission_body(view["id"], user, values))

                workers = f", {args.workers} workers" if args.workers > 1 else ""
                print(
                    f"tokenbot ack latency beside a bare Bolt app, {args.concurrency} "
                    f"concurrent signed requests, {os.cpu_count()} cores, "
                    f"{env['TOKENBOT_DATABASE_URL'].split(':')[0]}{workers}"
                )
                phases = (
                    ("/token list", token_list("list"), token_list("list"), False),
                    ("generate submission", generate, generate, True),
                    (f"/token list ({LISTED})", token_list("list"), token_list("list full"), False),
                )
                async with aiohttp.ClientSession() as http:
                    for label, build, build_bare, follow_up in phases:
                        targets = [
                            Target("tokenbot", proc.pid, slack.events_url, build, follow_up),
                            Target("bare Bolt", bare.pid, bare_slack.events_url, build_bare, False),
                        ]
                        await measure(
                            label, standin, http, targets, args.requests, args.concurrency
                        )
            finally:
                for server in (proc, bare):
                    server.terminate()
                    server.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database-url")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N (PostgreSQL)")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.requests > 2000:
        parser.error("--requests: at most 2000 (200 members x a cap of 10)")
    if args.serve_bare:
        serve_bare(args.serve_bare, os.environ["SLACK_API_URL"])
    else:
        asyncio.run(main(args))
