"""Webhook endpoints: the HTTPS addresses an organization's admins name to be told, as
signed JSON, of its tokens' events (which events, and how they are queued:
:mod:`storage.webhook_events`). Added and removed here, each with an audit event that
names the URL's host only; read here when a message is sent to one."""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import sqlalchemy as sa

from storage import audit
from storage.db import Database
from storage.errors import InvalidField, WebhookNotFound
from storage.models import WebhookEndpoint
from storage.orgs import ORG, find_org, lock_org
from storage.webhook_events import EVENT_TYPES

ENDPOINT = WebhookEndpoint.__table__  # type: ignore[attr-defined]
MAX_ENDPOINTS = 10  # per organization: each event is a request to every one of them
URL_MAX = 2000
SECRET_PREFIX = "whsec_"
# The block ids of the fields a refusal names (the modal's inputs).
URL_FIELD, EVENTS_FIELD = "url", "events"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # of a host name, as DNS allows
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?", re.IGNORECASE)
_NOT_A_URL = (
    "That is not a URL tokenbot can send to. Use a full address, such as "
    "https://example.com/hooks/tokenbot."
)


@dataclass(frozen=True)
class EndpointInfo:
    """What may be shown of an endpoint: never its secret."""

    id: int
    url: str
    events: list[str]
    created_at: datetime
    created_by: str  # a Slack user id
    last_status: str | None
    last_attempt_at: datetime | None

    @property
    def host(self) -> str:
        return host_of(self.url)


@dataclass(frozen=True)
class NewEndpoint:
    """An endpoint just added, with its signing secret (shown once, to the admin), and
    the organization's endpoints now, itself included."""

    info: EndpointInfo
    secret: str = field(repr=False)
    endpoints: list[EndpointInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """Where a webhook message goes, and the secret that signs it."""

    id: int
    url: str
    secret: str = field(repr=False)


def host_of(url: str) -> str:
    """The URL's host, as audit events and log lines name an endpoint: its path and
    query may hold a receiver's own secret."""
    try:
        return httpx.URL(url).host or "?"
    except httpx.InvalidURL:
        return "?"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_url(raw: object, *, allow_loopback: bool) -> str:
    """The URL as it will be stored (trimmed), or InvalidField saying what is wrong: it
    must be https (http only on a loopback address, and only when ``allow_loopback``),
    without credentials, at most URL_MAX characters. Parsed as httpx, which sends the
    requests, will parse it."""
    url = raw.strip() if isinstance(raw, str) else ""
    if not url:
        raise InvalidField(URL_FIELD, "Enter the endpoint's URL.")
    if len(url) > URL_MAX:
        raise InvalidField(
            URL_FIELD, f"Use at most {URL_MAX:,} characters (this URL has {len(url):,})."
        )
    if not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidField(URL_FIELD, _NOT_A_URL)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidField(URL_FIELD, _NOT_A_URL) from None
    host = parsed.host
    try:
        ascii_host = parsed.raw_host.decode("ascii")
    except UnicodeDecodeError:
        ascii_host = ""
    if (
        parsed.scheme not in ("http", "https")
        or not host
        or (not _HOSTNAME.fullmatch(ascii_host) and not _is_ip(host))
        or not (parsed.port is None or 0 < parsed.port < 65536)
    ):
        raise InvalidField(URL_FIELD, _NOT_A_URL)
    if parsed.userinfo:
        raise InvalidField(
            URL_FIELD,
            "Leave the user name and password out of the URL: tokenbot signs every "
            "delivery instead, for the endpoint to check.",
        )
    if parsed.scheme != "https" and not (allow_loopback and _is_loopback(host)):
        raise InvalidField(URL_FIELD, "Use an https:// URL: events are sent only over HTTPS.")
    if internal_address(host) and not (allow_loopback and _is_loopback(host)):
        raise InvalidField(URL_FIELD, _INTERNAL)
    return url


_INTERNAL = "Use an address on the internet: events are not sent to this network's own hosts."


def internal_address(host: str) -> bool:
    """Whether ``host`` names this host or a private network (localhost, or an IP address
    that is loopback, private, link-local, reserved...): no endpoint may be one, so that
    webhooks cannot be aimed at the services beside tokenbot."""
    if host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False  # a name: checked again, resolved, when a delivery is sent


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def validate_events(chosen: object) -> list[str]:
    """The event types an endpoint is told of (a list of them), in their usual order: all
    of them when none is chosen. InvalidField for anything tokenbot does not send."""
    if chosen is None or chosen == []:
        return list(EVENT_TYPES)
    if not isinstance(chosen, list) or not all(isinstance(kind, str) for kind in chosen):
        raise InvalidField(EVENTS_FIELD, "Choose events from the list.")
    unknown = sorted(set(chosen) - set(EVENT_TYPES))
    if unknown:
        raise InvalidField(EVENTS_FIELD, f"tokenbot sends no such event: {', '.join(unknown)}.")
    return [kind for kind in EVENT_TYPES if kind in chosen]


_INFO_COLUMNS = (
    ENDPOINT.c.id,
    ENDPOINT.c.url,
    ENDPOINT.c.events,
    ENDPOINT.c.created_at,
    ENDPOINT.c.created_by,
    ENDPOINT.c.last_status,
    ENDPOINT.c.last_attempt_at,
)
_ENABLED = (
    sa.select(*_INFO_COLUMNS)
    .where(ENDPOINT.c.org_id == sa.bindparam("org"), ENDPOINT.c.disabled_at.is_(None))
    .order_by(ENDPOINT.c.created_at, ENDPOINT.c.id)
)
_ONE_ENABLED = _ENABLED.where(ENDPOINT.c.id == sa.bindparam("endpoint")).with_for_update()
_INSERT = sa.insert(ENDPOINT).returning(ENDPOINT.c.id)
_REMOVE = (
    sa.update(ENDPOINT)
    .where(ENDPOINT.c.id == sa.bindparam("endpoint"))
    .values(disabled_at=sa.bindparam("now"), secret="")  # nothing is signed with it again
)
_TARGET = (
    sa.select(ENDPOINT.c.id, ENDPOINT.c.url, ENDPOINT.c.secret)
    .select_from(ENDPOINT.join(ORG, ORG.c.id == ENDPOINT.c.org_id))
    .where(
        ENDPOINT.c.id == sa.bindparam("endpoint"),
        ORG.c.slack_id == sa.bindparam("org"),
        ENDPOINT.c.disabled_at.is_(None),
    )
)
_ATTEMPTED = (
    sa.update(ENDPOINT)
    .where(ENDPOINT.c.id == sa.bindparam("endpoint"))
    .values(last_status=sa.bindparam("status"), last_attempt_at=sa.bindparam("now"))
)


def _info(row: sa.Row[tuple[object, ...]]) -> EndpointInfo:
    return EndpointInfo(**row._mapping)


def list_endpoints(db: Database, org_slack_id: str) -> list[EndpointInfo]:
    """The organization's endpoints, oldest first (removed ones are not listed)."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return []
        return [_info(row) for row in session.execute(_ENABLED, {"org": org.id})]


def add_endpoint(
    db: Database,
    org_slack_id: str,
    actor: str,
    *,
    url: object,
    events: object,
    now: datetime,
    allow_loopback: bool = False,
) -> NewEndpoint:
    """Add an endpoint told of ``events`` (all of them when None or empty) from now on,
    with a new signing secret; the caller has checked that ``actor`` is an admin.

    Raises InvalidField naming the field at fault: a URL refused by :func:`validate_url`
    or already an endpoint of the organization, an unknown event, or MAX_ENDPOINTS
    reached. Nothing is written when it raises."""
    clean = validate_url(url, allow_loopback=allow_loopback)
    kinds = validate_events(events)
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        existing = [_info(row) for row in session.execute(_ENABLED, {"org": org.id})]
        if len(existing) >= MAX_ENDPOINTS:
            raise InvalidField(
                URL_FIELD,
                f"The workspace already has {len(existing)} webhook endpoints, and the limit "
                f"is {MAX_ENDPOINTS}. Remove one to make room.",
            )
        if any(e.url == clean for e in existing):
            raise InvalidField(
                URL_FIELD,
                "That URL is an endpoint already. To give it a new secret, remove it "
                "first, then add it again.",
            )
        secret = SECRET_PREFIX + secrets.token_hex(32)
        values = {
            "org_id": org.id,
            "url": clean,
            "secret": secret,
            "events": kinds,
            "created_at": now,
            "created_by": actor,
            "disabled_at": None,
            "last_status": None,
            "last_attempt_at": None,
        }
        endpoint_id = session.execute(_INSERT, values).scalar_one()
        audit.record(
            session,
            org,
            actor=actor,
            action="webhook.added",
            subject=f"webhook:{endpoint_id}",
            now=now,
            detail={"host": host_of(clean), "events": kinds},  # the host alone: see host_of
        )
        info = EndpointInfo(
            id=endpoint_id,
            url=clean,
            events=kinds,
            created_at=now,
            created_by=actor,
            last_status=None,
            last_attempt_at=None,
        )
        return NewEndpoint(info=info, secret=secret, endpoints=[*existing, info])


def remove_endpoint(
    db: Database, org_slack_id: str, actor: str, endpoint_id: int, now: datetime
) -> EndpointInfo:
    """Remove an endpoint at once: it is told nothing more (messages still owed to it are
    dropped when their turn comes), and its secret is forgotten. The caller has checked
    that ``actor`` is an admin. WebhookNotFound when it is not one of the organization's,
    or removed already."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        row = session.execute(_ONE_ENABLED, {"org": org.id, "endpoint": endpoint_id}).first()
        if row is None:
            raise WebhookNotFound("That endpoint is not in the list any more.")
        endpoint = _info(row)
        session.execute(_REMOVE, {"endpoint": endpoint.id, "now": now})
        audit.record(
            session,
            org,
            actor=actor,
            action="webhook.removed",
            subject=f"webhook:{endpoint.id}",
            now=now,
            detail={"host": endpoint.host},
        )
        return endpoint


def delivery_target(db: Database, org_slack_id: str, endpoint_id: int) -> Target | None:
    """Where a message for the organization's endpoint ``endpoint_id`` goes, with its
    secret; None when the endpoint was removed (its messages are dropped)."""
    with db.read() as session:
        row = session.execute(_TARGET, {"org": org_slack_id, "endpoint": endpoint_id}).first()
        return Target(id=row.id, url=row.url, secret=row.secret) if row else None


def record_attempt(db: Database, endpoint_id: int, status: str, now: datetime) -> None:
    """How the latest delivery to the endpoint went ("HTTP 200", "timeout"...), as its
    admins see it in the list."""
    with db.write() as session:
        session.execute(_ATTEMPTED, {"endpoint": endpoint_id, "status": status[:64], "now": now})
