"""A real nginx in front of an API, asking tokenbot through ``auth_request``: the
configuration the README documents, checked end to end."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.standin.harness import Running
from bot.standin.server import free_port
from storage import tokens
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

# The README's example, with the addresses filled in.
SITE = """
    location = /_tokenbot_auth {{
        internal;
        proxy_pass http://{tokenbot}/api/v1/auth;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header Authorization $http_authorization;
    }}

    location /api/ {{
        auth_request /_tokenbot_auth;
        auth_request_set $token_subject $upstream_http_x_token_subject;
        auth_request_set $token_scopes $upstream_http_x_token_scopes;
        auth_request_set $token_org $upstream_http_x_token_org;
        proxy_set_header X-Token-Subject $token_subject;
        proxy_set_header X-Token-Org $token_org;
        proxy_set_header X-Token-Scopes $token_scopes;
        proxy_pass http://{backend};
    }}
"""
# The protected API: here an nginx server that says which identity it was handed.
BACKEND = """
    location / {{
        set $who "subject=$http_x_token_subject org=$http_x_token_org";
        return 200 "$who scopes=$http_x_token_scopes\\n";
    }}
"""


@pytest.fixture
def nginx(env: Running, tmp_path: Path) -> Iterator[str]:
    port, backend = free_port(), free_port()
    tokenbot = env.url.removeprefix("http://")
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    config = f"""
user root;
worker_processes 1;
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    server {{
        listen 127.0.0.1:{port};
        {SITE.format(tokenbot=tokenbot, backend=f"127.0.0.1:{backend}")}
    }}
    server {{
        listen 127.0.0.1:{backend};
        {BACKEND.format()}
    }}
}}
"""
    (tmp_path / "nginx.conf").write_text(config)
    process = subprocess.Popen(
        [
            NGINX,
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-e",
            str(tmp_path / "error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode() if process.stderr else "")
            subprocess.run(["sleep", "0.02"], check=True)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def get(url: str, header: str | None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url, headers={"Authorization": header} if header else {})


async def test_nginx_lets_a_valid_token_through_with_its_identity(env: Running, nginx: str) -> None:
    secret = await generate(env, ALICE, "ci")
    response = await get(f"{nginx}/api/orders", f"Bearer {secret}")
    assert response.status_code == 200
    assert response.text.strip() == "subject=U0ALICE org=T0TOKENBOT scopes=api:read api:write"


@pytest.mark.parametrize("header", [None, "Bearer tbu_forged", "Basic dXNlcjpwYXNz"])
async def test_nginx_refuses_without_a_valid_token(
    env: Running, nginx: str, header: str | None
) -> None:
    response = await get(f"{nginx}/api/orders", header)
    assert response.status_code == 401
    assert "subject=" not in response.text


async def test_nginx_refuses_a_revoked_token_at_once(env: Running, nginx: str) -> None:
    secret = await generate(env, ALICE, "ci")
    assert (await get(f"{nginx}/api/x", f"Bearer {secret}")).status_code == 200
    [token] = tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, env.deps.clock()).tokens
    tokens.revoke_token(env.db, "T0TOKENBOT", ALICE, token.id, env.deps.clock())
    assert (await get(f"{nginx}/api/x", f"Bearer {secret}")).status_code == 401
