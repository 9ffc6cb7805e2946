"""Members' cached Slack profiles (R1) and deactivation (R17)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from storage import approvals, audit, outbox, services
from storage.approvals import RequestInfo
from storage.db import Database, invalidates
from storage.models import ROLES, Token, TokenState
from storage.orgs import MEMBER, ensure_member, find_org, lock_org
from storage.tokenformat import TokenKind
from storage.tokens import TOKEN_INFO_COLUMNS, TokenInfo, end_token, token_info

TOKEN = Token.__table__  # type: ignore[attr-defined]

_ACTIVE_USER_TOKENS = sa.select(*TOKEN_INFO_COLUMNS).where(
    TOKEN.c.member_id == sa.bindparam("member"),
    TOKEN.c.kind == TokenKind.USER,
    TOKEN.c.state == TokenState.ACTIVE,
)
_SAVE = sa.update(MEMBER).where(MEMBER.c.id == sa.bindparam("member_id"))
_BEFORE = sa.select(MEMBER.c.deleted, MEMBER.c.role, MEMBER.c.groups, MEMBER.c.display_name).where(
    MEMBER.c.id == sa.bindparam("member_id")
)


@dataclass(frozen=True)
class Profile:
    """What tokenbot keeps of a Slack user. ``groups`` None means "not known": the stored
    groups are kept."""

    user_id: str
    display_name: str | None
    role: str
    deleted: bool
    groups: list[str] | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}")


@dataclass(frozen=True)
class Synced:
    revoked: list[TokenInfo]  # user tokens revoked because the member was deactivated
    newly_deactivated: bool
    cancelled: list[RequestInfo] = field(default_factory=list)  # their pending requests
    # Service users left with no active owner by this deactivation, for the admins (R17).
    orphaned: list[str] = field(default_factory=list)


def sync_member(db: Database, org_slack_id: str, profile: Profile, now: datetime) -> Synced:
    """Store the member's profile; it counts as fetched at ``now`` only when it comes
    with the member's groups. A member found deactivated loses their user tokens at
    once, with reason "owner deactivated", and their pending requests (R17); service
    tokens are not touched, and the service users they solely owned are reported to the
    admins through the outbox (once: on the change to deactivated)."""
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        member = ensure_member(session, org.id, profile.user_id, now)
        before = session.execute(_BEFORE, {"member_id": member}).one()
        was_deleted = bool(before.deleted)
        if (
            profile.deleted != was_deleted
            or profile.role != before.role
            or profile.display_name != before.display_name
            or (profile.groups is not None and profile.groups != list(before.groups or []))
        ):
            invalidates(session)  # what the member's tokens carry has changed (R1)
        values: dict[str, object] = {
            "member_id": member,
            "display_name": profile.display_name,
            "role": profile.role,
            "deleted": profile.deleted,
        }
        if profile.groups is not None:
            # Fresh means role *and* groups: without the groups, the stored ones stay,
            # and so does the age that says when they were last fetched.
            values["groups"] = profile.groups
            values["profile_at"] = now
        session.execute(
            _SAVE.values({k: sa.bindparam(k) for k in values if k != "member_id"}), values
        )
        revoked: list[TokenInfo] = []
        if profile.deleted:
            for row in session.execute(_ACTIVE_USER_TOKENS, {"member": member}).all():
                revoked.append(
                    end_token(
                        session,
                        org,
                        token_info(row),
                        TokenState.REVOKED,
                        "owner deactivated",
                        audit.SYSTEM,
                        now,
                    )
                )
        cancelled = (
            approvals.cancel_pending_of(session, org, member, now) if profile.deleted else []
        )
        orphaned: list[str] = []
        if profile.deleted and not was_deleted:
            orphaned = services.solely_owned(session, member)
            if orphaned:
                outbox.queue_ownerless_report(session, org, profile.user_id, orphaned, now)
            audit.record(
                session,
                org,
                actor=audit.SYSTEM,
                action="member.deactivated",
                subject=f"member:{profile.user_id}",
                now=now,
                detail={"revoked_tokens": len(revoked), "sole_owner_of": orphaned},
            )
        return Synced(
            revoked=revoked,
            newly_deactivated=profile.deleted and not was_deleted,
            cancelled=cancelled,
            orphaned=orphaned,
        )


def known_members(db: Database, org_slack_id: str) -> dict[str, bool]:
    """Slack user id → deleted flag, for every member tokenbot knows in the organization."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        if org is None:
            return {}
        query = sa.select(MEMBER.c.slack_user_id, MEMBER.c.deleted).where(MEMBER.c.org_id == org.id)
        rows = session.execute(query)
        return {row.slack_user_id: row.deleted for row in rows}
