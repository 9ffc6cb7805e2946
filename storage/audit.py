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
    return check_chain(db, org_slack_id).broken is None


# -- reading the log: pages for admins, checks and exports for operators ----------------


@dataclass(frozen=True)
class Entry:
    """One event as it is shown or exported."""

    id: int
    org: str  # the organization's Slack id
    at: datetime
    actor: str  # a Slack user id, a service user's name, or SYSTEM
    action: str
    subject: str
    detail: dict[str, Any]
    prev_digest: str
    digest: str

    def exported(self) -> dict[str, Any]:
        """The event as one line of the export: ``at`` as its digest was taken over it."""
        content = _content_of(self.at, self.actor, self.action, self.subject, self.detail)
        return {
            "id": self.id,
            "org": self.org,
            **content,
            "prev_digest": self.prev_digest,
            "digest": self.digest,
        }


def _content_of(
    at: datetime, actor: str, action: str, subject: str, detail: dict[str, Any]
) -> dict[str, Any]:
    return {
        "at": at.astimezone(UTC).isoformat(),
        "actor": actor,
        "action": action,
        "subject": subject,
        "detail": detail,
    }


_ENTRY_COLUMNS = (
    _EVENT.c.id,
    _ORG.c.slack_id.label("org"),
    _EVENT.c.at,
    _EVENT.c.actor,
    _EVENT.c.action,
    _EVENT.c.subject,
    _EVENT.c.detail,
    _EVENT.c.prev_digest,
    _EVENT.c.digest,
)
_ENTRIES = sa.select(*_ENTRY_COLUMNS).select_from(_EVENT.join(_ORG, _EVENT.c.org_id == _ORG.c.id))


def _entry(row: Any) -> Entry:
    return Entry(**row._mapping)


@dataclass(frozen=True)
class Page:
    """A page of an organization's log, newest first: ``newer`` events come before it,
    ``older`` after it, and it starts after the ``position`` newest."""

    entries: list[Entry]
    total: int
    position: int
    newer: bool
    older: bool


PAGE_MAX = 100  # events on one page


def page(
    db: Database,
    org_slack_id: str,
    size: int,
    *,
    before: int | None = None,
    after: int | None = None,
) -> Page:
    """``size`` events of the organization (at most PAGE_MAX), newest first: the newest of
    all, or those just older than the event ``before``, or just newer than the event
    ``after``. Ids give the log's order, so a page stays put as new events arrive."""
    size = max(1, min(size, PAGE_MAX))
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return Page([], 0, 0, newer=False, older=False)
        query = _ENTRIES.where(_EVENT.c.org_id == org.id)
        newest = query.order_by(_EVENT.c.id.desc()).limit(size)
        if after is not None:
            ascending = query.where(_EVENT.c.id > after).order_by(_EVENT.c.id).limit(size)
            entries = [_entry(row) for row in session.execute(ascending)][::-1]
        else:
            older_than = newest if before is None else newest.where(_EVENT.c.id < before)
            entries = [_entry(row) for row in session.execute(older_than)]
        if not entries and (before, after) != (None, None):
            # A position past either end (an old or forged button): the newest page.
            entries = [_entry(row) for row in session.execute(newest)]

        def count(*where: sa.ColumnElement[bool]) -> int:
            counted = sa.select(sa.func.count()).where(_EVENT.c.org_id == org.id, *where)
            return int(session.execute(counted).scalar_one())

        total = count()
        if not entries:
            return Page([], total, 0, newer=False, older=False)
        newer = count(_EVENT.c.id > entries[0].id)
        older = count(_EVENT.c.id < entries[-1].id)
        return Page(entries, total, newer, newer=newer > 0, older=older > 0)


def organizations(db: Database) -> list[str]:
    """The Slack ids of every organization tokenbot knows, in the order it met them."""
    with db.read() as session:
        return list(session.execute(sa.select(_ORG.c.slack_id).order_by(_ORG.c.id)).scalars())


@dataclass(frozen=True)
class Break:
    """The first event at which an organization's chain does not hold, and how:
    ``changed`` (its content or digest is not what was chained), ``deleted`` (an event
    before it is missing; with ``newest``, the events after it, the last one left, are),
    ``reordered`` (it follows an event other than the one before it: events were swapped
    or moved)."""

    how: str
    id: int | None  # None: no event is left at all, though some were chained
    action: str | None
    position: int  # 1 for the organization's first event
    newest: bool = False

    def __str__(self) -> str:
        if self.id is None:
            return "every event was deleted: the log is empty, but its head says otherwise"
        what = f"event {self.id} ({self.action}, position {self.position})"
        if self.how == "changed":
            return f"{what} was changed: its digest does not match its content"
        if self.how == "reordered":
            return f"{what} is out of order: it was chained after another event (swapped or moved)"
        if self.newest:
            return f"the events after {what}, the last one left, were deleted"
        return f"{what} follows an event that was deleted"


@dataclass(frozen=True)
class ChainCheck:
    org: str
    events: int  # how many events the organization's log holds
    broken: Break | None  # None: the chain holds


_CHAIN = sa.select(
    _EVENT.c.id,
    _EVENT.c.at,
    _EVENT.c.actor,
    _EVENT.c.action,
    _EVENT.c.subject,
    _EVENT.c.detail,
    _EVENT.c.prev_digest,
    _EVENT.c.digest,
)
_DIGEST_OF_ORG = sa.select(_EVENT.c.id).where(
    _EVENT.c.org_id == sa.bindparam("org"), _EVENT.c.digest == sa.bindparam("digest")
)


def check_chain(db: Database, org_slack_id: str) -> ChainCheck:
    """Check the organization's whole chain, oldest first, and say where it first breaks:
    each event's ``prev_digest`` must be the digest of the event before it (64 zeros for
    the first), its digest the SHA-256 of that and its content, and the organization's
    head the digest of its last event. Read in batches: the log may be long."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return ChainCheck(org_slack_id, 0, None)
        prev, position, last = GENESIS_DIGEST, 0, None
        rows = session.execute(
            _CHAIN.where(_EVENT.c.org_id == org.id).order_by(_EVENT.c.id),
            execution_options={"yield_per": 1000},
        )
        for row in rows:
            position += 1
            content = _content_of(row.at, row.actor, row.action, row.subject, row.detail)
            if row.prev_digest != prev:
                follows = session.execute(
                    _DIGEST_OF_ORG, {"org": org.id, "digest": row.prev_digest}
                ).first()
                if follows is not None:
                    how = "reordered"
                elif _event_digest(row.prev_digest, content) == row.digest:
                    how = "deleted"  # it follows an event that is not there any more
                else:
                    how = "changed"
                rows.close()
                broken = Break(how, row.id, row.action, position)
                return ChainCheck(org_slack_id, _count(session, org.id), broken)
            if _event_digest(prev, content) != row.digest:
                rows.close()
                broken = Break("changed", row.id, row.action, position)
                return ChainCheck(org_slack_id, _count(session, org.id), broken)
            prev, last = row.digest, (row.id, row.action)
        if org.audit_head != prev:  # the newest events are gone
            if last is None:
                return ChainCheck(org_slack_id, 0, Break("deleted", None, None, 0))
            newest = Break("deleted", last[0], last[1], position, newest=True)
            return ChainCheck(org_slack_id, position, newest)
        return ChainCheck(org_slack_id, position, None)


def _count(session: Session, org_id: int) -> int:
    counted = sa.select(sa.func.count()).where(_EVENT.c.org_id == org_id)
    return int(session.execute(counted).scalar_one())


def export(
    db: Database,
    org_slack_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Entry]:
    """The events of one organization (or of all), oldest first, from ``since``
    (included) to ``until`` (excluded), digests included: what the chain can be checked
    with outside tokenbot. Read in batches: the log may be long."""
    query = _ENTRIES
    if org_slack_id is not None:
        query = query.where(_ORG.c.slack_id == org_slack_id)
    if since is not None:
        query = query.where(_EVENT.c.at >= since)
    if until is not None:
        query = query.where(_EVENT.c.at < until)
    with db.read() as session:
        rows = session.execute(
            query.order_by(_EVENT.c.org_id, _EVENT.c.id), execution_options={"yield_per": 1000}
        )
        for row in rows:
            yield _entry(row)


def export_jsonl(db: Database, org_slack_id: str) -> Iterator[str]:
    """The organization's log as JSON lines, digests included."""
    for entry in export(db, org_slack_id):
        yield json.dumps(entry.exported(), sort_keys=True, ensure_ascii=False)
