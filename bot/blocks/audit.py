"""``/token audit``: a page of the audit log (R27), newest first, each event as one line
(when, who, what happened, to what), with Older and Newer buttons."""

from __future__ import annotations

import re
from typing import Any

from bot.blocks.text import BLOCKS_MAX, SECTION_MAX, clip, escape, fit, inline
from bot.blocks.tokens import Message, _context, _plain, _section, when
from storage.audit import SYSTEM, Entry, Page

AUDIT_OLDER_ACTION = "audit_older"
AUDIT_NEWER_ACTION = "audit_newer"
# Every part of a line is bounded, so a line never reaches LINE_MAX (the clip is a last
# guard), and four lines always fit in a section.
LINE_MAX = 700
PART_MAX = 100  # characters of one value from an event's detail, escaped
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,31}")
_BACKTICK_LOOKALIKE = "\u02cb"  # modifier letter grave accent, as bot.blocks.text uses


def _value(detail: dict[str, Any], key: str) -> str:
    """A value of the event's detail, as text safe in the app's sentence ("" if none)."""
    value = detail.get(key)
    return "" if value is None or value == "" else inline(str(value), PART_MAX)


def _code(value: object) -> str:
    """A value as a code span: escaped, with no backtick to end the span early (inside
    it, no other character formats)."""
    text = escape(str(value)).replace("`", _BACKTICK_LOOKALIKE)
    return f"`{clip(text, PART_MAX)}`"


def _member(user_id: object) -> str:
    """A mention for a Slack user id; anything else as plain words."""
    text = str(user_id)
    return f"<@{text}>" if _USER_ID.fullmatch(text) else inline(text, PART_MAX)


def _actor(actor: str) -> str:
    if actor == SYSTEM:
        return "system"
    if _USER_ID.fullmatch(actor):
        return f"<@{actor}>"
    return f"service user *{inline(actor, PART_MAX)}*"  # a service token's use (R4)


def _subject(subject: str) -> str:
    kind, _, key = subject.partition(":")
    if kind == "member":
        return _member(key)
    return _code(subject)


def _token(detail: dict[str, Any]) -> str:
    name, hint = _value(detail, "name"), detail.get("hint")
    shown = f"*{name}*" if name else "a token"
    return f"{shown} ({_code(hint)})" if hint else shown


def _phrase(entry: Entry) -> str:
    """What happened, in words: from the event's action, and the names and hints in its
    detail (never anything else it may hold)."""
    detail = entry.detail if isinstance(entry.detail, dict) else {}
    token, service = _token(detail), f"*{_value(detail, 'service_user')}*"
    match entry.action:
        case "token.issued":
            return f"issued {_value(detail, 'kind') or 'a'} token {token}"
        case "token.delivered":
            return f"delivered {token} to its owner"
        case "token.used":
            return f"used {token}"
        case "token.keep_alive":
            return f"kept {token} for another period"
        case "token.reminder":
            return f"queued a reminder about {token}"
        case "token.revoked":
            reason = _value(detail, "reason")
            return f"revoked {token}" + (f" ({reason})" if reason else "")
        case "token.expired":
            return f"expired {token} after a period without use"
        case "member.deactivated":
            return "recorded the deactivation of the member"
        case "approval.requested":
            return f"asked for a token for the service user {service}"
        case "approval.approved":
            return f"approved a token for {service}"
        case "approval.denied":
            return f"denied a token for {service}"
        case "approval.cancelled":
            return f"closed the request for {service}"
        case "approval.expired":
            return f"expired the request for {service}"
        case "service_user.owner_added":
            return f"made {_member(detail.get('owner'))} an owner of {service}"
        case "service_user.owner_removed":
            return f"removed {_member(detail.get('owner'))} from the owners of {service}"
        case "service_user.taken_over":
            return f"took over {service}, left with no owner"
        case "app.installed":
            return "installed tokenbot"
        case "app.uninstalled":
            if detail.get("why") == "tokens_revoked":
                return "recorded that tokenbot's bot token was revoked"
            return "recorded that tokenbot was removed"
    # An action this version has no words for: its name, and what it is about.
    about = [token] if "name" in detail or "hint" in detail else []
    if "service_user" in detail:
        about.append(service)
    return " ".join([_code(entry.action), *about])


def audit_line(entry: Entry) -> str:
    """One event: when, who, what happened, and to what."""
    line = f"{when(entry.at)} · {_actor(entry.actor)} {_phrase(entry)} · {_subject(entry.subject)}"
    return clip(line, LINE_MAX)


def _sections(lines: list[str]) -> list[dict[str, Any]]:
    """The lines, as few sections as Slack's 3,000 characters a section allow."""
    sections: list[dict[str, Any]] = []
    chunk: list[str] = []
    for line in lines:
        if chunk and len("\n".join([*chunk, line])) > SECTION_MAX:
            sections.append(_section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    if chunk:
        sections.append(_section("\n".join(chunk)))
    return sections


def _page_button(action_id: str, label: str, size: int, event_id: int) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": _plain(label),
        "value": f"{size}:{event_id}",
    }


def audit_message(page: Page, size: int) -> Message:
    """A page of the log, newest first, with Newer and Older where there are more: each
    button carries the page size and the event it pages from."""
    if not page.entries:
        return {"text": "No audit events yet.", "blocks": [_section("No audit events yet.")]}
    first, last = page.position + 1, page.position + len(page.entries)
    heading = f"*Audit log*, newest first: events {first} to {last} of {page.total}"
    blocks = [_section(heading)]
    buttons = []
    if page.newer:
        buttons.append(_page_button(AUDIT_NEWER_ACTION, "Newer", size, page.entries[0].id))
    if page.older:
        buttons.append(_page_button(AUDIT_OLDER_ACTION, "Older", size, page.entries[-1].id))
    footer = [_context("Times are shown in your time zone.")]
    if buttons:
        footer.append({"type": "actions", "elements": buttons})
    sections = _sections([audit_line(e) for e in page.entries])
    fit(
        blocks,
        [[s] for s in sections],
        BLOCKS_MAX - len(footer),
        lambda left: _context(f"… and {left} more section(s) that do not fit here."),
    )
    blocks += footer
    return {"text": f"Audit log: events {first} to {last} of {page.total}", "blocks": blocks}
