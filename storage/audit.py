"""The audit log: append-only, chained by digest per organization (R27)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from storage import webhook_events
from storage.db import Database, Query, sha256_hex
from storage.models import GENESIS_DIGEST, AuditEvent, Organization, UTCDateTime
from storage.orgs import LockedOrg, find_org

SYSTEM = "system"
_EVENT = AuditEvent.__table__  # type: ignore[attr-defined]
_ORG = Organization.__table__  # type: ignore[attr-defined]
# Built once, with named parameters: building statements per call costs more than
# running them.
_INSERT_EVENT = sa.insert(_EVENT)
_ADVANCE_HEAD = sa.update(_ORG).where(_ORG.c.id == sa.bindparam("org"))


def _canonical(event: dict[str, Any]) -> str:
    """The text an event's digest is taken over, after the digest of the one before it."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _event_digest(prev_digest: str, event: dict[str, Any]) -> str:
    return hashlib.sha256((prev_digest + _canonical(event)).encode("utf-8")).hexdigest()


def _new_content(
    actor: str, action: str, subject: str, now: datetime, detail: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "at": now.astimezone(UTC).isoformat(),
        "actor": actor,
        "action": action,
        "subject": subject,
        "detail": detail or {},
    }


def _content(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at.astimezone(UTC).isoformat(),
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "detail": event.detail,
    }


def record(
    session: Session,
    org: LockedOrg,
    *,
    actor: str,
    action: str,
    subject: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> str:
    """Append an event and return its digest. ``org`` must be locked by this
    transaction (``lock_org``), which keeps the chain from forking.

    ``detail`` must never hold a secret: callers pass names and hints only.
    """
    content = _new_content(actor, action, subject, now, detail)
    digest = _event_digest(org.audit_head, content)
    event = {**content, "at": now, "org_id": org.id, "prev_digest": org.audit_head}
    session.execute(_INSERT_EVENT, {**event, "digest": digest})
    session.execute(_ADVANCE_HEAD, {"org": org.id, "audit_head": digest})
    org.audit_head = digest
    webhook_events.queue(session, org.id, [(action, subject, actor, detail or {})], now)
    return digest


@dataclass(frozen=True)
class NewEvent:
    """An event to append with :func:`record_all`."""

    actor: str
    action: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)


def record_all(
    session: Session, org: LockedOrg, events: Sequence[NewEvent], now: datetime
) -> list[str]:
    """Append ``events`` in their order, as :func:`record` would one after the other,
    with one insert and one move of the head; return their digests. ``org`` must be
    locked by this transaction, as for :func:`record`.

    ``detail`` must never hold a secret: callers pass names and hints only.
    """
    rows: list[dict[str, Any]] = []
    head = org.audit_head
    for event in events:
        content = _new_content(event.actor, event.action, event.subject, now, event.detail)
        digest = _event_digest(head, content)
        rows.append({**content, "at": now, "org_id": org.id, "prev_digest": head, "digest": digest})
        head = digest
    if rows:
        # One statement for the lot; the ids, which order the chain, follow the rows'
        # order, and nothing else can be appended meanwhile as the organization is locked.
        session.execute(_INSERT_EVENT, rows)
        session.execute(_ADVANCE_HEAD, {"org": org.id, "audit_head": head})
        org.audit_head = head
        told = [(e.action, e.subject, e.actor, e.detail) for e in events]
        webhook_events.queue(session, org.id, told, now)
    return [row["digest"] for row in rows]


# An event appended by a quick write (storage.db.Statements.write), which cannot read the
# head between its statements: the database takes the digest, over the head it finds
# under the organization's lock and the event's canonical text, given as "content". The
# event's id comes from the database, under that lock, so ids keep the chain's order.
_APPENDED_DIGEST = sha256_hex(_ORG.c.audit_head + sa.bindparam("content", type_=sa.String))
_APPENDED_VALUES = sa.select(
    _ORG.c.id,
    sa.bindparam("at", type_=UTCDateTime()),
    sa.bindparam("actor", type_=sa.String),
    sa.bindparam("action", type_=sa.String),
    sa.bindparam("subject", type_=sa.String),
    sa.bindparam("detail", type_=sa.JSON),
    _ORG.c.audit_head,
    _APPENDED_DIGEST,
)
_APPENDED_COLUMNS = (
    "org_id",
    "at",
    "actor",
    "action",
    "subject",
    "detail",
    "prev_digest",
    "digest",
)


class Appending:
    """The statements of a quick write that append an event to its organization's chain
    if a condition holds (:func:`appending`)."""

    def __init__(self, condition: sa.ColumnElement[bool]) -> None:
        where = (_ORG.c.id == sa.bindparam("org"), condition)
        self.event = sa.insert(_EVENT).from_select(
            _APPENDED_COLUMNS, _APPENDED_VALUES.where(*where)
        )
        self.head = sa.update(_ORG).where(*where).values(audit_head=_APPENDED_DIGEST)
        self.webhooks = webhook_events.Queuing(condition)

    def queries(self, params: dict[str, Any]) -> list[Query]:
        """The queries that append one event: :func:`appended`'s parameters, with those
        of the condition. The event, then the new head, each taking the digest from the
        head as it was; then what the organization's webhook endpoints are owed of it."""
        queries = [Query(self.event, params), Query(self.head, params)]
        if (webhooks := self.webhooks.statement(params)) is not None:
            queries.append(Query(webhooks, params))
        return queries


def appending(condition: sa.ColumnElement[bool]) -> Appending:
    """The statements of a quick write that append an event to its organization's chain
    if ``condition`` holds, to run with :meth:`Appending.queries`. The write locks the
    organization first, and nothing between them may change what ``condition`` reads."""
    return Appending(condition)


def appended(
    org_id: int,
    *,
    actor: str,
    action: str,
    subject: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters of :func:`appending`'s statements for one event: the same event,
    chained the same way, and owed to the same webhook endpoints, as :func:`record`
    appends. ``detail`` never holds a secret."""
    content = _new_content(actor, action, subject, now, detail)
    hooks = webhook_events.hook_params(action, subject, actor, content["detail"], now)
    return {
        **(hooks or {}),
        "org": org_id,
        "at": now,
        "actor": actor,
        "action": action,
        "subject": subject,
        "detail": content["detail"],
        "content": _canonical(content),
    }


def events(db: Database, org_slack_id: str) -> list[AuditEvent]:
    """All events of an organization, oldest first."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return []
        query = select(AuditEvent).where(AuditEvent.org_id == org.id).order_by(col(AuditEvent.id))
        return list(session.exec(query))


def verify_chain(db: Database, org_slack_id: str) -> bool:
    """True when every event's digest matches its content and the one before it."""
    prev = GENESIS_DIGEST
    for event in events(db, org_slack_id):
        if event.prev_digest != prev or _event_digest(prev, _content(event)) != event.digest:
            return False
        prev = event.digest
    return True


def export_jsonl(db: Database, org_slack_id: str) -> Iterator[str]:
    """The organization's log as JSON lines, digests included."""
    for event in events(db, org_slack_id):
        yield json.dumps(
            {**_content(event), "prev_digest": event.prev_digest, "digest": event.digest},
            sort_keys=True,
            ensure_ascii=False,
        )
