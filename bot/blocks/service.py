"""Messages and modals about service users and their approval (R20-R25)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.blocks.owners import owner_buttons, take_over_button
from bot.blocks.text import BLOCKS_MAX, CONFIRM_MAX, clip, fit, inline, quoted
from bot.blocks.tokens import (
    SERVICE_REVOKE_ACTION,
    SERVICE_ROTATE_ACTION,
    Message,
    _context,
    _plain,
    _section,
    token_buttons,
    when,
)
from storage.approvals import RequestInfo
from storage.reports import Report
from storage.services import ServiceUserInfo
from storage.tokens import IssuedToken, TokenInfo

REQUEST_CALLBACK = "service_request"
DENY_CALLBACK = "deny_reason"
APPROVE_ACTION = "approve_request"
DENY_ACTION = "deny_request"
NAME_BLOCK, PURPOSE_BLOCK, SCOPES_BLOCK, WHY_BLOCK, REASON_BLOCK = (
    "name",
    "purpose",
    "scopes",
    "justification",
    "reason",
)
INPUT = "value"  # the action id of every input in these modals


def _input(
    block_id: str,
    label: str,
    element: dict[str, Any],
    *,
    optional: bool = False,
    hint: str | None = None,
) -> dict[str, Any]:
    block = {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label),
        "element": element,
        "optional": optional,
    }
    if hint:
        block["hint"] = _plain(hint)
    return block


def _text_input(multiline: bool = False, max_length: int = 500) -> dict[str, Any]:
    return {
        "type": "plain_text_input",
        "action_id": INPUT,
        "multiline": multiline,
        "max_length": max_length,
    }


# Slack offers at most 10 checkboxes; past that, a multi-select, which offers 100.
CHECKBOXES_MAX, SELECT_OPTIONS_MAX = 10, 100
OPTION_TEXT_MAX, OPTION_VALUE_MAX = 75, 150


def _permission_picker(catalogue: list[str]) -> dict[str, Any]:
    """The catalogue's permissions to choose from, as checkboxes while Slack allows them."""
    options = [
        {"text": _plain(clip(scope, OPTION_TEXT_MAX)), "value": scope}
        for scope in catalogue[:SELECT_OPTIONS_MAX]
        if len(scope) <= OPTION_VALUE_MAX  # a value Slack would refuse could not be sent back
    ]
    if len(options) <= CHECKBOXES_MAX:
        return {"type": "checkboxes", "action_id": INPUT, "options": options}
    return {
        "type": "multi_static_select",
        "action_id": INPUT,
        "placeholder": _plain("Choose permissions"),
        "options": options,
    }


def service_request_modal(catalogue: list[str], private_metadata: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": REQUEST_CALLBACK,
        "private_metadata": private_metadata,
        "title": _plain("Request service token"),
        "submit": _plain("Send request"),
        "close": _plain("Cancel"),
        "blocks": [
            _input(
                NAME_BLOCK,
                "Service user",
                _text_input(max_length=40),
                hint="A new name creates a service user; the name of one you own asks "
                "for another token for it.",
            ),
            _input(
                PURPOSE_BLOCK,
                "What it is for",
                _text_input(True),
                optional=True,
                hint="For a new service user.",
            ),
            _input(
                SCOPES_BLOCK,
                "Permissions",
                _permission_picker(catalogue),
                optional=True,
                hint="For a new service user.",
            ),
            _input(WHY_BLOCK, "Why you need it", _text_input(True, 1000)),
            _context("An approver decides; the token is then shown to you once."),
        ],
    }


# Shares of one section's 3,000 characters: the requester's words are quoted, and cut
# (with an ellipsis) only when escaping has made them very long.
NAME_SHOWN, SCOPES_SHOWN_CHARS, PURPOSE_QUOTED, WHY_QUOTED, REASON_QUOTED = (
    120,
    600,
    700,
    1300,
    2500,
)


def _request_summary(request: RequestInfo) -> str:
    """Who asks for what, and why. What the requester typed is quoted, every line behind
    ``>``, so none of it can pass for the app's own lines (such as a decision)."""
    kind = "a new service user" if request.service_user_id is None else "service user"
    scopes = _scope_list(request.scopes)
    purpose = quoted(request.purpose, PURPOSE_QUOTED) if request.purpose else "> —"
    return (
        f"<@{request.requester}> asks for a token for {kind} "
        f"*{inline(request.name, NAME_SHOWN)}*\n"
        f"*Permissions:* {scopes}\n*Purpose:*\n{purpose}\n"
        f"*Why:*\n{quoted(request.justification, WHY_QUOTED)}"
    )


def approval_request_message(request: RequestInfo) -> Message:
    buttons = {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE_ACTION,
                "style": "primary",
                "text": _plain("Approve"),
                "value": str(request.id),
                "confirm": {
                    "title": _plain("Approve this request?"),
                    "text": {
                        "type": "mrkdwn",
                        "text": f"A token for *{inline(request.name, CONFIRM_MAX // 2)}* "
                        "is issued and shown to the requester.",
                        "verbatim": True,
                    },
                    "confirm": _plain("Approve"),
                    "deny": _plain("Back"),
                },
            },
            {
                "type": "button",
                "action_id": DENY_ACTION,
                "style": "danger",
                "text": _plain("Deny"),
                "value": str(request.id),
            },
        ],
    }
    return {
        "text": f"Service token request for {inline(request.name, NAME_SHOWN)}",
        "blocks": [
            _section(_request_summary(request)),
            buttons,
            _context(f"Expires unanswered {when(request.expires_at)}."),
        ],
    }


def decided_message(
    request: RequestInfo, *, undelivered: bool = False, command: str = "/token"
) -> Message:
    """What every copy of the request shows once decided (R22). ``undelivered``: the
    token was approved but could not be shown to the requester, so it was revoked."""
    if request.state == "approved":
        outcome = f":white_check_mark: Approved by <@{request.decided_by}>"
    elif request.state == "denied":
        outcome = f":no_entry: Denied by <@{request.decided_by}>"
    else:
        outcome = f"This request was {request.state}"
        if request.reason:
            outcome += f": {inline(request.reason, REASON_QUOTED)}"
    outcome += f" · {when(request.decided_at)}"
    if request.state == "denied":
        outcome += "\n" + quoted(request.reason or "", REASON_QUOTED)
    if undelivered:
        outcome += (
            f"\n:warning: The token could not be delivered to <@{request.requester}> "
            "(Slack could not reach them), so it was revoked at once and never worked. "
            f"<@{request.requester}> can ask again with `{command} service request`."
        )
    return {
        "text": f"Service token request for {inline(request.name, NAME_SHOWN)}: {request.state}",
        "blocks": [_section(_request_summary(request)), _section(outcome)],
    }


def deny_modal(request: RequestInfo, private_metadata: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": DENY_CALLBACK,
        "private_metadata": private_metadata,
        "title": _plain("Deny request"),
        "submit": _plain("Deny"),
        "close": _plain("Back"),
        "blocks": [
            _section(
                f"Deny the token for *{inline(request.name, NAME_SHOWN)}* asked by "
                f"<@{request.requester}>?"
            ),
            _input(REASON_BLOCK, "Reason (the requester sees it)", _text_input(True, 1000)),
        ],
    }


def request_sent_message(request: RequestInfo, where: str) -> Message:
    text = (
        f"Your request for a token for *{inline(request.name, NAME_SHOWN)}* went to {where}. "
        "You will see the token here once it is approved."
    )
    return {"text": text, "blocks": [_section(text)]}


def service_token_message(issued: IssuedToken, request: RequestInfo) -> Message:
    text = (
        f":key: Your request was approved by <@{request.decided_by}>. The token for "
        f"*{inline(request.name, NAME_SHOWN)}* is below: copy it now, it will not be shown again."
    )
    return {
        "text": f"Your token for {inline(request.name, NAME_SHOWN)} is ready. Copy it now.",
        "blocks": [
            _section(text),
            _section(f"```{issued.secret}```"),
            _context(
                f"Expires if unused by {when(issued.info.cutoff_at)}. Only you "
                "can see this message, and Slack does not keep it."
            ),
        ],
    }


def denied_message(request: RequestInfo) -> Message:
    text = (
        f"Your request for a token for *{inline(request.name, NAME_SHOWN)}* was denied by "
        f"<@{request.decided_by}>:\n{quoted(request.reason or '', REASON_QUOTED)}"
    )
    return {"text": clip(text, 3000), "blocks": [_section(text)]}


def closed_as_taken_message(request: RequestInfo, command: str) -> Message:
    """To the requester: the request was closed without a decision, and why."""
    why = f": {inline(request.reason, REASON_QUOTED)}" if request.reason else ""
    text = (
        f"Your request for a token for *{inline(request.name, NAME_SHOWN)}* was closed{why}. "
        f"Ask again with another name with `{command} service request`, or ask the owners "
        "of that service user to ask for you."
    )
    return {"text": text, "blocks": [_section(text)]}


CANCEL_REQUEST_ACTION = "cancel_request"


def cancel_entry(request: RequestInfo) -> list[dict[str, Any]]:
    """One of the member's own pending requests, with Cancel (R25)."""
    return [
        _section(
            f"*{inline(request.name, NAME_SHOWN)}* · asked {when(request.created_at)}",
            {
                "type": "button",
                "action_id": CANCEL_REQUEST_ACTION,
                "text": _plain("Cancel"),
                "value": str(request.id),
            },
        )
    ]


def decision_entry(request: RequestInfo) -> list[dict[str, Any]]:
    """A pending request the member may decide: the request, with Approve and Deny."""
    blocks: list[dict[str, Any]] = approval_request_message(request)["blocks"][:2]
    return blocks


def requests_message(mine: list[RequestInfo], decidable: list[RequestInfo]) -> Message:
    """``/token requests``: what the caller asked for (with Cancel), and what they may
    decide (with Approve and Deny)."""
    blocks: list[dict[str, Any]] = []
    if mine:
        blocks.append(_section("*Your pending requests*"))
        # Room is kept for the heading below and at least one request under it.
        cancel = [cancel_entry(request) for request in mine]
        fit(blocks, cancel, BLOCKS_MAX - (4 if decidable else 0), _more("of yours"))
    if decidable:
        blocks.append(_section("*Waiting for your decision*"))
        decide = [decision_entry(r) for r in decidable]
        fit(blocks, decide, BLOCKS_MAX, _more("waiting: decide them on their messages first"))
    if not blocks:
        blocks.append(_section("No pending requests."))
    return {
        "text": f"{len(mine)} pending request(s) of yours, {len(decidable)} to decide",
        "blocks": blocks,
    }


def _more(what: str) -> Callable[[int], dict[str, Any]]:
    return lambda left: _context(f"… and {left} more {what}.")


def report_message(report: Report) -> Message:
    """``/token report`` for admins (R6)."""
    return {"text": "tokenbot report", "blocks": [_section(report_text(report))]}


def report_text(report: Report) -> str:
    """The report's figures (R6), as lines of one section."""
    lines = [
        f"*Seats* (members holding an active personal token): {report.seats}",
        f"*Service users* (never seats): {report.service_users}",
    ]
    for kind in ("user", "service"):
        states = report.tokens.get(kind, {})
        shown: tuple[str, ...] = ("active", "revoked", "expired")
        if states.get("being delivered"):
            shown += ("being delivered",)
        summary = ", ".join(f"{states.get(s, 0)} {s}" for s in shown)
        lines.append(f"*{kind.title()} tokens:* {summary}")
    return "\n".join(lines)


PURPOSE_SHOWN, OWNERS_SHOWN, NAMES_SHOWN = 1000, 10, 30
SCOPE_SHOWN = 200  # characters of one permission, escaped


def _scope_list(scopes: list[str], budget: int = SCOPES_SHOWN_CHARS) -> str:
    """Permissions as code spans, as many as fit in ``budget`` characters (a section has
    3,000), then how many more there are."""
    shown: list[str] = []
    used = 0
    for scope in scopes:
        span = f"`{inline(scope, SCOPE_SHOWN)}`"
        if used + len(span) + 1 > budget - len(" and 9999 more"):
            break
        shown.append(span)
        used += len(span) + 1
    more = len(scopes) - len(shown)
    return " ".join(shown) + (f" and {more} more" if more > 0 else "")


def _service_header(service: ServiceUserInfo) -> dict[str, Any]:
    scopes = _scope_list(service.scopes)
    owners = ", ".join(f"<@{o}>" for o in service.owners[:OWNERS_SHOWN]) or "none active"
    if len(service.owners) > OWNERS_SHOWN:
        owners += f" and {len(service.owners) - OWNERS_SHOWN} more"
    purpose = inline(service.purpose, PURPOSE_SHOWN) or "—"
    tokens = "" if service.tokens else "\nNo active tokens."
    return _section(
        f"*{inline(service.name, NAME_SHOWN)}* · {purpose}\n"
        f"Permissions: {scopes} · owners: {owners}{tokens}"
    )


def _service_token(info: TokenInfo) -> list[dict[str, Any]]:
    """One token, with its Rotate and Revoke buttons (R16, R18)."""
    text = (
        f"`{info.hint}` *{inline(info.name, NAME_SHOWN)}*\nLast used {when(info.last_used_at)} · "
        f"expires if unused by {when(info.cutoff_at)}"
    )
    return [_section(text), token_buttons(info, SERVICE_ROTATE_ACTION, SERVICE_REVOKE_ACTION)]


# Tokens shown under one service user: its entry stays within half a message, however
# many tokens the service-token cap lets it have.
TOKENS_PER_SERVICE_SHOWN = 10


def _service_entry(service: ServiceUserInfo) -> list[dict[str, Any]]:
    shown = service.tokens[:TOKENS_PER_SERVICE_SHOWN]
    blocks = [
        _service_header(service),
        owner_buttons(service.id),
        *(block for t in shown for block in _service_token(t)),
    ]
    if left := len(service.tokens) - len(shown):
        blocks.append(
            _context(f"… and {left} more of its tokens: revoke or rotate these to see them.")
        )
    return blocks


def service_list_message(
    services: list[ServiceUserInfo], admin: bool, command: str, notice: str | None = None
) -> Message:
    """``/token service list``: service users with their permissions, owners and active
    tokens, each token with Rotate and Revoke buttons (R5, R16, R18), and buttons to add
    and remove owners. Admins see all, owners theirs."""
    blocks: list[dict[str, Any]] = [_section(notice)] if notice else []
    if not services:
        text = (
            "There are no service users yet."
            if admin
            else f"You own no service users. Ask for one with `{command} service request`."
        )
        blocks.append(_section(text))
        return {"text": notice or text, "blocks": blocks}
    whose = "All service users" if admin else "Your service users"
    blocks.append(_section(f"*{whose}* ({len(services)})"))
    entries = [_service_entry(s) for s in services]
    fit(blocks, entries, BLOCKS_MAX, _more("service users that do not fit here"))
    total = sum(len(s.tokens) for s in services)
    return {
        "text": notice or f"{len(services)} service user(s), {total} active token(s).",
        "blocks": blocks,
    }


DIGEST_MAX = 20


def digest_message(requests: list[RequestInfo], command: str) -> Message:
    """The daily reminder to an approver of the requests waiting for a decision (R25)."""
    blocks = [_section(f":hourglass: *Requests waiting for a decision* ({len(requests)})")]
    blocks += [
        _section(
            f"<@{r.requester}> asks for *{inline(r.name, NAME_SHOWN)}* "
            f"({_scope_list(r.scopes)}) since {when(r.created_at)}; "
            f"expires unanswered {when(r.expires_at)}."
        )
        for r in requests[:DIGEST_MAX]
    ]
    more = f"and {len(requests) - DIGEST_MAX} more. " if len(requests) > DIGEST_MAX else ""
    blocks.append(_context(f"{more}Decide on the request messages, or with `{command} requests`."))
    return {
        "text": f"{len(requests)} service-token request(s) wait for a decision.",
        "blocks": blocks,
    }


def orphaned_message(member: str, names: list[str], command: str) -> Message:
    """To the admins: a deactivated member was the only owner of these service users
    (R17), each with a Take over button. Their tokens keep working."""
    text = (
        f"<@{member}> was deactivated and was the only owner of the service user(s) below. "
        "Their tokens keep working, but nobody will be reminded before they expire except "
        f"the admins. Take one over to own it, or review them with `{command} service list`."
    )
    blocks = [_section(text)]
    blocks += [
        _section(f"*{inline(name, NAME_SHOWN)}*", take_over_button(name))
        for name in names[:NAMES_SHOWN]
    ]
    if len(names) > NAMES_SHOWN:
        blocks.append(
            _context(f"… and {len(names) - NAMES_SHOWN} more: add owners to them from the list.")
        )
    listed = ", ".join(inline(n, NAME_SHOWN) for n in names[:NAMES_SHOWN])
    return {
        "text": clip(f"<@{member}> was deactivated; left with no owner: {listed}", 3000),
        "blocks": blocks,
    }
