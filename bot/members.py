"""Slack's user object, as tokenbot sees it: the member's role and profile. The one
place that reads Slack's user fields; storage receives the domain values (a Profile)."""

from __future__ import annotations

from storage.members import Profile
from storage.models import ADMIN_ROLES


def role_of(user: dict[str, object]) -> str:
    """The role tokenbot gives a Slack user object: owner, admin, member or guest."""
    if user.get("is_owner") or user.get("is_primary_owner"):
        return "owner"
    if user.get("is_admin"):
        return "admin"
    if user.get("is_restricted") or user.get("is_ultra_restricted"):
        return "guest"
    return "member"


def is_admin(user: dict[str, object]) -> bool:
    """Whether a Slack user object is one of the workspace's admins or owners: the one
    definition of an admin (R5, R6, R16, R20), shared with storage through ADMIN_ROLES."""
    return role_of(user) in ADMIN_ROLES


def profile_from_slack(user: dict[str, object], groups: list[str] | None = None) -> Profile:
    """A Profile from a Slack user object (users.info, users.list, user_change)."""
    profile = user.get("profile")
    names = profile if isinstance(profile, dict) else {}
    display = names.get("display_name") or names.get("real_name") or user.get("name")
    return Profile(
        user_id=str(user["id"]),
        display_name=str(display) if display else None,
        role=role_of(user),
        deleted=bool(user.get("deleted")),
        groups=groups,
    )
