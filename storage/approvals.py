"""Service users and the approval of their tokens (R2-R5, R8, R20-R25).

A request moves out of ``pending`` in one conditional write while the organization is
locked, so of any number of concurrent or repeated decisions the first wins and at most
one token is minted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from storage import audit
from storage.db import Database
from storage.errors import AlreadyDecided, CapReached, InvalidField, NotAllowed, RequestNotFound
from storage.models import (
    DEFAULT_SCOPE_CATALOGUE,
    ApprovalMessage,
    ApprovalRequest,
    RequestState,
    ServiceOwner,
    ServiceUser,
    Token,
)
from storage.orgs import (
    MEMBER,
    ORG,
    LockedOrg,
    ensure_member,
    find_org,
    insert_ignore,
    lock_org,
)
from storage.tokenformat import TokenKind
from storage.tokens import (
    TOKEN_INFO_COLUMNS,
    IssuedToken,
    end_overdue,
    holds_its_place,
    insert_token,
    name_key,
    token_info,
)

REQUEST = ApprovalRequest.__table__  # type: ignore[attr-defined]
SERVICE = ServiceUser.__table__  # type: ignore[attr-defined]
OWNER = ServiceOwner.__table__  # type: ignore[attr-defined]
TOKEN = Token.__table__  # type: ignore[attr-defined]
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{1,38}[a-z0-9]")
PURPOSE_MAX, JUSTIFICATION_MAX, REASON_MAX = 500, 1000, 1000


@dataclass(frozen=True)
class RequestInfo:
    id: int
    org: str
    requester: str  # a Slack user id
    service_user_id: int | None  # None: the request is for a new service user
    name: str
    purpose: str
    scopes: list[str]
    justification: str
    state: str
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    created_at: datetime
    expires_at: datetime
    response_url: str | None = None
    channel_id: str | None = None


@dataclass(frozen=True)
class Decision:
    request: RequestInfo
    issued: IssuedToken | None  # the new token, on approval (shown once to the requester)
    # Why an approval could not be carried out and the request was closed instead: one
    # sentence for the approver.
    refusal: str | None = None


def validate_service_name(raw: str | None) -> str:
    """A service user's name: a lowercase slug of 3 to 40 characters."""
    name = (raw or "").strip()
    if not SERVICE_NAME.fullmatch(name):
        raise InvalidField(
            "name",
            "Use 3 to 40 characters: lowercase letters, digits and hyphens, starting "
            "with a letter (for example ci-deployer).",
        )
    return name


def _text(field: str, raw: str | None, limit: int, what: str) -> str:
    text = (raw or "").strip()
    if not text:
        raise InvalidField(field, f"Say {what}.")
    if len(text) > limit:
        raise InvalidField(field, f"Use at most {limit} characters (this has {len(text)}).")
    return text


_REQUEST_COLUMNS = (
    REQUEST.c.id,
    ORG.c.slack_id.label("org"),
    MEMBER.c.slack_user_id.label("requester"),
    REQUEST.c.service_user_id,
    REQUEST.c.name,
    REQUEST.c.purpose,
    REQUEST.c.scopes,
    REQUEST.c.justification,
    REQUEST.c.state,
    REQUEST.c.decided_by,
    REQUEST.c.decided_at,
    REQUEST.c.reason,
    REQUEST.c.created_at,
    REQUEST.c.expires_at,
    REQUEST.c.response_url,
    REQUEST.c.channel_id,
)
_REQUEST = (
    sa.select(*_REQUEST_COLUMNS)
    .select_from(
        REQUEST.join(ORG, REQUEST.c.org_id == ORG.c.id).join(
            MEMBER, REQUEST.c.requester_id == MEMBER.c.id
        )
    )
    .where(REQUEST.c.id == sa.bindparam("request"), REQUEST.c.org_id == sa.bindparam("org"))
)
_SERVICE_BY_NAME = sa.select(SERVICE.c.id, SERVICE.c.scopes).where(
    SERVICE.c.org_id == sa.bindparam("org"), SERVICE.c.name == sa.bindparam("name")
)
_IS_OWNER = sa.select(OWNER.c.member_id).where(
    OWNER.c.service_user_id == sa.bindparam("service"), OWNER.c.member_id == sa.bindparam("member")
)
_ACTIVE_SERVICE_TOKENS = (
    sa.select(*TOKEN_INFO_COLUMNS)
    .where(
        TOKEN.c.org_id == sa.bindparam("org"),
        TOKEN.c.kind == TokenKind.SERVICE,
        holds_its_place(),  # one a rotation replaced counts no more (R18)
        TOKEN.c.cutoff_at > sa.bindparam("now"),
    )
    .order_by(TOKEN.c.created_at, TOKEN.c.id)
)


def _request(session: Session, org: LockedOrg, request_id: int, lock: bool = False) -> RequestInfo:
    query = _REQUEST.with_for_update(of=REQUEST) if lock else _REQUEST
    row = session.execute(query, {"request": request_id, "org": org.id}).first()
    if row is None:
        raise RequestNotFound("That request does not exist in this workspace.")
    return RequestInfo(**row._mapping)


def request_service_token(
    db: Database,
    org_slack_id: str,
    requester: str,
    *,
    name: str | None,
    purpose: str | None,
    scopes: list[str],
    justification: str | None,
    now: datetime,
    response_url: str | None = None,
    channel_id: str | None = None,
) -> RequestInfo:
    """Ask for a token for the service user ``name``: an existing one the requester owns
    (its permissions stay as they are), or a new one with ``purpose`` and ``scopes`` from
    the organization's catalogue. Raises InvalidField naming the field at fault, also when
    the requester already has as many pending requests as the organization allows."""
    slug = validate_service_name(name)
    why = _text("justification", justification, JUSTIFICATION_MAX, "why the token is needed")
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        member = ensure_member(session, org.id, requester, now)
        _check_pending_cap(session, org, member, now)
        existing = session.execute(_SERVICE_BY_NAME, {"org": org.id, "name": slug}).first()
        if existing is not None:
            if (
                session.execute(_IS_OWNER, {"service": existing.id, "member": member}).first()
                is None
            ):
                raise InvalidField(
                    "name",
                    f"The service user {slug} exists and you are not "
                    "one of its owners: ask one of them.",
                )
            service_id, granted, what = existing.id, list(existing.scopes), (purpose or "")
        else:
            what = _text("purpose", purpose, PURPOSE_MAX, "what the service user is for")
            catalogue = session.execute(
                sa.select(ORG.c.scope_catalogue).where(ORG.c.id == org.id)
            ).scalar_one()
            unknown = sorted(set(scopes) - set(catalogue))
            if not scopes or unknown:
                raise InvalidField(
                    "scopes",
                    "Choose at least one permission from the list."
                    if not scopes
                    else f"Not in the catalogue: {', '.join(unknown)}.",
                )
            service_id, granted = None, sorted(set(scopes))
        ttl = session.execute(
            sa.select(ORG.c.request_ttl_days).where(ORG.c.id == org.id)
        ).scalar_one()
        request_id = session.execute(
            sa.insert(REQUEST).returning(REQUEST.c.id),
            {
                "org_id": org.id,
                "requester_id": member,
                "service_user_id": service_id,
                "name": slug,
                "purpose": what,
                "scopes": granted,
                "justification": why,
                "state": RequestState.PENDING,
                "created_at": now,
                "expires_at": now + timedelta(days=ttl),
                "response_url": response_url,
                "channel_id": channel_id,
            },
        ).scalar_one()
        audit.record(
            session,
            org,
            actor=requester,
            action="approval.requested",
            subject=f"request:{request_id}",
            now=now,
            detail={"service_user": slug, "scopes": granted, "new": service_id is None},
        )
        return _request(session, org, request_id)


_PENDING_COUNT = sa.select(sa.func.count()).where(
    REQUEST.c.requester_id == sa.bindparam("member"),
    REQUEST.c.state == RequestState.PENDING,
    REQUEST.c.expires_at > sa.bindparam("now"),  # past its time, it no longer waits
)


def _check_pending_cap(session: Session, org: LockedOrg, member: int, now: datetime) -> None:
    """InvalidField when the member already has the most pending requests allowed; the
    organization is locked, so concurrent requests cannot pass it together."""
    cap = session.execute(
        sa.select(ORG.c.pending_request_cap).where(ORG.c.id == org.id)
    ).scalar_one()
    waiting = session.execute(_PENDING_COUNT, {"member": member, "now": now}).scalar_one()
    if waiting >= cap:
        raise InvalidField(
            "name",
            f"You already have {waiting} requests waiting for a decision, and the limit is "
            f"{cap} per member. Cancel one, or wait for a decision, before asking again.",
        )


def _settle(
    session: Session,
    request: RequestInfo,
    state: RequestState,
    actor: str,
    now: datetime,
    reason: str | None = None,
    token_id: int | None = None,
) -> None:
    """Move a pending request to ``state``; AlreadyDecided if it is not pending any more."""
    moved = session.execute(
        sa.update(REQUEST)
        .where(REQUEST.c.id == request.id, REQUEST.c.state == RequestState.PENDING)
        .values(state=state, decided_by=actor, decided_at=now, reason=reason, token_id=token_id)
    ).rowcount  # type: ignore[attr-defined]
    if not moved:
        raise AlreadyDecided(f"This request is already {request.state}.")


def cancel_request(
    db: Database, org_slack_id: str, requester: str, request_id: int, now: datetime
) -> RequestInfo:
    """The requester withdraws a pending request (R25)."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        request = _request(session, org, request_id, lock=True)
        if request.requester != requester:
            raise NotAllowed("Only the member who asked can cancel a request.")
        if request.state != RequestState.PENDING:
            raise AlreadyDecided(f"This request is already {request.state}.")
        _settle(session, request, RequestState.CANCELLED, requester, now)
        audit.record(
            session,
            org,
            actor=requester,
            action="approval.cancelled",
            subject=f"request:{request.id}",
            now=now,
            detail={"service_user": request.name},
        )
        return _request(session, org, request_id)


def decide(
    db: Database,
    org_slack_id: str,
    request_id: int,
    approver: str,
    *,
    approve: bool,
    reason: str | None,
    now: datetime,
) -> Decision:
    """Approve or deny a pending request; the first decision wins (R22).

    The caller has checked the approver's standing in Slack at click time (R21); here a
    requester can never decide their own request, a denial needs a reason (R23), and an
    approval mints the service token within the organization's cap (R8, R24). Raises
    AlreadyDecided, NotAllowed, InvalidField or CapReached; nothing changes when it does.

    A request for a new service user whose name another service user took meanwhile can
    never be approved as asked: it is closed (cancelled, with the reason) and the
    Decision carries no token and a ``refusal`` for the approver.
    """
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        request = _request(session, org, request_id, lock=True)
        if request.state != RequestState.PENDING:
            raise AlreadyDecided(f"This request is already {request.state}.")
        if request.requester == approver:
            raise NotAllowed("You cannot decide on your own request.")
        if not approve:
            why = _text("reason", reason, REASON_MAX, "why the request is denied")
            _settle(session, request, RequestState.DENIED, approver, now, reason=why)
            audit.record(
                session,
                org,
                actor=approver,
                action="approval.denied",
                subject=f"request:{request.id}",
                now=now,
                detail={"service_user": request.name, "reason": why},
            )
            return Decision(_request(session, org, request_id), None)
        if request.service_user_id is None and (
            session.execute(_SERVICE_BY_NAME, {"org": org.id, "name": request.name}).first()
        ):
            return _close_as_taken(session, org, request, approver, now)
        issued = _mint_service_token(session, org, request, approver, now)
        _settle(session, request, RequestState.APPROVED, approver, now, token_id=issued.info.id)
        audit.record(
            session,
            org,
            actor=approver,
            action="approval.approved",
            subject=f"request:{request.id}",
            now=now,
            detail={"service_user": request.name, "token": issued.info.id},
        )
        return Decision(_request(session, org, request_id), issued)


def _close_as_taken(
    session: Session, org: LockedOrg, request: RequestInfo, approver: str, now: datetime
) -> Decision:
    reason = f"the name {request.name} was given to another service user meanwhile"
    _settle(session, request, RequestState.CANCELLED, audit.SYSTEM, now, reason=reason)
    audit.record(
        session,
        org,
        actor=approver,
        action="approval.cancelled",
        subject=f"request:{request.id}",
        now=now,
        detail={"service_user": request.name, "reason": reason},
    )
    return Decision(
        _request(session, org, request.id),
        None,
        refusal=f"This request cannot be approved: the name {request.name} was given to "
        "another service user since it was made. It is now closed, and the requester is "
        "told to ask again with another name.",
    )


def _mint_service_token(
    session: Session, org: LockedOrg, request: RequestInfo, approver: str, now: datetime
) -> IssuedToken:
    active = [
        token_info(r) for r in session.execute(_ACTIVE_SERVICE_TOKENS, {"org": org.id, "now": now})
    ]
    if len(active) >= org.service_token_cap:
        raise CapReached(cap=org.service_token_cap, active=active, per="organization")
    service_id = request.service_user_id
    if service_id is None:  # the request creates the service user, owned by its requester
        service_id = session.execute(
            sa.insert(SERVICE).returning(SERVICE.c.id),
            {
                "org_id": org.id,
                "name": request.name,
                "purpose": request.purpose,
                "scopes": request.scopes,
                "created_at": now,
            },
        ).scalar_one()
        requester = ensure_member(session, org.id, request.requester, now)
        session.execute(sa.insert(OWNER), {"service_user_id": service_id, "member_id": requester})
    else:
        end_overdue(session, org, now, service_user=service_id)
    taken = {name_key(t.name) for t in active}
    token_name = (
        request.name if name_key(request.name) not in taken else f"{request.name}-{request.id}"
    )
    return insert_token(
        session,
        org,
        TokenKind.SERVICE,
        token_name,
        approver,
        now,
        service_user=service_id,
        detail={"service_user": request.name, "request": request.id},
    )


MESSAGE = ApprovalMessage.__table__  # type: ignore[attr-defined]


def get_request(db: Database, org_slack_id: str, request_id: int) -> RequestInfo:
    """The organization's request ``request_id``, or RequestNotFound."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            raise RequestNotFound("That request does not exist in this workspace.")
        return _request(session, org, request_id)


def scope_catalogue(db: Database, org_slack_id: str) -> list[str]:
    """The permissions a service user of the organization may be given."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return list(DEFAULT_SCOPE_CATALOGUE)
        query = sa.select(ORG.c.scope_catalogue).where(ORG.c.id == org.id)
        return list(session.execute(query).scalar_one())


def add_message(db: Database, request_id: int, channel: str, ts: str) -> None:
    """Remember a copy of the request's message, to update it when the request is decided."""
    with db.write() as session:
        insert_ignore(session, MESSAGE, {"request_id": request_id, "channel": channel, "ts": ts})


def messages(db: Database, request_id: int) -> list[tuple[str, str]]:
    """Every copy of the request's message, as (channel, ts)."""
    with db.read() as session:
        query = sa.select(MESSAGE.c.channel, MESSAGE.c.ts).where(MESSAGE.c.request_id == request_id)
        return [(row.channel, row.ts) for row in session.execute(query)]


_DUE_REQUESTS = (
    sa.select(REQUEST.c.id, REQUEST.c.org_id)
    .where(REQUEST.c.state == RequestState.PENDING, REQUEST.c.expires_at <= sa.bindparam("now"))
    .order_by(REQUEST.c.org_id, REQUEST.c.id)
)
_PENDING_OF = sa.select(REQUEST.c.id).where(
    REQUEST.c.requester_id == sa.bindparam("member"), REQUEST.c.state == RequestState.PENDING
)


def _close(
    session: Session,
    org: LockedOrg,
    request_id: int,
    state: RequestState,
    reason: str,
    now: datetime,
) -> RequestInfo:
    request = _request(session, org, request_id, lock=True)
    _settle(session, request, state, audit.SYSTEM, now, reason=reason)
    audit.record(
        session,
        org,
        actor=audit.SYSTEM,
        action=f"approval.{state}",
        subject=f"request:{request_id}",
        now=now,
        detail={"service_user": request.name, "reason": reason},
    )
    return _request(session, org, request_id)


def expire_requests(db: Database, now: datetime) -> list[RequestInfo]:
    """Pending requests past their time (7 days by default) expire (R25)."""
    with db.read() as session:
        due = session.execute(_DUE_REQUESTS, {"now": now}).all()
    expired = []
    for row in due:
        with db.write() as session:
            slack_id = session.execute(
                sa.select(ORG.c.slack_id).where(ORG.c.id == row.org_id)
            ).scalar_one()
            org = lock_org(session, slack_id, now)
            try:
                expired.append(
                    _close(session, org, row.id, RequestState.EXPIRED, "no decision in time", now)
                )
            except AlreadyDecided:
                continue  # decided meanwhile
    return expired


def cancel_pending_of(
    session: Session, org: LockedOrg, member: int, now: datetime
) -> list[RequestInfo]:
    """Cancel a deactivated member's pending requests (R17), in the caller's transaction."""
    return [
        _close(session, org, request_id, RequestState.CANCELLED, "requester deactivated", now)
        for request_id in session.execute(_PENDING_OF, {"member": member}).scalars().all()
    ]


def pending_requests(db: Database, org_slack_id: str) -> list[RequestInfo]:
    """The organization's pending requests, oldest first."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return []
        query = (
            sa.select(*_REQUEST_COLUMNS)
            .select_from(
                REQUEST.join(ORG, REQUEST.c.org_id == ORG.c.id).join(
                    MEMBER, REQUEST.c.requester_id == MEMBER.c.id
                )
            )
            .where(REQUEST.c.org_id == org.id, REQUEST.c.state == RequestState.PENDING)
            .order_by(REQUEST.c.created_at, REQUEST.c.id)
        )
        return [RequestInfo(**row._mapping) for row in session.execute(query)]
