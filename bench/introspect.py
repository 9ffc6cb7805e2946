"""Introspection throughput and latency beside a bare Starlette endpoint (SPEC §7:
at 32 concurrent clients, throughput ≥ 50% and p99 ≤ 2 times the bare endpoint's).

Both servers run the same way, in their own process: uvicorn, one worker, no access log.
The bare endpoint parses the same form and returns a JSON body of the same size.
tokenbot answers from a temporary SQLite database (or --database-url) holding 200 valid
tokens of 20 members whose Slack profiles are fresh, so no call to Slack is made; each
use is counted (one write per token per minute). The load comes from aiohttp, 32
clients, each sending its next request when the last is answered.

    .venv/bin/python bench/introspect.py [--seconds 10] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import aiohttp

SAMPLE = {
    "active": True,
    "token_type": "user",
    "sub": "U0000001",
    "username": "member-1",
    "org": "T0BENCH",
    "scope": "api:read api:write",
    "iat": 1795000000,
    "exp": 1797600000,
    "last_used_at": 1795000000,
    "name": "bench-1",
    "groups": ["platform"],
}


def bare_app():  # type: ignore[no-untyped-def]
    """The baseline: the same form parsing and a JSON body of the same size."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def introspect(request: Request) -> JSONResponse:
        fields = parse_qs((await request.body()).decode(), max_num_fields=10)
        return JSONResponse({**SAMPLE, "name": fields.get("token", [""])[0][:7]})

    return Starlette(routes=[Route("/api/v1/introspect", introspect, methods=["POST"])])


def prepare(url: str) -> list[str]:
    """200 tokens of 20 members with fresh profiles; return the secrets."""
    from storage import members, tokens
    from storage.db import Database
    from storage.migrate import upgrade

    db = Database(url)
    upgrade(db)
    now = datetime.now(UTC)
    secrets = []
    for m in range(20):
        user = f"U{m:07d}"
        profile = members.Profile(user, f"member-{m}", "member", False, ["platform"])
        members.sync_member(db, "T0BENCH", profile, now)
        for n in range(10):
            issued = tokens.issue_user_token(db, "T0BENCH", user, f"bench-{n}", now)
            tokens.mark_delivered(db, "T0BENCH", issued.info.id, now, "bench")
            secrets.append(issued.secret)
    db.dispose()
    return secrets


async def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        await asyncio.sleep(0.05)
    raise SystemExit("server did not start")


async def load(
    url: str, secrets: list[str], clients: int, seconds: float, auth: str
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    unexpected = 0
    headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
    bodies = [urlencode({"token": s}).encode() for s in secrets]
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client(k: int) -> None:
            nonlocal unexpected
            n = k
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with http.post(url, data=bodies[n % len(bodies)], headers=headers) as r:
                    answer = await r.read()
                latencies.append((time.perf_counter() - start) * 1000)
                if r.status != 200 or b'"active":true' not in answer.replace(b" ", b""):
                    unexpected += 1
                n += clients

        began = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies, unexpected


def serve(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--database-url")
    parser.add_argument("--bare-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_port:  # the child that serves the baseline
        import uvicorn

        uvicorn.run(
            bare_app(), host="127.0.0.1", port=args.bare_port, log_config=None, access_log=False
        )
    else:
        asyncio.run(main(args))


async def main(args: argparse.Namespace) -> None:
    from bot.standin import SlackStandin
    from bot.standin.server import free_port

    standin = SlackStandin()
    async with standin.running():
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
            secrets = prepare(url)
            auth = "Basic " + base64.b64encode(b"bench:bench-secret").decode()
            tokenbot_port, bare_port = free_port(), free_port()
            env = {
                **os.environ,
                "SLACK_SIGNING_SECRET": "bench",
                "SLACK_BOT_TOKEN": "xoxb-bench",
                "SLACK_API_URL": standin.base_url + "/api/",
                "TOKENBOT_DATABASE_URL": url,
                "TOKENBOT_RESOURCE_SERVERS": "bench:bench-secret",
                "TOKENBOT_SWEEP_INTERVAL": "3600",
            }
            servers = {
                "bare Starlette": (
                    serve([sys.executable, __file__, "--bare-port", str(bare_port)], env),
                    bare_port,
                ),
                "tokenbot": (
                    serve(
                        [
                            sys.executable,
                            "-m",
                            "bot",
                            "serve",
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(tokenbot_port),
                        ],
                        env,
                    ),
                    tokenbot_port,
                ),
            }
            try:
                for proc, port in servers.values():
                    await wait_listening(port, proc)
                await asyncio.sleep(6)  # past the start-up reconciliation
                print(
                    f"introspection, {args.clients} concurrent clients, {args.seconds:.0f} s "
                    f"each, {os.cpu_count()} cores, {url.split(':')[0]}"
                )
                results = {}
                for name, (_, port) in servers.items():
                    target = f"http://127.0.0.1:{port}/api/v1/introspect"
                    await load(target, secrets, args.clients, 1, auth)  # warm-up
                    rps, latencies, unexpected = await load(
                        target, secrets, args.clients, args.seconds, auth
                    )
                    p99 = statistics.quantiles(latencies, n=100)[98]
                    results[name] = (rps, p99)
                    print(
                        f"  {name:<15} {rps:7.0f} req/s  p50 {statistics.median(latencies):5.1f}"
                        f" ms  p99 {p99:5.1f} ms"
                        + (f"  UNEXPECTED {unexpected}" if unexpected else "")
                    )
                (t_rps, t_p99), (b_rps, b_p99) = results["tokenbot"], results["bare Starlette"]
                print(
                    f"  throughput ratio {t_rps / b_rps:.2f} (target ≥ 0.5), "
                    f"p99 ratio {t_p99 / b_p99:.2f} (target ≤ 2)"
                )
            finally:
                for proc, _ in servers.values():
                    proc.terminate()
                    proc.wait(timeout=10)


if __name__ == "__main__":
    cli()
