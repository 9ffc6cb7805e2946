"""SQLModel tables. Times are stored in UTC and always read back timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

GENESIS_DIGEST = "0" * 64
DEFAULT_USER_TOKEN_CAP = 10  # R7
DEFAULT_SERVICE_TOKEN_CAP = 20  # R8
DEFAULT_INACTIVITY_DAYS = 30  # R11
DEFAULT_REMINDER_DAYS = [7, 1]  # R12: days before the cutoff
DEFAULT_ROTATION_GRACE_HOURS = 24  # R18: how long a rotated token keeps working
# R1: what a member's user tokens may do, by the member's current Slack role.
DEFAULT_ROLE_SCOPES: dict[str, list[str]] = {
    "owner": ["api:read", "api:write", "api:admin"],
    "admin": ["api:read", "api:write", "api:admin"],
    "member": ["api:read", "api:write"],
    "guest": ["api:read"],
}
ROLES = tuple(DEFAULT_ROLE_SCOPES)
# The roles that make a member an admin: who sees and acts on every token of the
# organization (R5, R6, R16) and hears what only an admin can settle (R17).
ADMIN_ROLES = ("owner", "admin")
# R2: the permissions a service user may be given, unless the organization sets its own.
DEFAULT_SCOPE_CATALOGUE = ["api:read", "api:write", "reports:read", "billing:read"]
DEFAULT_REQUEST_TTL_DAYS = 7  # R25
# Requests one member may have waiting for a decision at once: each is a message to every
# approver, and a flood of them would bury the others' requests.
DEFAULT_PENDING_REQUEST_CAP = 5
# R14: a token not shown to its owner within this time never becomes valid.
DELIVERY_DEADLINE = timedelta(minutes=5)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is UTC-aware on the way in and out, also on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass a timezone-aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _at(nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class TokenState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Organization(SQLModel, table=True):
    """A Slack workspace (team id) or an Enterprise Grid org (enterprise id)."""

    id: int | None = Field(default=None, primary_key=True)
    slack_id: str = Field(max_length=32, unique=True)
    user_token_cap: int = DEFAULT_USER_TOKEN_CAP
    service_token_cap: int = DEFAULT_SERVICE_TOKEN_CAP
    inactivity_days: int = DEFAULT_INACTIVITY_DAYS
    audit_head: str = Field(default=GENESIS_DIGEST, max_length=64)
    reminder_days: list[int] = Field(
        default_factory=lambda: list(DEFAULT_REMINDER_DAYS), sa_column=Column(JSON, nullable=False)
    )
    allow_keep_alive: bool = True
    scope_catalogue: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SCOPE_CATALOGUE),
        sa_column=Column(JSON, nullable=False),
    )
    request_ttl_days: int = DEFAULT_REQUEST_TTL_DAYS
    pending_request_cap: int = DEFAULT_PENDING_REQUEST_CAP
    role_scopes: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_ROLE_SCOPES.items()},
        sa_column=Column(JSON, nullable=False),
    )
    # Who decides on service-token requests (a user group's handle) and where requests
    # are posted (a channel id), as set in /token settings; None: the server's own
    # setting (TOKENBOT_APPROVER_GROUP, TOKENBOT_APPROVALS_CHANNEL) applies.
    approver_group: str | None = Field(default=None, max_length=80)
    approvals_channel: str | None = Field(default=None, max_length=32)
    created_at: datetime = _at()
    rotation_grace_hours: int = DEFAULT_ROTATION_GRACE_HOURS  # 0: the old token ends at once
    # Installed through OAuth (multi-workspace mode): since when, or None when it never
    # was or has been uninstalled since; its tokens are valid only while it is installed.
    installed_at: datetime | None = _at(nullable=True)
    # The enterprise a workspace belongs to, if any: with the organization's own id, the
    # key of its installation (an org-wide install's organization is the enterprise).
    enterprise_id: str | None = Field(default=None, max_length=32)


class Member(SQLModel, table=True):
    """A Slack user of one organization."""

    __table_args__ = (sa.UniqueConstraint("org_id", "slack_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id", index=True)
    slack_user_id: str = Field(max_length=32)
    created_at: datetime = _at()
    # The cached Slack profile (R1), refreshed with a bounded age.
    display_name: str | None = Field(default=None, max_length=256)
    role: str = Field(default="member", max_length=16)  # owner, admin, member, guest
    deleted: bool = False
    groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    profile_at: datetime | None = _at(nullable=True)


# The tokens that hold their name (R15) and their place under the cap (R7, R8): active,
# and not replaced by a rotation (R18; the old token works on through its grace period).
NAME_HELD = "state = 'active' AND rotated_at IS NULL"


class Token(SQLModel, table=True):
    """An issued token. Only its SHA-256 digest and a display hint are kept."""

    __table_args__ = (
        # R15: names are unique among a member's active tokens, case-insensitively.
        sa.Index(
            "uq_token_active_member_name",
            "member_id",
            "name_key",
            unique=True,
            sqlite_where=sa.text(NAME_HELD),
            postgresql_where=sa.text(NAME_HELD),
        ),
        # The sweep reads only what is due, through these two.
        sa.Index("ix_token_org_state_cutoff", "org_id", "state", "cutoff_at"),
        sa.Index("ix_token_org_state_notice", "org_id", "state", "next_notice_at"),
        sa.Index(
            "uq_token_active_service_name",
            "service_user_id",
            "name_key",
            unique=True,
            sqlite_where=sa.text(NAME_HELD),
            postgresql_where=sa.text(NAME_HELD),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id")
    kind: str = Field(max_length=16)
    member_id: int | None = Field(default=None, foreign_key="member.id", index=True)
    service_user_id: int | None = Field(default=None, foreign_key="serviceuser.id", index=True)
    name: str = Field(max_length=64)
    name_key: str = Field(max_length=256)
    hint: str = Field(max_length=16)
    digest: str = Field(max_length=64, unique=True)
    created_at: datetime = _at()
    created_by_id: int | None = Field(default=None, foreign_key="member.id")
    last_used_at: datetime | None = _at(nullable=True)
    # Until the token is delivered (shown to its owner, R14) it is not valid, though it
    # holds its place under the cap and its name; meanwhile ``cutoff_at`` is the time
    # by which it must be delivered, after which the sweep revokes it, and no reminder
    # is due.
    delivered_at: datetime | None = _at(nullable=True)
    cutoff_at: datetime = _at()
    # When the next reminder (or, after the last one, the expiry) falls due.
    next_notice_at: datetime | None = _at(nullable=True)
    state: str = Field(default=TokenState.ACTIVE, max_length=16)
    state_reason: str | None = Field(default=None, max_length=200)
    state_changed_at: datetime | None = _at(nullable=True)
    # Rotation (R18). The new token names the one it replaces; the old one is marked when
    # the rotation starts, and from then on it is neither listed nor counted, nor used to
    # move its cutoff. Once the new token is shown, the old one's cutoff is the end of
    # its grace period, when the sweep revokes it ("rotated"). If the new token is never
    # shown, the mark is taken off again and the old token goes on as before.
    rotated_at: datetime | None = _at(nullable=True)
    # A token id. No foreign key: SQLite adds one only by rebuilding the table, which the
    # tables that refer to tokens forbid while foreign keys are enforced.
    replaces_id: int | None = None


class AuditEvent(SQLModel, table=True):
    """Append-only; each event carries the digest of the one before it in its organization."""

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id", index=True)
    at: datetime = _at()
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64)
    subject: str = Field(max_length=128)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_digest: str = Field(max_length=64)
    digest: str = Field(max_length=64)


class NoticeKind(StrEnum):
    """What an outbox message is about: each kind has its own renderer in ``bot.notify``."""

    REMINDER = "reminder"  # a token's cutoff is near (R12)
    EXPIRED = "expired"  # a token has expired (R13)
    OWNERLESS = "ownerless"  # to the admins: service users left with no owner (R17)
    DIGEST = "digest"  # to an approver: the day's requests waiting for them (R25)
    LEAKED = "leaked"  # a token was revoked for being pasted in a message (R19)
    REVOKED = "revoked"  # to a member: an admin revoked their token (R16)
    WEBHOOK = "webhook"  # an event, to one of the organization's webhook endpoints


class OutboxStatus(StrEnum):
    PENDING = "pending"  # owed; claimable once its next attempt is due
    SENT = "sent"
    SKIPPED = "skipped"  # no longer worth sending (a reminder whose window ended)
    FAILED = "failed"  # the dead letter: Slack refused for good, or every attempt failed


class OutboxMessage(SQLModel, table=True):
    """A message that must eventually arrive in Slack: claimed with a lease, settled by
    the holder of the latest claim, retried with backoff, dead-lettered at the end.

    ``dedupe_key``, where set, makes a message exist once however many sweepers,
    restarts or replicas queue it (a reminder stage per inactivity window and recipient,
    an expiry per recipient, a digest per approver and day). ``recipient`` None means the
    organization's admins, as Slack lists them when the message is sent.
    """

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id")
    kind: str = Field(max_length=16)
    dedupe_key: str | None = Field(default=None, max_length=200, unique=True)
    recipient: str | None = Field(default=None, max_length=32)  # a Slack user id
    token_id: int | None = Field(default=None, foreign_key="token.id")  # what it is about
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=OutboxStatus.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = _at()
    last_error: str | None = Field(default=None, max_length=200)
    created_at: datetime = _at()
    sent_at: datetime | None = _at(nullable=True)


class SlackEvent(SQLModel, table=True):
    """Event ids already handled: a repeated delivery has no second effect."""

    event_id: str = Field(primary_key=True, max_length=64)
    received_at: datetime = _at(index=True)


class ValidityEpoch(SQLModel, table=True):
    """One row whose value grows whenever a token may have stopped being valid (revoked,
    expired, its owner deactivated or their role changed). Replicas that cache validation
    results watch it (storage.db.Database.generation)."""

    id: int = Field(default=1, primary_key=True)
    value: int = 0


class ServiceUser(SQLModel, table=True):
    """A non-human principal (R2, R3): it exists only as the subject of its tokens."""

    __table_args__ = (sa.UniqueConstraint("org_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id", index=True)
    name: str = Field(max_length=40)  # a lowercase slug
    purpose: str = Field(max_length=500)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _at()


class ServiceOwner(SQLModel, table=True):
    service_user_id: int = Field(foreign_key="serviceuser.id", primary_key=True)
    member_id: int = Field(foreign_key="member.id", primary_key=True)


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class ApprovalRequest(SQLModel, table=True):
    """A request for a service token (R20-R25). ``service_user_id`` names an existing
    service user; otherwise ``name``, ``purpose`` and ``scopes`` describe a new one."""

    __table_args__ = (sa.Index("ix_request_org_state", "org_id", "state"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id")
    requester_id: int = Field(foreign_key="member.id")
    service_user_id: int | None = Field(default=None, foreign_key="serviceuser.id")
    name: str = Field(max_length=40)
    purpose: str = Field(max_length=500)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    justification: str = Field(max_length=1000)
    state: str = Field(default=RequestState.PENDING, max_length=16)
    decided_by: str | None = Field(default=None, max_length=32)  # a Slack user id
    decided_at: datetime | None = _at(nullable=True)
    reason: str | None = Field(default=None, max_length=1000)
    token_id: int | None = Field(default=None, foreign_key="token.id")
    created_at: datetime = _at()
    expires_at: datetime = _at()
    # Where the requester asked, to show them the token once it is approved (R24).
    response_url: str | None = Field(default=None, max_length=500)
    channel_id: str | None = Field(default=None, max_length=32)


class ApprovalMessage(SQLModel, table=True):
    """One copy of a request's message (in the approvals channel, or an approver's DM):
    every copy is updated when the request is decided (R22)."""

    request_id: int = Field(foreign_key="approvalrequest.id", primary_key=True)
    channel: str = Field(max_length=32, primary_key=True)
    ts: str = Field(max_length=32)


class WebhookEndpoint(SQLModel, table=True):
    """An HTTPS endpoint an organization's admins named to be told of its tokens' events
    (storage.webhooks). ``secret`` signs every delivery, so it is kept as it is, as Slack
    keeps an app's signing secret: shown once to the admin who added the endpoint, never
    logged, and blanked when the endpoint is removed."""

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id", index=True)
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=100)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _at()
    created_by: str = Field(max_length=32)  # a Slack user id
    disabled_at: datetime | None = _at(nullable=True)  # removed: told nothing more
    # How the last delivery went ("HTTP 200", "timeout"...), for the admins' list.
    last_status: str | None = Field(default=None, max_length=64)
    last_attempt_at: datetime | None = _at(nullable=True)


# The tables of slack_sdk's installation store and OAuth state store (bot tokens of the
# installed organizations, and the states of installs in progress) live in this database
# too: registered here so that migrations and the models are compared whole.
import storage.slack_tables  # noqa: E402, F401
