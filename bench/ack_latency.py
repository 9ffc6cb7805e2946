"""Acknowledgement latency of Slack requests (SPEC §7: p99 ≤ 100 ms at 20 concurrent).

Runs ``tokenbot serve`` as its own process (temporary SQLite database unless
--database-url is given), the Slack stand-in in this process at zero latency, and sends
signed requests in rounds of ``--concurrency`` at once: first ``/token list``, then
Generate modal submissions (each really issues a token, spread over 200 members so the
cap never interferes: at most 2,000 requests). Prints p50, p99 and max of the time to
the HTTP answer Slack waits for, and the server's CPU time per request. The load comes
from aiohttp with bodies signed beforehand, to keep the load generator's own cost out of
the figures.

    .venv/bin/python bench/ack_latency.py [--requests 1000] [--concurrency 20]
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
from pathlib import Path

import aiohttp
import httpx

from bot.blocks.tokens import generate_modal
from bot.standin import SlackClient, SlackStandin
from bot.standin.server import free_port

SIGNING_SECRET = "bench-signing-secret"
WARM_UP_ROUNDS = 3  # first rounds start worker threads and fill caches; not counted


async def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"tokenbot serve exited with {proc.returncode}")
            try:
                if (await http.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("tokenbot serve did not become healthy")


async def follow_ups(standin: SlackStandin, mark: int, count: int) -> None:
    """Wait until ``count`` response_url posts have arrived after call index ``mark``."""
    after = mark
    for _ in range(count):
        call = await standin.wait_for("response_url", after=after, timeout=30)
        after = standin.calls.index(call, after) + 1


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    label: str,
    server_pid: int,
    standin: SlackStandin,
    http: aiohttp.ClientSession,
    url: str,
    build: Callable[[int], tuple[str, dict[str, str]]],
    total: int,
    concurrency: int,
    follow_up: bool,
) -> None:
    """Rounds of ``concurrency`` simultaneous requests, built and signed beforehand so
    the clock runs only while a request is on the wire. With ``follow_up``, a round ends
    when the app has also finished the work that follows its acknowledgements (its
    response_url posts), so each round starts from a server that is not still busy."""
    latencies: list[float] = []
    rounds: list[float] = []
    unexpected = 0

    async def timed(body: str, headers: dict[str, str]) -> None:
        nonlocal unexpected
        start = time.perf_counter()
        async with http.post(url, data=body.encode(), headers=headers) as response:
            content = await response.read()
        latencies.append((time.perf_counter() - start) * 1000)
        if response.status != 200 or b"errors" in content:
            unexpected += 1

    for first in range(0, WARM_UP_ROUNDS * concurrency, concurrency):  # not counted
        batch = [build(total + n) for n in range(first, first + concurrency)]
        mark = len(standin.calls)
        await asyncio.gather(*(http.post(url, data=b.encode(), headers=h) for b, h in batch))
        if follow_up:
            await follow_ups(standin, mark, len(batch))
    cpu_before = cpu_seconds(server_pid)
    for first in range(0, total, concurrency):
        batch = [build(n) for n in range(first, min(first + concurrency, total))]
        mark = len(standin.calls)
        start = time.perf_counter()
        await asyncio.gather(*(timed(body, headers) for body, headers in batch))
        if follow_up:
            await follow_ups(standin, mark, len(batch))
        rounds.append((time.perf_counter() - start) * 1000)
        if os.environ.get("BENCH_ROUNDS"):
            print(f"  round {first // concurrency}: {rounds[-1]:.1f} ms")
    cpu_ms = (cpu_seconds(server_pid) - cpu_before) * 1000 / total
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{label:<20} n={len(latencies):>5}  ack p50={q[49]:5.1f} ms  p99={q[98]:5.1f} ms  "
        f"max={max(latencies):5.1f} ms | round of {concurrency} with answers: "
        f"p50={statistics.median(rounds):5.1f} ms | server CPU {cpu_ms:4.1f} ms/req"
        + (f" | UNEXPECTED answers: {unexpected}" if unexpected else "")
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if args.requests > 2000:
        parser.error("--requests: at most 2000 (200 members x a cap of 10)")

    standin = SlackStandin()
    async with standin.running():
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            env = {
                **os.environ,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_BOT_TOKEN": "xoxb-bench",
                "SLACK_API_URL": standin.base_url + "/api/",
                "TOKENBOT_DATABASE_URL": args.database_url or f"sqlite:///{Path(tmp) / 'b.db'}",
            }
            proc = subprocess.Popen(  # noqa: ASYNC220
                [
                    sys.executable,
                    *os.environ.get("BENCH_SERVER_PREFIX", "").split(),
                    "-m",
                    "bot",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                stderr=open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "w"),  # noqa: SIM115, ASYNC230
            )
            try:
                url = f"http://127.0.0.1:{port}"
                await wait_healthy(url, proc)
                slack = SlackClient(url, SIGNING_SECRET, standin)
                await slack.command("/token", "list", "U0WARM")  # auth.test happens once
                await slack.aclose()
                view = standin._views_open({"view": generate_modal("", "{}")})["view"]
                form = "application/x-www-form-urlencoded"

                def signed(body: str) -> tuple[str, dict[str, str]]:
                    return body, {"Content-Type": form, **slack.sign(body)}

                def token_list(n: int) -> tuple[str, dict[str, str]]:
                    return signed(slack.command_body("/token", "list", f"U{n % 50:05d}"))

                def generate(n: int) -> tuple[str, dict[str, str]]:
                    user = f"U{n % 200:05d}"  # up to 200 x 10: the cap never interferes
                    where = {
                        "response_url": standin.new_response_url(user, "C1"),
                        "channel_id": "C1",
                    }
                    standin.views[view["id"]]["private_metadata"] = json.dumps(where)
                    values = {"token_name": {"name": f"bench-{n}"}}
                    return signed(slack.view_submission_body(view["id"], user, values))

                print(
                    f"tokenbot ack latency, {args.concurrency} concurrent signed requests, "
                    f"{os.cpu_count()} cores, {env['TOKENBOT_DATABASE_URL'].split(':')[0]}"
                )
                events = slack.events_url
                async with aiohttp.ClientSession() as http:
                    for label, build, follow_up in (
                        ("/token list", token_list, False),
                        ("generate submission", generate, True),
                    ):
                        await measure(
                            label,
                            proc.pid,
                            standin,
                            http,
                            events,
                            build,
                            args.requests,
                            args.concurrency,
                            follow_up,
                        )
            finally:
                proc.terminate()
                proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
