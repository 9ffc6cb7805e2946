"""The resource servers' side: RFC 7662 introspection and forward-auth for gateways."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from cachetools import LRUCache, TTLCache
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import Receive, Scope, Send

from bot.deps import Deps
from bot.profiles import ProfileRefresher
from storage import tokenformat, usage
from storage.usage import USE_WRITE_INTERVAL, ValidToken

log = logging.getLogger(__name__)

INACTIVE = {"active": False}
# An answer a resource server keeps would outlive a revocation and hide uses (R11, R16).
NOT_STORED = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _epoch(at: Any) -> int | None:
    return int(at.timestamp()) if at is not None else None


def introspection(token: ValidToken) -> dict[str, Any]:
    """The RFC 7662 answer for a valid token, with tokenbot's extensions (SPEC §5)."""
    answer: dict[str, Any] = {
        "active": True,
        "token_type": token.kind,
        "sub": token.subject,
        # Stable and unique in the organization: the member's Slack user id or the service
        # user's name, never a display name anyone can set.
        "username": token.subject,
        "org": token.org,
        "scope": " ".join(token.scopes),
        "iat": _epoch(token.created_at),
        "exp": _epoch(token.cutoff_at),
        "last_used_at": _epoch(token.last_used_at),
        "name": token.name,
    }
    if token.kind == "user":
        answer["groups"] = list(token.groups)
        if token.display_name:
            answer["display_name"] = token.display_name
    return answer


def _resource_server(deps: Deps, request: Request) -> str | None:
    """The id of the resource server whose HTTP Basic credentials came with the request."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        server_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    expected = deps.settings.resource_servers.get(server_id)
    if expected is None or not hmac.compare_digest(
        secret.encode(), expected.get_secret_value().encode()
    ):
        return None
    return server_id


def _form_field(body: bytes, name: str) -> str | None:
    """One field of an application/x-www-form-urlencoded body (RFC 7662 §2.1)."""
    try:
        fields = parse_qs(body.decode(), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    values = fields.get(name)
    return values[0] if values else None


class ValidTokens:
    """Recently validated tokens, by digest, so that most checks make no database round
    trip. An entry serves only while the database's generation is the one it was read
    at (it moves at once when this process revokes, expires or deactivates, and when
    another process does, as soon as PostgreSQL notifies it, else within a second) and
    while the token's cutoff is ahead; a
    token whose cutoff has passed is looked up again, in case another replica saw a use.
    """

    def __init__(self, deps: Deps, size: int = 100_000) -> None:
        self.deps = deps
        self.entries: LRUCache[str, tuple[int, ValidToken]] = LRUCache(maxsize=size)

    async def get(self, secret: str, now: datetime) -> ValidToken | None:
        if not tokenformat.has_valid_checksum(secret):
            return None
        digest = tokenformat.digest(secret)
        hit = self.entries.get(digest)
        if hit and hit[0] == self.deps.db.generation and hit[1].cutoff_at > now:
            self.deps.metrics.validation_cache.labels("hit").inc()
            return hit[1]
        self.deps.metrics.validation_cache.labels("miss").inc()
        generation = self.deps.db.generation  # before the read: a later change wins
        token = await self.deps.call(
            usage.validate,
            self.deps.db,
            secret,
            now,
            installed_only=self.deps.settings.multi_workspace,
        )
        self.remember(digest, generation, token)
        return token

    def remember(self, digest: str, generation: int, token: ValidToken | None) -> None:
        if token is None:
            self.entries.pop(digest, None)
        else:
            self.entries[digest] = (generation, token)


@dataclass
class FailureWindow:
    """An address's failed client authentications in the window that ends at ``until``."""

    until: float
    count: int = 0


class FailureThrottle:
    """Failed client authentications per client address, counted in a window that opens
    at the address's first failure. Past the limit, the address is refused whatever it
    sends until the window closes: a right guess must not be told apart. Bounded: when
    full, the least recently seen addresses are forgotten first."""

    def __init__(self, deps: Deps, size: int = 10_000) -> None:
        self.deps = deps
        self.window = deps.settings.introspection_failure_window
        self.failures: TTLCache[str, FailureWindow] = TTLCache(
            maxsize=size, ttl=self.window, timer=self.now
        )

    def now(self) -> float:
        return self.deps.clock().timestamp()

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        seen = self.failures.get(_client_key(address))
        if seen is None or seen.count < self.deps.settings.introspection_max_failures:
            return None
        return max(1, math.ceil(seen.until - self.now()))

    def failed(self, address: str) -> None:
        key = _client_key(address)
        seen = self.failures.get(key)
        if seen is None:
            seen = self.failures[key] = FailureWindow(self.now() + self.window)
        seen.count += 1
        if seen.count == self.deps.settings.introspection_max_failures:
            log.warning(
                "introspection: %d failed client authentications from %s; refused for %ds",
                seen.count,
                address,
                self.window,
            )


def _client_key(address: str) -> str:
    """Whom the throttle counts: an IPv4 address, or an IPv6 client's /64, since one host
    usually holds a whole /64 and could take a fresh address for every guess."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else ip)


class AnyMethod:
    """An endpoint that answers every HTTP method: Starlette routes a plain function for
    GET only, an ASGI app for all."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def routes(deps: Deps, client: AsyncWebClient) -> list[Route]:
    cache = ValidTokens(deps)
    throttle = FailureThrottle(deps)
    profiles = ProfileRefresher(deps, client)
    introspections = deps.metrics.introspections

    async def check(secret: str, via: str) -> ValidToken | None:
        """Validate and count the use (R1, R11). The answer never waits on Slack: a
        stale profile serves while it is fetched again in the background."""
        now = deps.clock()
        generation = deps.db.generation
        token = await cache.get(secret, now)
        if token is None:
            return None
        profiles.refresh_if_stale(token, now)
        current = token
        if current.last_used_at is None or now - current.last_used_at >= USE_WRITE_INTERVAL:
            current = await deps.call(usage.record_use, deps.db, current, now, via)
        if current is not token:
            cache.remember(tokenformat.digest(secret), generation, current)
        return current

    async def introspect(request: Request) -> Response:
        # The socket peer, or its X-Forwarded-For where uvicorn trusts the peer
        # (FORWARDED_ALLOW_IPS): behind any other proxy, the proxy's own address.
        address = request.client.host if request.client else ""
        wait = throttle.retry_after(address)
        if wait is not None:
            introspections.labels("introspect", "throttled").inc()
            return JSONResponse(
                {"error": "too_many_requests", "error_description": "too many failed attempts"},
                status_code=429,
                headers={"Retry-After": str(wait), **NOT_STORED},
            )
        server = _resource_server(deps, request)
        if server is None:
            throttle.failed(address)
            introspections.labels("introspect", "unauthenticated").inc()
            return JSONResponse(
                {"error": "invalid_client"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="tokenbot"', **NOT_STORED},
            )
        secret = _form_field(await request.body(), "token")
        if not secret:
            introspections.labels("introspect", "bad_request").inc()
            return JSONResponse({"error": "invalid_request"}, status_code=400, headers=NOT_STORED)
        token = await check(secret, via=server)
        introspections.labels("introspect", "active" if token else "inactive").inc()
        return JSONResponse(introspection(token) if token else INACTIVE, headers=NOT_STORED)

    async def forward_auth(request: Request) -> Response:
        # Any method and any path under /api/v1/auth: Envoy's ext_authz sends the client's
        # own. The body, if any, is never read.
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        bearer = scheme.lower() == "bearer"
        token = await check(secret.strip(), "forward-auth") if bearer else None
        outcome = "active" if token else "inactive" if bearer else "unauthenticated"
        introspections.labels("forward_auth", outcome).inc()
        if token is None:
            challenge = 'Bearer realm="tokenbot"'
            if bearer:
                challenge += ', error="invalid_token"'
            return Response(status_code=401, headers={"WWW-Authenticate": challenge, **NOT_STORED})
        return Response(
            status_code=200,
            headers={
                "X-Token-Subject": token.subject,
                "X-Token-Kind": token.kind,
                "X-Token-Org": token.org,
                "X-Token-Scopes": " ".join(token.scopes),
                **NOT_STORED,
            },
        )

    return [
        Route("/api/v1/introspect", introspect, methods=["POST"]),
        Route("/api/v1/auth", AnyMethod(forward_auth)),
        Route("/api/v1/auth/{path:path}", AnyMethod(forward_auth)),
    ]
