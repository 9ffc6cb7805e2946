"""SQLModel tables. Times are stored in UTC and always read back timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

GENESIS_DIGEST = "0" * 64
DEFAULT_USER_TOKEN_CAP = 10  # R7
DEFAULT_SERVICE_TOKEN_CAP = 20  # R8
DEFAULT_INACTIVITY_DAYS = 30  # R11


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
    created_at: datetime = _at()


class Member(SQLModel, table=True):
    """A Slack user of one organization."""

    __table_args__ = (sa.UniqueConstraint("org_id", "slack_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id", index=True)
    slack_user_id: str = Field(max_length=32)
    created_at: datetime = _at()


class Token(SQLModel, table=True):
    """An issued token. Only its SHA-256 digest and a display hint are kept."""

    __table_args__ = (
        # R15: names are unique among a member's active tokens, case-insensitively.
        sa.Index(
            "uq_token_active_member_name",
            "member_id",
            "name_key",
            unique=True,
            sqlite_where=sa.text("state = 'active'"),
            postgresql_where=sa.text("state = 'active'"),
        ),
        sa.Index("ix_token_org_state_cutoff", "org_id", "state", "cutoff_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organization.id")
    kind: str = Field(max_length=16)
    member_id: int | None = Field(default=None, foreign_key="member.id", index=True)
    name: str = Field(max_length=64)
    name_key: str = Field(max_length=256)
    hint: str = Field(max_length=16)
    digest: str = Field(max_length=64, unique=True)
    created_at: datetime = _at()
    created_by_id: int | None = Field(default=None, foreign_key="member.id")
    last_used_at: datetime | None = _at(nullable=True)
    cutoff_at: datetime = _at()
    state: str = Field(default=TokenState.ACTIVE, max_length=16)
    state_reason: str | None = Field(default=None, max_length=200)
    state_changed_at: datetime | None = _at(nullable=True)


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
