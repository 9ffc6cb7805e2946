"""Replicas on one PostgreSQL database (SPEC §7: a revocation is refused by every replica
within 100 ms).

1. Revocation to refusal: three ``tokenbot serve`` processes each hold a valid token in
   their validation cache (introspected once); this process revokes it, as any replica
   would (one transaction, committed), then asks each of the three until it answers
   ``{"active": false}``. The figure is the time from the commit to the last of the three
   refusals, over --revocations tokens (p50, p99, worst). Without LISTEN/NOTIFY it would
   be the 1 s poll.
2. Introspection throughput with 1 and with 3 replicas (``serve --workers 3``), each
   beside a bare Starlette endpoint served the same way (uvicorn, the same number of
   processes), as bench/introspect.py does for one.

Needs a PostgreSQL database it may write to (migrated here; tokens of organization
T0BENCH are added):

    .venv/bin/python bench/replicas.py --database-url postgresql://postgres@127.0.0.1/bench \
        [--revocations 200] [--seconds 10] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from introspect import load, prepare, wait_listening  # beside this file

ORG = "T0BENCH"
AUTH = "Basic " + base64.b64encode(b"bench:bench-secret").decode()


def revocable(url: str, count: int) -> list[tuple[str, int, str]]:
    """``count`` valid tokens, ten per member: (member, token id, secret) each."""
    from storage import members, tokens
    from storage.db import Database

    db = Database(url)
    now = datetime.now(UTC)
    made = []
    for m in range((count + 9) // 10):
        user = f"UREVOKE{m:05d}"
        profile = members.Profile(user, f"revoker-{m}", "member", False, ["platform"])
        members.sync_member(db, ORG, profile, now)
        for n in range(min(10, count - 10 * m)):
            issued = tokens.issue_user_token(db, ORG, user, f"revoked-{n}", now)
            tokens.mark_delivered(db, ORG, issued.info.id, now, "bench")
            made.append((user, issued.info.id, issued.secret))
    db.dispose()
    return made


async def active(http: aiohttp.ClientSession, port: int, secret: str) -> bool:
    async with http.post(
        f"http://127.0.0.1:{port}/api/v1/introspect",
        data=urlencode({"token": secret}).encode(),
        headers={"Authorization": AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    ) as response:
        return bool((await response.json())["active"])


async def refused_after(http: aiohttp.ClientSession, port: int, secret: str, since: float) -> float:
    while await active(http, port, secret):
        if time.perf_counter() - since > 5:
            raise SystemExit(f"the replica on port {port} still accepts a token revoked 5 s ago")
    return time.perf_counter() - since


async def revocation_latency(url: str, ports: list[int], count: int) -> list[float]:
    from storage import tokens
    from storage.db import Database

    made = revocable(url, count)
    db = Database(url)
    took = []
    try:
        async with aiohttp.ClientSession() as http:
            for user, token_id, secret in made:
                for port in ports:
                    assert await active(http, port, secret)  # cached there now
                await asyncio.to_thread(
                    tokens.revoke_token, db, ORG, user, token_id, datetime.now(UTC)
                )
                committed = time.perf_counter()
                waits = [refused_after(http, port, secret, committed) for port in ports]
                took.append(max(await asyncio.gather(*waits)))
    finally:
        db.dispose()
    return took


def tokenbot(port: int, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(
        [*command, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def bare(port: int, workers: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys, uvicorn; sys.path.insert(0, sys.argv[1]); "
        "uvicorn.run('introspect:bare_app', factory=True, host='127.0.0.1', "
        "port=int(sys.argv[2]), workers=int(sys.argv[3]), log_config=None, access_log=False)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(port), str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.wait(timeout=30)


async def main(args: argparse.Namespace) -> None:
    from bot.standin import SlackStandin
    from bot.standin.server import free_port

    url = args.database_url
    standin = SlackStandin()
    async with standin.running():
        secrets = prepare(url)  # migrates, too
        env = {
            **os.environ,
            "SLACK_SIGNING_SECRET": "bench",
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_API_URL": standin.base_url + "/api/",
            "TOKENBOT_DATABASE_URL": url,
            "TOKENBOT_RESOURCE_SERVERS": "bench:bench-secret",
            "TOKENBOT_SWEEP_INTERVAL": "3600",
        }
        print(f"replicas on one PostgreSQL database, {os.cpu_count()} cores")

        ports = [free_port() for _ in range(3)]
        replicas = [tokenbot(port, env) for port in ports]
        try:
            for proc, port in zip(replicas, ports, strict=True):
                await wait_listening(port, proc)
            took = await revocation_latency(url, ports, args.revocations)
        finally:
            stop(replicas)
        ms = sorted(t * 1000 for t in took)
        p99 = statistics.quantiles(ms, n=100, method="inclusive")[98]
        print(
            f"  revocation refused by all 3 replicas, {len(ms)} revocations: "
            f"p50 {statistics.median(ms):.1f} ms  p99 {p99:.1f} ms"
            f"  worst {ms[-1]:.1f} ms (target ≤ 100 ms)"
        )

        print(f"  introspection, {args.clients} concurrent clients, {args.seconds:.0f} s each:")
        for workers in (1, 3):
            tokenbot_port, bare_port = free_port(), free_port()
            extra = ("--workers", str(workers)) if workers > 1 else ()
            servers = {
                "bare Starlette": (bare(bare_port, workers), bare_port),
                "tokenbot": (tokenbot(tokenbot_port, env, *extra), tokenbot_port),
            }
            try:
                for proc, port in servers.values():
                    await wait_listening(port, proc)
                await asyncio.sleep(6)  # past every process's start-up reconciliation
                results = {}
                for name, (_, port) in servers.items():
                    target = f"http://127.0.0.1:{port}/api/v1/introspect"
                    await load(target, secrets, args.clients, 1, AUTH)  # warm-up
                    rps, latencies, unexpected = await load(
                        target, secrets, args.clients, args.seconds, AUTH
                    )
                    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
                    results[name] = rps
                    print(
                        f"    {workers} process(es)  {name:<15} {rps:7.0f} req/s"
                        f"  p50 {statistics.median(latencies):5.1f} ms  p99 {p99:5.1f} ms"
                        + (f"  UNEXPECTED {unexpected}" if unexpected else "")
                    )
                ratio = results["tokenbot"] / results["bare Starlette"]
                print(f"    {workers} process(es)  throughput ratio {ratio:.2f}")
            finally:
                stop([proc for proc, _ in servers.values()])


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL database")
    parser.add_argument("--revocations", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    if not args.database_url.startswith("postgresql"):
        parser.error("replicas need PostgreSQL: give --database-url postgresql://…")
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
