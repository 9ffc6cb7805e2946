"""The organization's policy, as its admins set it (``/token settings``): the caps (R7-R9),
the inactivity period and reminders (R11, R12), request expiry (R25), who approves and
where requests go (R20), and the permissions (R1, R2).

:func:`check_settings` reads a submitted form into settings, or says what is wrong with
each field; :func:`save_settings` writes the settings in one transaction, with the
organization locked, and records one audit event per value changed (R27). A form with
any value at fault changes nothing. What exists stays: lowering a cap revokes no token
(R9), and a new inactivity period or reminder list applies to a token from its next use.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from storage import audit
from storage.db import Database, invalidates
from storage.errors import InvalidFields, TokenbotError
from storage.models import ROLES, Organization
from storage.orgs import ORG, find_org, lock_org

# The numbers an admin sets, each with the range it may take.
RANGES: dict[str, tuple[int, int]] = {
    "user_token_cap": (1, 1000),
    "service_token_cap": (1, 10000),
    "inactivity_days": (1, 3650),
    "rotation_grace_hours": (0, 720),
    "request_ttl_days": (1, 90),
    "pending_request_cap": (1, 100),
}
REMINDER_STAGES_MAX = 5
SCOPES_MAX, SCOPE_LENGTH_MAX = 100, 75
# The permission catalogue and the role map are edited as text in a Slack modal, whose
# text inputs take at most 3,000 characters: kept within that, they can always be shown.
TEXT_MAX = 3000
GROUP_HANDLE_MAX = 80
# A Slack channel id (public or private) that requests may be posted to.
CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,31}")


class StaleForm(TokenbotError):
    """The settings changed between the form's opening and its submission."""


@dataclass(frozen=True)
class OrgSettings:
    """An organization's policy. ``approver_group`` and ``approvals_channel`` are None
    where the server's own setting applies."""

    user_token_cap: int
    service_token_cap: int
    inactivity_days: int
    reminder_days: list[int]
    allow_keep_alive: bool
    rotation_grace_hours: int
    request_ttl_days: int
    pending_request_cap: int
    approver_group: str | None
    approvals_channel: str | None
    scope_catalogue: list[str]
    role_scopes: dict[str, list[str]]

    def version(self) -> str:
        """A digest of these values: a form opened on them is submitted onto them."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


SETTINGS = tuple(f.name for f in fields(OrgSettings))


@dataclass(frozen=True)
class SettingsForm:
    """What an admin submitted, as typed: numbers and lists as text, None where nothing
    was given. ``approver_group`` (a handle) and ``approvals_channel`` (a channel id)
    are None for the server's default."""

    user_token_cap: str | None
    service_token_cap: str | None
    inactivity_days: str | None
    reminder_days: str | None
    allow_keep_alive: bool
    rotation_grace_hours: str | None
    request_ttl_days: str | None
    pending_request_cap: str | None
    approver_group: str | None
    approvals_channel: str | None
    scope_catalogue: str | None
    role_scopes: str | None


@dataclass(frozen=True)
class Checked:
    """A form read: the settings it gives, or else what is wrong, by field."""

    settings: OrgSettings | None
    errors: dict[str, str]


@dataclass(frozen=True)
class Change:
    """One value changed by a save."""

    setting: str
    old: Any
    new: Any


class _Fault(Exception):
    """What is wrong with one field (internal to :func:`check_settings`)."""


def _whole(text: str) -> int | None:
    """``text`` as a whole number, if it is one (a short one: Python refuses to read
    thousands of digits)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def _number(name: str, raw: str | None) -> int:
    low, high = RANGES[name]
    number = _whole((raw or "").strip())
    if number is None or not low <= number <= high:
        raise _Fault(f"Use a whole number from {low} to {high}.")
    return number


def _shown(text: str, limit: int = 30) -> str:
    """A piece of what was typed, quoted in an error."""
    return f"“{text if len(text) <= limit else text[: limit - 1] + '…'}”"


def _reminder_days(raw: str | None, inactivity_days: int | None) -> list[int]:
    """Distinct whole days before the cutoff, most distant first; none at all is allowed
    (no reminders, only the expiry notice)."""
    pieces = [piece.strip() for piece in (raw or "").split(",")]
    days: list[int] = []
    for piece in filter(None, pieces):
        day = _whole(piece)
        if day is None:
            raise _Fault(
                f"Write whole days separated by commas, such as 7, 1: {_shown(piece)} is not one."
            )
        if day in days:
            raise _Fault(f"Give each day once: {day} is there twice.")
        days.append(day)
    if len(days) > REMINDER_STAGES_MAX:
        raise _Fault(f"Use at most {REMINDER_STAGES_MAX} reminders (there are {len(days)}).")
    if any(day < 1 for day in days):
        raise _Fault("A reminder comes at least 1 day before the token expires.")
    if inactivity_days is not None and any(day >= inactivity_days for day in days):
        if inactivity_days == 1:
            raise _Fault(
                "With a period of 1 day there is no room for a reminder: leave this empty."
            )
        raise _Fault(
            f"Each reminder must come 1 to {inactivity_days - 1} days before the token "
            f"expires (the period is {inactivity_days} days)."
        )
    return sorted(days, reverse=True)


def _scope_catalogue(raw: str | None) -> list[str]:
    scopes: list[str] = []
    for n, line in enumerate((raw or "").splitlines(), start=1):
        scope = line.strip()
        if not scope:
            continue
        if any(c.isspace() for c in scope) or not scope.isprintable():
            raise _Fault(f"Line {n}: a permission has no spaces and only printable characters.")
        if len(scope) > SCOPE_LENGTH_MAX:
            raise _Fault(
                f"Line {n}: a permission has at most {SCOPE_LENGTH_MAX} characters "
                f"(this one has {len(scope)})."
            )
        if scope in scopes:
            raise _Fault(f"Give each permission once: {_shown(scope)} is there twice.")
        scopes.append(scope)
    if not scopes:
        raise _Fault("List at least one permission, one per line.")
    if len(scopes) > SCOPES_MAX:
        raise _Fault(f"List at most {SCOPES_MAX} permissions (there are {len(scopes)}).")
    if len(catalogue_text(scopes)) > TEXT_MAX:
        raise _Fault(f"The list must fit in {TEXT_MAX} characters.")
    return scopes


def _role_scopes(
    raw: str | None, catalogue: list[str] | None, held: dict[str, list[str]]
) -> dict[str, list[str]]:
    """``role: scope scope …``, one line per role. Every role has a line (it may list no
    permission); with ``catalogue`` known, every permission given to a role is in it,
    unless the role ``held`` it already (the default map gives owners and admins
    api:admin, which the default catalogue, offered to service users, leaves out)."""
    roles: dict[str, list[str]] = {}
    for n, line in enumerate((raw or "").splitlines(), start=1):
        if not line.strip():
            continue
        role, colon, rest = line.partition(":")
        role = role.strip().lower()
        if not colon or not role or any(c.isspace() for c in role):
            raise _Fault(
                f"Line {n}: write the role, a colon, then its permissions, such as "
                "“member: api:read api:write”."
            )
        if role not in ROLES:
            raise _Fault(f"Line {n}: the roles are {', '.join(ROLES)}; {_shown(role)} is not one.")
        if role in roles:
            raise _Fault(f"Give each role one line: {role} has two.")
        roles[role] = list(dict.fromkeys(rest.split()))  # in order, each once
    if missing := [role for role in ROLES if role not in roles]:
        raise _Fault(
            f"Give every role a line (one with no permissions is allowed, such as "
            f"“guest:”): {', '.join(missing)} missing."
        )
    if catalogue is not None:
        unknown = [
            scope
            for role, scopes in roles.items()
            for scope in scopes
            if scope not in catalogue and scope not in held.get(role, [])
        ]
        if unknown:
            named = ", ".join(dict.fromkeys(_shown(s) for s in unknown))
            raise _Fault(f"Not in the permission catalogue: {named}.")
    ordered = {role: roles[role] for role in ROLES}
    if len(role_scopes_text(ordered)) > TEXT_MAX:
        raise _Fault(f"The roles' lines must fit in {TEXT_MAX} characters.")
    return ordered


def _approver_group(
    raw: str | None, current: str | None, known: Collection[str] | None
) -> str | None:
    handle = (raw or "").strip().removeprefix("@").strip()
    if not handle:
        return None
    if handle == current:
        return handle  # unchanged: kept whatever Slack says of it just now
    if known is None:
        raise _Fault("Slack could not list the user groups just now. Try again.")
    if handle not in known or len(handle) > GROUP_HANDLE_MAX:
        raise _Fault(f"There is no user group @{handle[:GROUP_HANDLE_MAX]} in this workspace.")
    return handle


def _approvals_channel(raw: str | None) -> str | None:
    channel = (raw or "").strip()
    if not channel:
        return None
    if not CHANNEL_ID.fullmatch(channel):
        raise _Fault("Pick a public or private channel.")
    return channel


def check_settings(
    form: SettingsForm, current: OrgSettings, known_groups: Collection[str] | None
) -> Checked:
    """Read ``form`` into settings, or say what is wrong with each field at fault.

    ``current``: the organization's settings now (an approver group left as it is needs
    no check). ``known_groups``: the handles of the workspace's user groups, as Slack
    lists them; None when Slack could not say, so that only the current group passes.
    """
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}

    def read(name: str, parse: Callable[..., Any], *args: Any) -> None:
        try:
            values[name] = parse(*args)
        except _Fault as fault:
            errors[name] = str(fault)

    for name in RANGES:
        read(name, _number, name, getattr(form, name))
    read("reminder_days", _reminder_days, form.reminder_days, values.get("inactivity_days"))
    values["allow_keep_alive"] = bool(form.allow_keep_alive)
    read(
        "approver_group", _approver_group, form.approver_group, current.approver_group, known_groups
    )
    read("approvals_channel", _approvals_channel, form.approvals_channel)
    read("scope_catalogue", _scope_catalogue, form.scope_catalogue)
    read(
        "role_scopes",
        _role_scopes,
        form.role_scopes,
        values.get("scope_catalogue"),
        current.role_scopes,
    )
    if errors:
        return Checked(None, errors)
    return Checked(OrgSettings(**values), {})


def catalogue_text(scopes: list[str]) -> str:
    """The permission catalogue as an admin edits it: one per line."""
    return "\n".join(scopes)


def role_scopes_text(role_scopes: dict[str, list[str]]) -> str:
    """The role map as an admin edits it: ``role: scope scope …``, one line per role."""
    return "\n".join(f"{role}: {' '.join(role_scopes.get(role, []))}".rstrip() for role in ROLES)


_COLUMNS = [ORG.c[name] for name in SETTINGS]


def _read(session: Session, org_id: int) -> OrgSettings:
    row = session.execute(sa.select(*_COLUMNS).where(ORG.c.id == org_id)).one()
    return OrgSettings(**row._mapping)


def _defaults() -> OrgSettings:
    new = Organization(slack_id="")
    return OrgSettings(**{name: getattr(new, name) for name in SETTINGS})


def current_settings(db: Database, org_slack_id: str) -> OrgSettings:
    """The organization's settings now (the defaults for one never seen)."""
    with db.read() as session:
        org = find_org(session, org_slack_id)
        return _defaults() if org is None else _read(session, org.id)


def approval_routing(db: Database, org_slack_id: str) -> tuple[str | None, str | None]:
    """The organization's own approver group and approvals channel, each None where the
    server's setting applies (R20)."""
    with db.read() as session:
        query = sa.select(ORG.c.approver_group, ORG.c.approvals_channel).where(
            ORG.c.slack_id == org_slack_id
        )
        row = session.execute(query).first()
        return (row.approver_group, row.approvals_channel) if row else (None, None)


def save_settings(
    db: Database,
    org_slack_id: str,
    actor: str,
    form: SettingsForm,
    *,
    known_groups: Collection[str] | None,
    seen: str | None,
    now: datetime,
) -> list[Change]:
    """Write the settings ``form`` gives, in one transaction with the organization
    locked, and record a "setting.changed" event (its name, old and new value) for each
    value changed; return the changes, in the form's order.

    ``seen``: the :meth:`OrgSettings.version` the form was opened on; StaleForm when the
    settings changed since (another admin saved meanwhile). InvalidFields, naming each
    field at fault, when a value cannot be taken (:func:`check_settings`). Nothing
    changes when either is raised.
    """
    with db.write() as session:
        org = lock_org(session, org_slack_id, now)
        current = _read(session, org.id)
        if seen is not None and seen != current.version():
            raise StaleForm(
                "The settings were changed since you opened this form. Close it and open "
                "the settings again to see them."
            )
        checked = check_settings(form, current, known_groups)
        if checked.settings is None:
            raise InvalidFields(checked.errors)
        new = checked.settings
        changes = [
            Change(name, getattr(current, name), getattr(new, name))
            for name in SETTINGS
            if getattr(current, name) != getattr(new, name)
        ]
        if not changes:
            return []
        session.execute(
            sa.update(ORG).where(ORG.c.id == org.id).values({c.setting: c.new for c in changes})
        )
        if any(c.setting == "role_scopes" for c in changes):
            invalidates(session)  # what user tokens carry has changed (R1)
        events = [
            audit.NewEvent(
                actor=actor,
                action="setting.changed",
                subject=f"setting:{c.setting}",
                detail={"setting": c.setting, "old": c.old, "new": c.new},
            )
            for c in changes
        ]
        audit.record_all(session, org, events, now)
        return changes
