"""RFC 7662 introspection and forward-auth, through HTTP (R1, R11, SPEC §5)."""

from __future__ import annotations

import asyncio
import time
import warnings
from datetime import timedelta

import authlib.deprecate
import httpx
import pytest
import sqlalchemy as sa

# authlib asks for its httpx2 fork, warning at import (and forcing its warnings on).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from bot.api import FailureThrottle
from bot.standin.client import TLS_CONTEXT, http_client
from bot.standin.harness import RESOURCE_SERVER, Clock, Running
from storage import audit, tokens
from storage.models import Member
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import eventually, eventually_async, generate, settled

GATEWAY = httpx.BasicAuth(*RESOURCE_SERVER)


async def introspect(
    env: Running, token: str | None, auth=GATEWAY, address: str = "127.0.0.1"
) -> httpx.Response:
    """Introspect ``token``, calling from ``address`` (any loopback address)."""
    transport = httpx.AsyncHTTPTransport(local_address=address, verify=TLS_CONTEXT)
    async with http_client(base_url=env.url, transport=transport) as http:
        data = {"token": token, "token_type_hint": "access_token"} if token is not None else {}
        return await http.post("/api/v1/introspect", data=data, auth=auth)


async def forward_auth(env: Running, header: str | None) -> httpx.Response:
    async with http_client(base_url=env.url) as http:
        headers = {"Authorization": header} if header else {}
        return await http.get("/api/v1/auth", headers=headers)


@pytest.mark.parametrize(
    "auth",
    [None, httpx.BasicAuth("gateway", "wrong"), httpx.BasicAuth("stranger", RESOURCE_SERVER[1])],
)
async def test_callers_without_valid_credentials_get_401(env: Running, auth) -> None:
    secret = await generate(env, ALICE, "ci")
    response = await introspect(env, secret, auth=auth)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert "active" not in response.text


async def test_a_valid_token_answers_who_and_what(env: Running) -> None:
    env.standin.groups = {"platform": [ALICE], "oncall": ["U0OTHER"]}
    secret = await generate(env, ALICE, "ci")
    now = env.deps.clock()
    answer = (await introspect(env, secret)).json()
    assert answer["active"] is True
    assert answer["token_type"] == "user"
    assert (answer["sub"], answer["username"], answer["org"]) == (ALICE, ALICE, "T0TOKENBOT")
    assert answer["display_name"] == "alice"
    assert answer["scope"] == "api:read api:write"
    assert answer["groups"] == ["platform"]
    assert answer["name"] == "ci"
    assert abs(answer["last_used_at"] - now.timestamp()) < 5  # this call was a use
    assert abs(answer["exp"] - (now + timedelta(days=30)).timestamp()) < 5
    assert answer["iat"] <= answer["last_used_at"]


async def test_members_with_the_same_display_name_have_different_usernames(
    env: Running,
) -> None:
    env.standin.add_user(BOB, "alice")  # anyone may call themself alice in Slack
    answers = [(await introspect(env, await generate(env, u, "ci"))).json() for u in (ALICE, BOB)]
    assert [a["username"] for a in answers] == [ALICE, BOB]
    assert [a["display_name"] for a in answers] == ["alice", "alice"]


@pytest.mark.parametrize("token", ["", "nonsense", "tbu_" + "A" * 36, "Bearer x"])
async def test_anything_else_is_exactly_inactive(env: Running, token: str) -> None:
    response = await introspect(env, token)
    if token == "":
        assert response.status_code == 400  # no token parameter at all
        return
    assert response.status_code == 200 and response.json() == {"active": False}


async def test_a_role_change_in_slack_applies_to_existing_tokens(env: Running) -> None:
    clock = Clock()
    env.deps.clock = clock
    env.deps.settings.profile_max_age = 60
    secret = await generate(env, ALICE, "ci")
    assert (await introspect(env, secret)).json()["scope"] == "api:read api:write"
    env.standin.users[ALICE]["is_admin"] = True
    clock.advance(timedelta(seconds=30))  # the cached profile is young enough
    mark = len(env.standin.calls)
    assert (await introspect(env, secret)).json()["scope"] == "api:read api:write"
    assert not env.standin.calls_to("users.info")[mark:]
    clock.advance(timedelta(seconds=31))  # now it is not: fetched again from Slack
    scope = await eventually_async(
        lambda: answer(env, secret), lambda a: a["scope"] == "api:read api:write api:admin"
    )
    assert scope["scope"] == "api:read api:write api:admin"


def profile_at(env: Running, user_id: str):
    with env.db.read() as session:
        query = sa.select(Member.profile_at).where(Member.slack_user_id == user_id)
        return session.execute(query).scalar_one()


async def answer(env: Running, secret: str) -> dict:
    return (await introspect(env, secret)).json()


async def test_a_member_gone_from_slack_is_refused_once_the_refresh_has_seen_it(
    env: Running,
) -> None:
    clock = env.deps.clock = Clock()
    secret = await generate(env, ALICE, "ci")
    env.standin.users[ALICE]["deleted"] = True
    clock.advance(timedelta(seconds=env.deps.settings.profile_max_age))
    # The answer does not wait for Slack: the refresh it starts revokes the token.
    assert (await answer(env, secret))["active"] is True
    assert await eventually_async(lambda: answer(env, secret), lambda a: not a["active"]) == {
        "active": False
    }
    revoked = [e for e in audit.events(env.db, "T0TOKENBOT") if e.action == "token.revoked"]
    assert [e.detail["reason"] for e in revoked] == ["owner deactivated"]


async def test_concurrent_uses_of_a_stale_profile_fetch_it_once(env: Running) -> None:
    clock = env.deps.clock = Clock()
    env.standin.groups = {"platform": [ALICE]}
    secret = await generate(env, ALICE, "ci")
    clock.advance(timedelta(seconds=env.deps.settings.profile_max_age))
    mark = len(env.standin.calls)
    answers = await asyncio.gather(*(answer(env, secret) for _ in range(50)))
    assert all(a["active"] and a["groups"] == ["platform"] for a in answers)
    await env.standin.wait_for("users.info", after=mark)
    await eventually(lambda: profile_at(env, ALICE), lambda at: at == clock())
    assert (await answer(env, secret))["active"] is True  # fresh again: no new fetch
    assert len([c for c in env.standin.calls[mark:] if c.method == "users.info"]) == 1


def calls_since(env: Running, method: str, mark: int) -> list:
    return [c for c in env.standin.calls[mark:] if c.method == method]


async def test_with_slack_rate_limiting_the_cached_profile_answers_at_once_until_retry_after(
    env: Running,
) -> None:
    clock = env.deps.clock = Clock()
    env.standin.groups = {"platform": [ALICE]}
    secret = await generate(env, ALICE, "ci")
    clock.advance(timedelta(seconds=env.deps.settings.profile_max_age))
    env.standin.fail_next("users.info", status=429, headers={"Retry-After": "5"})
    mark = len(env.standin.calls)
    started = time.monotonic()
    first = await answer(env, secret)
    assert time.monotonic() - started < 1  # generous: it does not wait for Slack at all
    assert first["active"] is True and first["groups"] == ["platform"]
    await env.standin.wait_for("users.info", after=mark)
    await settled(env)
    # Within Slack's Retry-After, a busy token's uses do not ask Slack again.
    for _ in range(20):
        assert (await answer(env, secret))["groups"] == ["platform"]  # the stale profile
        clock.advance(timedelta(seconds=0.2))
        await settled(env)
    assert len(calls_since(env, "users.info", mark)) == 1
    clock.advance(timedelta(seconds=1))  # 5 s since the refusal: the next use tries again
    assert (await answer(env, secret))["active"] is True
    await settled(env)
    tries = calls_since(env, "users.info", mark)
    assert len(tries) == 2 and tries[1].result.get("ok") is True
    assert profile_at(env, ALICE) == clock()


async def test_a_refresh_that_keeps_failing_waits_longer_each_time(env: Running) -> None:
    clock = env.deps.clock = Clock()
    secret = await generate(env, ALICE, "ci")
    clock.advance(timedelta(seconds=env.deps.settings.profile_max_age))
    env.standin.fail_next("users.info", status=500, times=2)  # no Retry-After to follow
    mark = len(env.standin.calls)
    for wait in (30, 60):  # seconds until the next try: doubled after each failure
        assert (await answer(env, secret))["active"] is True
        await settled(env)
        tries = len(calls_since(env, "users.info", mark))
        clock.advance(timedelta(seconds=wait - 1))
        assert (await answer(env, secret))["active"] is True
        await settled(env)
        assert len(calls_since(env, "users.info", mark)) == tries  # not yet
        clock.advance(timedelta(seconds=1))
    assert (await answer(env, secret))["active"] is True
    await settled(env)
    tries = calls_since(env, "users.info", mark)
    assert len(tries) == 3 and tries[-1].result.get("ok") is True


async def test_stale_profiles_refreshed_together_fetch_the_groups_once(env: Running) -> None:
    clock = env.deps.clock = Clock()
    people = [ALICE, BOB, *(f"U0P{n}" for n in range(6))]
    for person in people[2:]:
        env.standin.add_user(person, person.lower())
    env.standin.groups = {"platform": people}
    secrets = [await generate(env, person, "ci") for person in people]
    # Past the age of the profiles and of the organization's groups fetched with them.
    clock.advance(timedelta(seconds=env.deps.settings.profile_max_age + 1))
    gate = env.standin.hold("usergroups.list")
    mark = len(env.standin.calls)
    answers = await asyncio.gather(*(answer(env, secret) for secret in secrets))
    assert all(a["active"] and a["groups"] == ["platform"] for a in answers)
    first = await env.standin.wait_for("usergroups.list", after=mark)
    await env.standin.wait_for_count(
        "users.info", len(people), lambda call: bool(call.result), after=mark
    )
    assert len(calls_since(env, "users.info", mark)) == len(people)
    # Every refresh now wants the groups: none asks Slack a second time.
    with pytest.raises(TimeoutError):
        await env.standin.wait_for(
            "usergroups.list", lambda call: call is not first, after=mark, timeout=0.5
        )
    gate.set()
    await settled(env)
    assert len(calls_since(env, "usergroups.list", mark)) == 1
    assert all(profile_at(env, person) == clock() for person in people)


async def test_a_role_change_arrives_even_when_the_groups_cannot_be_fetched(
    env: Running,
) -> None:
    clock = env.deps.clock = Clock()
    env.standin.groups = {"platform": [ALICE]}
    secret = await generate(env, ALICE, "ci")
    fetched_at = profile_at(env, ALICE)
    env.standin.users[ALICE]["is_admin"] = True
    clock.advance(timedelta(seconds=env.deps.settings.profile_max_age + 1))
    env.standin.fail_next("usergroups.list", status=429, headers={"Retry-After": "30"})
    mark = len(env.standin.calls)
    assert (await answer(env, secret))["scope"] == "api:read api:write"
    await env.standin.wait_for("usergroups.list", after=mark)
    await settled(env)
    now = await answer(env, secret)
    assert now["scope"] == "api:read api:write api:admin"  # the role, stored at once
    assert now["groups"] == ["platform"]  # the groups as last known
    assert profile_at(env, ALICE) == fetched_at  # without groups, not counted as fresh
    await settled(env)
    assert len(calls_since(env, "users.info", mark)) == 1  # the groups' Retry-After holds
    clock.advance(timedelta(seconds=30))
    assert (await answer(env, secret))["active"] is True
    await settled(env)
    assert len(calls_since(env, "usergroups.list", mark)) == 2
    assert profile_at(env, ALICE) == clock()


async def test_one_second_before_the_cutoff_valid_one_second_after_not(env: Running) -> None:
    clock = Clock()
    env.deps.clock = clock
    secret = await generate(env, ALICE, "ci")
    clock.advance(timedelta(days=30, seconds=-1))
    assert (await introspect(env, secret)).json()["active"] is True  # and that was a use
    clock.advance(timedelta(days=30, seconds=1))  # the use moved the cutoff; now past it
    assert (await introspect(env, secret)).json() == {"active": False}


async def test_uses_are_audited_once_a_minute(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    for _ in range(5):
        assert (await introspect(env, secret)).json()["active"] is True
    used = [e for e in audit.events(env.db, "T0TOKENBOT") if e.action == "token.used"]
    assert len(used) == 1 and used[0].detail["via"] == "gateway"


async def test_forward_auth_passes_a_valid_token_with_its_identity(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    response = await forward_auth(env, f"Bearer {secret}")
    assert response.status_code == 200
    assert response.headers["x-token-subject"] == ALICE
    assert response.headers["x-token-kind"] == "user"
    assert response.headers["x-token-org"] == "T0TOKENBOT"
    assert response.headers["x-token-scopes"] == "api:read api:write"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer tbu_nothing", "Basic Zm9vOmJhcg=="])
async def test_forward_auth_refuses_anything_else_with_a_bearer_challenge(
    env: Running, header: str | None
) -> None:
    response = await forward_auth(env, header)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="tokenbot"')
    assert not any(h.startswith("x-token") for h in response.headers)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/api/v1/auth", "/api/v1/auth/", "/api/v1/auth/orders/42?x=1"])
async def test_forward_auth_answers_any_method_on_any_path_under_it(
    env: Running, method: str, path: str
) -> None:
    secret = await generate(env, ALICE, "ci")
    async with http_client(base_url=env.url) as http:
        body = b'{"ignored": true}' if method in ("POST", "PUT", "PATCH") else None
        valid = await http.request(
            method, path, headers={"Authorization": f"Bearer {secret}"}, content=body
        )
        forged = await http.request(
            method, path, headers={"Authorization": "Bearer tbu_forged"}, content=body
        )
        missing = await http.request(method, path, content=body)
    assert valid.status_code == 200
    assert (valid.headers["x-token-subject"], valid.headers["x-token-kind"]) == (ALICE, "user")
    for refused in (forged, missing):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Bearer realm="tokenbot"')
        assert not any(h.startswith("x-token") for h in refused.headers)


async def test_answers_tell_caches_not_to_keep_them(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    answers = [
        await introspect(env, secret),
        await introspect(env, "tbu_" + "A" * 36),
        await introspect(env, None),
        await introspect(env, secret, auth=httpx.BasicAuth("gateway", "wrong")),
        await forward_auth(env, f"Bearer {secret}"),
        await forward_auth(env, "Bearer tbu_forged"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 400, 401, 200, 401]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["pragma"] == "no-cache"


WRONG = httpx.BasicAuth("gateway", "guess")


async def test_an_address_that_fails_too_often_is_refused_until_the_window_passes(
    env: Running,
) -> None:
    clock = Clock()
    env.deps.clock = clock
    secret = await generate(env, ALICE, "ci")
    limit = env.deps.settings.introspection_max_failures
    window = env.deps.settings.introspection_failure_window
    for _ in range(limit):
        assert (await introspect(env, secret, WRONG, "127.0.0.2")).status_code == 401
    for auth in (WRONG, GATEWAY):  # even the right credentials are not told apart now
        refused = await introspect(env, secret, auth, "127.0.0.2")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == str(window)
        assert refused.headers["cache-control"] == "no-store"
        assert "active" not in refused.text
    # Another address is not affected.
    assert (await introspect(env, secret, address="127.0.0.3")).json()["active"] is True
    clock.advance(timedelta(seconds=window - 1))
    refused = await introspect(env, secret, address="127.0.0.2")
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "1")
    clock.advance(timedelta(seconds=1))
    assert (await introspect(env, secret, address="127.0.0.2")).json()["active"] is True


async def test_successful_authentications_do_not_count_as_failures(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    limit = env.deps.settings.introspection_max_failures
    for _ in range(limit - 1):
        assert (await introspect(env, secret, WRONG, "127.0.0.2")).status_code == 401
    for _ in range(limit * 2):
        assert (await introspect(env, secret, address="127.0.0.2")).status_code == 200
    assert (await introspect(env, secret, WRONG, "127.0.0.2")).status_code == 401
    assert (await introspect(env, secret, address="127.0.0.2")).status_code == 429


async def test_forward_auth_refusals_are_not_throttled(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    for _ in range(env.deps.settings.introspection_max_failures * 3):
        assert (await forward_auth(env, "Bearer tbu_unknown")).status_code == 401
    assert (await forward_auth(env, f"Bearer {secret}")).status_code == 200
    assert (await introspect(env, secret)).status_code == 200


async def test_the_failure_throttle_keeps_a_bounded_number_of_addresses(env: Running) -> None:
    throttle = FailureThrottle(env.deps, size=100)
    for n in range(1000):
        throttle.failed(f"127.1.{n // 256}.{n % 256}")
    assert len(throttle.failures) == 100


async def test_the_failure_throttle_counts_an_ipv6_client_by_its_64(env: Running) -> None:
    throttle = FailureThrottle(env.deps)
    for n in range(env.deps.settings.introspection_max_failures):
        throttle.failed(f"2001:db8::{n + 1:x}")  # a fresh address for every guess
    assert throttle.retry_after("2001:db8::ffff") is not None
    assert throttle.retry_after("2001:db8:0:1::1") is None  # another /64
    assert throttle.retry_after("::ffff:192.0.2.1") is None  # IPv4, as itself


async def test_an_rfc7662_client_reads_the_answers(env: Running) -> None:
    """authlib's introspection client, authenticating with client_secret_basic."""
    secret = await generate(env, ALICE, "ci")
    url = f"{env.url}/api/v1/introspect"
    server_id, server_secret = RESOURCE_SERVER
    async with AsyncOAuth2Client(
        server_id, server_secret, token_endpoint_auth_method="client_secret_basic"
    ) as client:
        answer = await client.introspect_token(url, token=secret, token_type_hint="access_token")
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        claims = answer.json()
        assert (claims["active"], claims["sub"], claims["token_type"]) == (True, ALICE, "user")
        [token] = tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, env.deps.clock()).tokens
        tokens.revoke_token(env.db, "T0TOKENBOT", ALICE, token.id, env.deps.clock())
        revoked = await client.introspect_token(url, token=secret)
        assert revoked.json() == {"active": False}
    async with AsyncOAuth2Client(
        server_id, "not-the-secret", token_endpoint_auth_method="client_secret_basic"
    ) as stranger:
        assert (await stranger.introspect_token(url, token=secret)).status_code == 401
