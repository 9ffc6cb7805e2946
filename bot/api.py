"""The resource servers' side: RFC 7662 introspection and forward-auth for gateways."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.deps import Deps
from bot.profiles import GroupDirectory, with_current_profile
from storage import usage
from storage.usage import ValidToken

log = logging.getLogger(__name__)
INACTIVE = {"active": False}


def _epoch(at: Any) -> int | None:
    return int(at.timestamp()) if at is not None else None


def introspection(token: ValidToken) -> dict[str, Any]:
    """The RFC 7662 answer for a valid token, with tokenbot's extensions (SPEC §5)."""
    answer: dict[str, Any] = {
        "active": True,
        "token_type": token.kind,
        "sub": token.owner,
        "username": token.display_name or token.owner,
        "org": token.org,
        "scope": " ".join(token.scopes),
        "iat": _epoch(token.created_at),
        "exp": _epoch(token.cutoff_at),
        "last_used_at": _epoch(token.last_used_at),
        "name": token.name,
    }
    if token.kind == "user":
        answer["groups"] = list(token.groups)
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


def routes(deps: Deps, client: AsyncWebClient) -> list[Route]:
    groups = GroupDirectory(max_age=deps.settings.profile_max_age)

    async def check(secret: str, via: str) -> ValidToken | None:
        """Validate, bring the profile up to date, and count the use (R1, R11)."""
        now = deps.clock()
        token = await deps.call(usage.validate, deps.db, secret, now)
        if token is not None:
            token = await with_current_profile(deps, client, groups, token, now)
        if token is None:
            return None
        return await deps.call(usage.record_use, deps.db, token, now, via)

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
                "X-Token-Subject": token.owner or "",
                "X-Token-Kind": token.kind,
                "X-Token-Org": token.org,
                "X-Token-Scopes": " ".join(token.scopes),
            },
        )

    return [
        Route("/api/v1/introspect", introspect, methods=["POST"]),
        Route("/api/v1/auth", forward_auth, methods=["GET"]),
    ]
