"""Which audit events an organization's webhook endpoints are told of, and how: one outbox
message per endpoint that wants the event, queued in the transaction that records it.

:mod:`storage.audit` hands every event it appends to this module, whichever way it
appends it (``record``, ``record_all``, or the statements of a quick write), so no caller
has to remember. A message's payload is ``{"endpoint": id, "event": {...}}``, built by
the database from the event's parameters and the token's row (its owner, name, hint and
kind, whatever the audit event's detail holds). The event never holds a secret: the
endpoint's secret is read when the message is sent, to sign it.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel import Session

from storage.db import dialect_function
from storage.models import (
    Member,
    NoticeKind,
    Organization,
    OutboxMessage,
    OutboxStatus,
    ServiceUser,
    Token,
    TokenState,
    UTCDateTime,
    WebhookEndpoint,
)
from storage.tokenformat import TokenKind

ENDPOINT = WebhookEndpoint.__table__  # type: ignore[attr-defined]
OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
ORG = Organization.__table__  # type: ignore[attr-defined]
TOKEN = Token.__table__  # type: ignore[attr-defined]
MEMBER = Member.__table__  # type: ignore[attr-defined]
SERVICE = ServiceUser.__table__  # type: ignore[attr-defined]

TOKEN_CREATED = "token.created"
TOKEN_ROTATED = "token.rotated"
TOKEN_REVOKED = "token.revoked"
TOKEN_EXPIRED = "token.expired"
TOKEN_LEAKED = "token.leaked"
REQUEST_DECIDED = "request.decided"
EVENT_TYPES = (
    TOKEN_CREATED,
    TOKEN_ROTATED,
    TOKEN_REVOKED,
    TOKEN_EXPIRED,
    TOKEN_LEAKED,
    REQUEST_DECIDED,
)

# Audit actions about a token, as the endpoints hear of them: the event, and the token's
# state once it happened.
_TOKEN_EVENTS: dict[str, tuple[str, str]] = {
    "token.revoked": (TOKEN_REVOKED, TokenState.REVOKED),
    "token.expired": (TOKEN_EXPIRED, TokenState.EXPIRED),
    "token.rotated": (TOKEN_ROTATED, TokenState.ACTIVE),  # valid until its grace period ends
    "token.leaked": (TOKEN_LEAKED, TokenState.REVOKED),  # revoked at once (R19)
}
_DECISIONS = {"approval.approved": "approved", "approval.denied": "denied"}
NOT_DELIVERED = "not delivered"


def _token_event(action: str, detail: Mapping[str, Any]) -> tuple[str, str] | None:
    """The event type and state of an audit action about a token, or None."""
    kind = detail.get("kind")
    # A personal token exists for the outside world once it is valid: shown to its
    # owner. A service token, once an approver approved it (its request is decided).
    if action == "token.delivered" and kind == TokenKind.USER:
        return TOKEN_CREATED, TokenState.ACTIVE
    if action == "token.issued" and kind == TokenKind.SERVICE:
        return TOKEN_CREATED, TokenState.ACTIVE
    # A personal token never shown was never announced: its end is nobody's news.
    if kind == TokenKind.USER and detail.get("reason") == NOT_DELIVERED:
        return None
    return _TOKEN_EVENTS.get(action)


def hook_params(
    action: str, subject: str, actor: str, detail: Mapping[str, Any], now: datetime
) -> dict[str, Any] | None:
    """The parameters that queue the webhook messages of one audit event, or None when
    the endpoints are not told of such an event. Besides these, the statements take
    ``org`` (the organization's id) and ``at`` (``now``)."""
    about, _, ident = subject.partition(":")
    if not (ident.isascii() and ident.isdigit()):
        return None
    common = {
        "hook_id": "evt_" + uuid.uuid4().hex,  # the event's idempotency key
        "hook_at": now.astimezone(UTC).isoformat(),
    }
    if about == "token" and (found := _token_event(action, detail)) is not None:
        reason = detail.get("reason")
        return {
            **common,
            "hook_type": found[0],
            "hook_state": str(found[1]),
            "hook_reason": None if reason is None else str(reason),
            "hook_token": int(ident),
        }
    if about == "request" and action in _DECISIONS:
        data = {
            "request_id": int(ident),
            "decision": _DECISIONS[action],
            "decider": actor,
            "service_user": detail.get("service_user"),
            "token_id": detail.get("token"),  # the token issued, on approval
        }
        return {**common, "hook_type": REQUEST_DECIDED, "hook_data": json.dumps(data)}
    return None


# -- JSON built by the database ----------------------------------------------------------


# A JSON object of alternating keys and values.
_json_object = dialect_function("JsonObject", sa.JSON(), "json_object({})", "json_build_object({})")
# Text holding JSON, as a JSON value (to nest it in an object).
_json_text = dialect_function("JsonText", sa.JSON(), "json({})", "CAST({} AS JSON)")


def _object(**values: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    # The keys are this module's own words, never anyone's input.
    pairs = [
        part for key, value in values.items() for part in (sa.literal_column(f"'{key}'"), value)
    ]
    return _json_object(*pairs)


class _JsonListHas(sa.sql.functions.FunctionElement[bool]):
    """Whether a JSON list (the first argument) holds a string (the second)."""

    inherit_cache = True
    type = sa.Boolean()


@compiles(_JsonListHas)
def _json_list_has_sqlite(element: _JsonListHas, compiler: SQLCompiler, **kw: Any) -> str:
    items, wanted = (compiler.process(c, **kw) for c in element.clauses)
    # (Compiled SQL of the statement's own clauses: no text from anyone.)
    return f"EXISTS (SELECT 1 FROM json_each({items}) WHERE json_each.value = {wanted})"  # noqa: S608


@compiles(_JsonListHas, "postgresql")
def _json_list_has_postgresql(element: _JsonListHas, compiler: SQLCompiler, **kw: Any) -> str:
    items, wanted = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CAST({items} AS JSONB) @> jsonb_build_array({wanted}))"


# -- the statements ----------------------------------------------------------------------

_TOKEN_DATA = _object(
    token_id=TOKEN.c.id,
    name=TOKEN.c.name,
    hint=TOKEN.c.hint,
    kind=TOKEN.c.kind,
    # The member's Slack user id, or the service user's name (R4).
    owner=sa.func.coalesce(MEMBER.c.slack_user_id, SERVICE.c.name),
    state=sa.bindparam("hook_state", type_=sa.String),
    reason=sa.bindparam("hook_reason", type_=sa.String),
)
_ABOUT_TOKEN = (
    ENDPOINT.join(ORG, ORG.c.id == ENDPOINT.c.org_id)
    .join(
        TOKEN,
        (TOKEN.c.id == sa.bindparam("hook_token", type_=sa.Integer))
        & (TOKEN.c.org_id == ENDPOINT.c.org_id),
    )
    .outerjoin(MEMBER, MEMBER.c.id == TOKEN.c.member_id)
    .outerjoin(SERVICE, SERVICE.c.id == TOKEN.c.service_user_id)
)
_OTHER_DATA = _json_text(sa.bindparam("hook_data", type_=sa.String))
_ABOUT_OTHER = ENDPOINT.join(ORG, ORG.c.id == ENDPOINT.c.org_id)
_COLUMNS = ["org_id", "kind", "payload", "status", "attempts", "next_attempt_at", "created_at"]


def _queue(
    data: sa.ColumnElement[Any], source: sa.FromClause, condition: sa.ColumnElement[bool] | None
) -> sa.Executable:
    """One outbox message for each of the organization's endpoints that wants the event,
    if ``condition`` holds."""
    event = _object(
        id=sa.bindparam("hook_id", type_=sa.String),
        type=sa.bindparam("hook_type", type_=sa.String),
        created_at=sa.bindparam("hook_at", type_=sa.String),
        org=ORG.c.slack_id,
        data=data,
    )
    at = sa.bindparam("at", type_=UTCDateTime())
    listening = (
        ENDPOINT.c.org_id == sa.bindparam("org", type_=sa.Integer),
        ENDPOINT.c.disabled_at.is_(None),
        _JsonListHas(ENDPOINT.c.events, sa.bindparam("hook_type", type_=sa.String)),
    )
    rows = (
        sa.select(
            ENDPOINT.c.org_id,
            sa.literal(NoticeKind.WEBHOOK.value, sa.String),
            _object(endpoint=ENDPOINT.c.id, event=event),
            sa.literal(OutboxStatus.PENDING.value, sa.String),
            sa.literal(0, sa.Integer),
            at,
            at,
        )
        .select_from(source)
        .where(*listening, *([] if condition is None else [condition]))
        .order_by(ENDPOINT.c.id)
    )
    return sa.insert(OUTBOX).from_select(_COLUMNS, rows)


class Queuing:
    """The statements that queue an event's webhook messages, one for events about a
    token, one for the others; with a condition, for a quick write (see
    :func:`storage.audit.appending`)."""

    def __init__(self, condition: sa.ColumnElement[bool] | None = None) -> None:
        self.about_token = _queue(_TOKEN_DATA, _ABOUT_TOKEN, condition)
        self.about_other = _queue(_OTHER_DATA, _ABOUT_OTHER, condition)

    def statement(self, params: Mapping[str, Any]) -> sa.Executable | None:
        """The statement for an event's parameters; None when nobody is told of it."""
        if "hook_type" not in params:
            return None
        return self.about_token if "hook_token" in params else self.about_other


_QUEUING = Queuing()
_LISTENING = (
    sa.select(ENDPOINT.c.id)
    .where(ENDPOINT.c.org_id == sa.bindparam("org"), ENDPOINT.c.disabled_at.is_(None))
    .limit(1)
)


def queue(
    session: Session,
    org_id: int,
    events: Sequence[tuple[str, str, str, Mapping[str, Any]]],
    now: datetime,
) -> None:
    """Queue, in the caller's transaction, the webhook messages of ``events``, each an
    audit event appended now, as (action, subject, actor, detail)."""
    hooks = [p for a, s, actor, d in events if (p := hook_params(a, s, actor, d, now)) is not None]
    if not hooks or session.execute(_LISTENING, {"org": org_id}).first() is None:
        return  # the common case: one look at an index, then nothing
    for statement, run in itertools.groupby(hooks, _QUEUING.statement):
        assert statement is not None
        session.execute(statement, [{**params, "org": org_id, "at": now} for params in run])
