"""deploy/nginx.conf run by a real nginx in front of two stand-ins for a replica's
listeners: Slack reaches /slack/* and /healthz over HTTPS, the internet never reaches
/api/v1/*, and the internal server carries /api/v1/* only."""

from __future__ import annotations

import dataclasses
import datetime
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.standin.client import SlackClient
from bot.standin.harness import SIGNING_SECRET, Running
from bot.standin.server import free_port, serve_in_background
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate
from tests.e2e.gateways import find_nginx, nginx_main_config, running

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
WHY_MISSING = "nginx is not installed (Debian package nginx; .ci/run installs it)"


def nginx_binary() -> str:
    binary = find_nginx()
    if binary is None:
        # .ci/run installs nginx: there, a missing one is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(WHY_MISSING)
        pytest.skip(WHY_MISSING)
    return binary


def self_signed(directory: Path) -> None:
    """fullchain.pem and privkey.pem for localhost, where the config expects them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory.mkdir()
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def main_config(workdir: Path, site: str) -> str:
    """A whole nginx.conf holding ``site`` where the image's conf.d would be included,
    with everything nginx writes kept in ``workdir``."""
    self_signed(workdir / "certs")
    return nginx_main_config(workdir, site.replace("/etc/nginx/certs/", f"{workdir}/certs/"))


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    binary = nginx_binary()
    config = tmp_path / "nginx.conf"
    config.write_text(main_config(tmp_path, CONF.read_text()))
    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


@dataclass
class Listener:
    """Stands in for one of a replica's listeners: answers with what reached it."""

    name: str
    port: int = field(default_factory=free_port)
    seen: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def echo(request: Request) -> JSONResponse:
            self.seen.append(request.url.path)
            return JSONResponse(
                {
                    "listener": self.name,
                    "path": request.url.path,
                    "body": (await request.body()).decode(),
                    "forwarded_for": request.headers.getlist("x-forwarded-for"),
                }
            )

        return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


@dataclass
class Front:
    public: str
    internal: str
    replica_public: Listener
    replica_api: Listener


@asynccontextmanager
async def nginx_in_front(
    public_upstream: int, api_upstream: int, workdir: Path
) -> AsyncIterator[tuple[str, str]]:
    """nginx with deploy/nginx.conf on free loopback ports, its replica at the given
    ports in place of compose's ``tokenbot``; yields the public and internal URLs."""
    binary = nginx_binary()
    public, internal = free_port(), free_port()
    site = (
        CONF.read_text()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{public} ssl;")
        .replace("listen 8081;", f"listen 127.0.0.1:{internal};")
        .replace("tokenbot:3000", f"127.0.0.1:{public_upstream}")
        .replace("tokenbot:3001", f"127.0.0.1:{api_upstream}")
    )
    config = workdir / "nginx.conf"
    config.write_text(main_config(workdir, site))
    async with running([binary, "-p", str(workdir), "-c", str(config)], internal, workdir):
        yield f"https://127.0.0.1:{public}", f"http://127.0.0.1:{internal}"


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    replica_public, replica_api = Listener("public"), Listener("api")
    async with (
        serve_in_background(replica_public.app(), replica_public.port),
        serve_in_background(replica_api.app(), replica_api.port),
        nginx_in_front(replica_public.port, replica_api.port, tmp_path) as (public, internal),
    ):
        yield Front(public, internal, replica_public, replica_api)


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=False, timeout=10)


async def test_slack_reaches_the_public_listener_over_https_with_the_body_intact(
    front: Front,
) -> None:
    body = "token=x&command=%2Ftoken&text=new+ci"  # a signature covers these exact bytes
    async with client() as http:
        answer = await http.post(
            f"{front.public}/slack/events",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        health = await http.get(f"{front.public}/healthz")
    assert answer.status_code == 200
    assert answer.json()["listener"] == "public"
    assert answer.json()["path"] == "/slack/events"
    assert answer.json()["body"] == body
    assert (health.json()["listener"], health.json()["path"]) == ("public", "/healthz")


async def test_the_public_server_never_passes_on_the_api_or_anything_else(front: Front) -> None:
    async with client() as http:
        for path in ("/api/v1/introspect", "/api/v1/auth", "/api/v1/auth/x", "/", "/admin"):
            answer = await http.post(f"{front.public}{path}", content="token=tbu_x")
            assert answer.status_code == 404, path
    assert front.replica_public.seen == []
    assert front.replica_api.seen == []


async def test_the_internal_server_carries_the_api_and_not_slack(front: Front) -> None:
    async with client() as http:
        auth = await http.get(f"{front.internal}/api/v1/auth/orders/42")
        introspect = await http.post(f"{front.internal}/api/v1/introspect", content="token=t")
        slack = await http.post(f"{front.internal}/slack/events", content="x")
    assert auth.json()["listener"] == "api"
    assert auth.json()["path"] == "/api/v1/auth/orders/42"
    assert introspect.json()["path"] == "/api/v1/introspect"
    assert slack.status_code == 404
    assert front.replica_public.seen == []


async def test_a_client_cannot_choose_the_address_the_replica_throttles_by(front: Front) -> None:
    async with client() as http:
        answer = await http.post(
            f"{front.internal}/api/v1/introspect",
            content="token=t",
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
    assert answer.json()["forwarded_for"] == ["127.0.0.1"]


async def test_a_body_over_the_replicas_limit_stops_at_nginx(front: Front) -> None:
    async with client() as http:
        answer = await http.post(f"{front.public}/slack/events", content=b"x" * (1024 * 1024 + 1))
    assert answer.status_code == 413
    assert front.replica_public.seen == []


async def test_a_token_made_through_nginx_passes_forward_auth_on_the_internal_server_only(
    env: Running, tmp_path: Path
) -> None:
    # One replica serving both listeners' routes stands in for compose's three.
    port = int(env.url.rsplit(":", 1)[1])
    async with nginx_in_front(port, port, tmp_path) as (public, internal):
        through_nginx = SlackClient(public, SIGNING_SECRET, env.standin)
        await through_nginx.http.aclose()
        through_nginx.http = client()
        try:
            # Slack's signature still holds once nginx has passed the request on.
            secret = await generate(dataclasses.replace(env, slack=through_nginx), ALICE, "ci")
        finally:
            await through_nginx.aclose()
        bearer = {"Authorization": f"Bearer {secret}"}
        async with client() as http:
            allowed = await http.get(f"{internal}/api/v1/auth/orders/42", headers=bearer)
            from_outside = await http.get(f"{public}/api/v1/auth/orders/42", headers=bearer)
            refused = await http.get(
                f"{internal}/api/v1/auth", headers={"Authorization": "Bearer tbu_nope"}
            )
    assert allowed.status_code == 200
    assert allowed.headers["x-token-subject"] == ALICE
    assert from_outside.status_code == 404
    assert "x-token-subject" not in from_outside.headers
    assert refused.status_code == 401
