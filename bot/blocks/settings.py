"""The organization's settings modal (``/token settings``) and what it says once saved."""

from __future__ import annotations

from typing import Any

from bot.blocks.text import inline
from bot.blocks.tokens import Message, _context, _plain, _section
from storage.settings import (
    GROUP_HANDLE_MAX,
    RANGES,
    REMINDER_STAGES_MAX,
    SCOPE_LENGTH_MAX,
    SCOPES_MAX,
    TEXT_MAX,
    Change,
    OrgSettings,
    catalogue_text,
    role_scopes_text,
)

SETTINGS_CALLBACK = "org_settings"
INPUT = "value"  # the action id of every input of the modal
# Each input's block id is the name of the setting it edits; these two are extra.
KEEP_ALIVE_OPTION = "allow"
CHANNEL_DEFAULT_BLOCK = "approvals_channel_default"
CHANNEL_DEFAULT_OPTION = "default"
# The approver group's option meaning "the server's default". Never a group's handle:
# Slack's handles hold no colon.
DEFAULT_GROUP = ":default"
# Slack's static select offers 100 options: the default and 99 groups. A workspace with
# more is asked for the handle as text instead.
GROUP_OPTIONS_MAX = 99
OPTION_TEXT_MAX = 75
CHANGE_SHOWN = 1400  # characters of an old or a new value, in a 3,000-character section

LABELS = {
    "user_token_cap": "Personal tokens per member",
    "service_token_cap": "Service tokens per workspace",
    "inactivity_days": "Days without use before a token expires",
    "reminder_days": "Reminders, in days before a token expires",
    "allow_keep_alive": "Keep for another period",
    "rotation_grace_hours": "Hours a rotated token keeps working",
    "request_ttl_days": "Days a service-token request waits",
    "pending_request_cap": "Requests a member may have waiting",
    "approver_group": "Approvers",
    "approvals_channel": "Approvals channel",
    "scope_catalogue": "Permission catalogue",
    "role_scopes": "Permissions of personal tokens, by role",
}


def _range(name: str) -> str:
    low, high = RANGES[name]
    return f"{low} to {high}"


def _number(name: str, value: int, hint: str) -> dict[str, Any]:
    low, high = RANGES[name]
    element = {
        "type": "number_input",
        "action_id": INPUT,
        "is_decimal_allowed": False,
        "initial_value": str(value),
        "min_value": str(low),
        "max_value": str(high),
    }
    return _input(name, element, hint)


def _text(
    name: str, value: str, hint: str, *, multiline: bool = False, max_length: int = 200
) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": INPUT,
        "multiline": multiline,
        "max_length": max_length,
    }
    if value:
        element["initial_value"] = value
    return _input(name, element, hint, optional=not multiline)


def _input(
    block_id: str,
    element: dict[str, Any],
    hint: str,
    *,
    label: str | None = None,
    optional: bool = False,
) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label or LABELS[block_id]),
        "element": element,
        "hint": _plain(hint),
        "optional": optional,
    }


def _checkbox(
    block_id: str, value: str, text: str, checked: bool, hint: str, label: str | None = None
) -> dict[str, Any]:
    option = {"text": _plain(text), "value": value}
    element: dict[str, Any] = {"type": "checkboxes", "action_id": INPUT, "options": [option]}
    if checked:
        element["initial_options"] = [option]
    return _input(block_id, element, hint, label=label, optional=True)


def _option(text: str, value: str) -> dict[str, Any]:
    shown = text if len(text) <= OPTION_TEXT_MAX else text[: OPTION_TEXT_MAX - 1] + "…"
    return {"text": _plain(shown), "value": value}


def _approvers(
    current: str | None, default: str | None, groups: dict[str, str] | None
) -> dict[str, Any]:
    """A choice among the workspace's user groups, or the default; as text when Slack
    could not list them or has too many to offer."""
    fallback = f"@{default}" if default else "the workspace's admins and owners"
    # A handle too long to be one is left out: Slack would refuse the option's value.
    listed = {h: n for h, n in sorted((groups or {}).items()) if len(h) <= GROUP_HANDLE_MAX}
    if current and current not in listed:
        listed[current] = current  # no longer listed by Slack, but still the one set
    if groups is None or len(listed) > GROUP_OPTIONS_MAX:
        hint = (
            f"The handle of a user group whose members decide on service-token requests. "
            f"Empty: the default ({fallback})."
        )
        return _text("approver_group", current or "", hint, max_length=GROUP_HANDLE_MAX)
    options = [_option(f"Default: {fallback}", DEFAULT_GROUP)]
    options += [_option(f"@{handle} ({name})", handle) for handle, name in listed.items()]
    chosen = next((o for o in options if o["value"] == current), options[0])
    element = {
        "type": "static_select",
        "action_id": INPUT,
        "options": options,
        "initial_option": chosen,
    }
    hint = "The members of this user group decide on service-token requests."
    return _input("approver_group", element, hint)


def _channel(current: str | None, default: str | None) -> list[dict[str, Any]]:
    fallback = f"channel {default}" if default else "each approver by DM"
    element: dict[str, Any] = {
        "type": "conversations_select",
        "action_id": INPUT,
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    if current:
        element["initial_conversation"] = current
    hint = f"Service-token requests are posted here (invite the app to it). Default: {fallback}."
    blocks = [_input("approvals_channel", element, hint, optional=True)]
    if current:  # Slack's select cannot be emptied: a box returns to the default
        blocks.append(
            _checkbox(
                CHANNEL_DEFAULT_BLOCK,
                CHANNEL_DEFAULT_OPTION,
                "Use the default instead",
                False,
                f"Back to the default: {fallback}.",
                label="Approvals channel: default",
            )
        )
    return blocks


def settings_modal(
    current: OrgSettings,
    groups: dict[str, str] | None,
    *,
    default_group: str | None,
    default_channel: str | None,
    private_metadata: str,
) -> dict[str, Any]:
    """The organization's settings, filled in with ``current``. ``groups``: the user
    groups to choose the approvers from (handle -> name), None when Slack could not say.
    ``default_group``, ``default_channel``: the server's, which apply where the
    organization sets none."""
    blocks = [
        _section(
            "*Policy for this workspace.* Changes apply from now on: lowering a cap "
            "revokes no token, and a new period applies to a token from its next use. "
            "The endpoints told of token events are set with the `webhooks` subcommand."
        ),
        _number(
            "user_token_cap",
            current.user_token_cap,
            f"{_range('user_token_cap')}. A member at the cap revokes one to get another.",
        ),
        _number("service_token_cap", current.service_token_cap, _range("service_token_cap")),
        _number("inactivity_days", current.inactivity_days, _range("inactivity_days")),
        _text(
            "reminder_days",
            ", ".join(map(str, current.reminder_days)),
            f"Up to {REMINDER_STAGES_MAX} whole days, separated by commas, each less than "
            "the period above. Empty: no reminders.",
        ),
        _checkbox(
            "allow_keep_alive",
            KEEP_ALIVE_OPTION,
            "Offer “Keep for another period” in reminders",
            current.allow_keep_alive,
            "A kept token gets a new period without counting as a use.",
        ),
        _number(
            "rotation_grace_hours",
            current.rotation_grace_hours,
            f"{_range('rotation_grace_hours')}. After a rotation the old token works this "
            "long, so what uses it can be moved to the new one; 0 ends it at once.",
        ),
        _number(
            "request_ttl_days",
            current.request_ttl_days,
            f"{_range('request_ttl_days')}. Then a request nobody decided expires.",
        ),
        _number(
            "pending_request_cap",
            current.pending_request_cap,
            f"{_range('pending_request_cap')}, per member.",
        ),
        _approvers(current.approver_group, default_group, groups),
        *_channel(current.approvals_channel, default_channel),
        _text(
            "scope_catalogue",
            catalogue_text(current.scope_catalogue),
            f"What a service user may be given: one per line, 1 to {SCOPE_LENGTH_MAX} "
            f"characters without spaces, at most {SCOPES_MAX}. Service users keep what "
            "they were given.",
            multiline=True,
            max_length=TEXT_MAX,
        ),
        _text(
            "role_scopes",
            role_scopes_text(current.role_scopes),
            "One line per role (owner, admin, member, guest): the role, a colon, then "
            "permissions from the catalogue.",
            multiline=True,
            max_length=TEXT_MAX,
        ),
        _context("Each change is recorded in the audit log."),
    ]
    return {
        "type": "modal",
        "callback_id": SETTINGS_CALLBACK,
        "private_metadata": private_metadata,
        "title": _plain("Token settings"),
        "submit": _plain("Save"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def _value(setting: str, value: Any) -> str:
    if value is None:
        return "the default"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if setting == "reminder_days":
        return ", ".join(map(str, value)) or "none"
    if setting == "role_scopes":
        return "; ".join(f"{role}: {' '.join(scopes) or '—'}" for role, scopes in value.items())
    if isinstance(value, list):
        return " ".join(map(str, value))
    if setting == "approver_group":
        return f"@{value}"
    if setting == "approvals_channel":
        return f"<#{value}>"  # a channel id the settings checked: Slack shows its name
    return str(value)


def settings_saved_message(changes: list[Change]) -> Message:
    """What the admin is told once the settings are saved: each value changed."""
    if not changes:
        return {
            "text": "Nothing changed.",
            "blocks": [_section("Settings saved: nothing changed.")],
        }
    blocks = [_section("*Settings saved.*")]
    for change in changes:  # a section each: a catalogue can be long
        old, new = _value(change.setting, change.old), _value(change.setting, change.new)
        if change.setting != "approvals_channel":  # a checked id; the rest was typed
            old, new = inline(old, CHANGE_SHOWN), inline(new, CHANGE_SHOWN)
        blocks.append(_section(f"• {LABELS[change.setting]}: {old} → {new}"))
    return {"text": "Settings saved.", "blocks": blocks}
