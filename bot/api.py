"""The resource servers' side: RFC 7662 introspection and forward-auth for gateways."""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from cachetools import LRUCache
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.deps import Deps
from bot.profiles import ProfileRefresher
from storage import tokenformat, usage
from storage.usage import USE_WRITE_INTERVAL, ValidToken

INACTIVE = {"active": False}


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
    at (it moves at once when this process revokes, expires or deactivates, and within
    a second when another process does) and while the token's cutoff is ahead; a
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
            return hit[1]
        generation = self.deps.db.generation  # before the read: a later change wins
        token = await self.deps.call(usage.validate, self.deps.db, secret, now)
        self.remember(digest, generation, token)
        return token

    def remember(self, digest: str, generation: int, token: ValidToken | None) -> None:
        if token is None:
            self.entries.pop(digest, None)
        else:
            self.entries[digest] = (generation, token)


def routes(deps: Deps, client: AsyncWebClient) -> list[Route]:
    cache = ValidTokens(deps)
    profiles = ProfileRefresher(deps, client)

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
        server = _resource_server(deps, request)
        if server is None:
            return JSONResponse(
                {"error": "invalid_client"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="tokenbot"'},
            )
        secret = _form_field(await request.body(), "token")
        if not secret:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        token = await check(secret, via=server)
        return JSONResponse(introspection(token) if token else INACTIVE)

    async def forward_auth(request: Request) -> Response:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        token = await check(secret.strip(), "forward-auth") if scheme.lower() == "bearer" else None
        if token is None:
            challenge = 'Bearer realm="tokenbot"'
            if scheme.lower() == "bearer":
                challenge += ', error="invalid_token"'
            return Response(status_code=401, headers={"WWW-Authenticate": challenge})
        return Response(
            status_code=200,
            headers={
                "X-Token-Subject": token.subject,
                "X-Token-Kind": token.kind,
                "X-Token-Org": token.org,
                "X-Token-Scopes": " ".join(token.scopes),
            },
        )

    return [
        Route("/api/v1/introspect", introspect, methods=["POST"]),
        Route("/api/v1/auth", forward_auth, methods=["GET"]),
    ]
