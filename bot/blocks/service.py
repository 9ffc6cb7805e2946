"""Messages and modals about service users and their approval (R20-R25)."""

from __future__ import annotations

from typing import Any

from bot.blocks.tokens import Message, _context, _escape, _plain, _section, when
from storage.approvals import Report, RequestInfo
from storage.tokens import IssuedToken

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


def service_request_modal(catalogue: list[str], private_metadata: str) -> dict[str, Any]:
    options = [{"text": _plain(scope), "value": scope} for scope in catalogue]
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
                {"type": "checkboxes", "action_id": INPUT, "options": options},
                optional=True,
                hint="For a new service user.",
            ),
            _input(WHY_BLOCK, "Why you need it", _text_input(True, 1000)),
            _context("An approver decides; the token is then shown to you once."),
        ],
    }


def _request_summary(request: RequestInfo) -> str:
    kind = "a new service user" if request.service_user_id is None else "service user"
    scopes = " ".join(f"`{_escape(s)}`" for s in request.scopes)
    return (
        f"<@{request.requester}> asks for a token for {kind} *{_escape(request.name)}*\n"
        f"*Permissions:* {scopes}\n*Purpose:* {_escape(request.purpose) or '—'}\n"
        f"*Why:* {_escape(request.justification)}"
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
                        "text": f"A token for *{_escape(request.name)}* is issued "
                        "and shown to the requester.",
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
        "text": f"Service token request for {request.name}",
        "blocks": [
            _section(_request_summary(request)),
            buttons,
            _context(f"Expires unanswered {when(request.expires_at)}."),
        ],
    }


def decided_message(request: RequestInfo) -> Message:
    """What every copy of the request shows once decided (R22)."""
    if request.state == "approved":
        outcome = f":white_check_mark: Approved by <@{request.decided_by}>"
    elif request.state == "denied":
        outcome = f":no_entry: Denied by <@{request.decided_by}>: {_escape(request.reason or '')}"
    else:
        outcome = f"This request was {request.state}"
    outcome += f" · {when(request.decided_at)}"
    return {
        "text": f"Service token request for {request.name}: {request.state}",
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
                f"Deny the token for *{_escape(request.name)}* asked by <@{request.requester}>?"
            ),
            _input(REASON_BLOCK, "Reason (the requester sees it)", _text_input(True, 1000)),
        ],
    }


def request_sent_message(request: RequestInfo, where: str) -> Message:
    text = (
        f"Your request for a token for *{_escape(request.name)}* went to {where}. "
        "You will see the token here once it is approved."
    )
    return {"text": text, "blocks": [_section(text)]}


def service_token_message(issued: IssuedToken, request: RequestInfo) -> Message:
    text = (
        f":key: Your request was approved by <@{request.decided_by}>. The token for "
        f"*{_escape(request.name)}* is below: copy it now, it will not be shown again."
    )
    return {
        "text": f"Your token for {request.name} is ready. Copy it now.",
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
        f"Your request for a token for *{_escape(request.name)}* was denied by "
        f"<@{request.decided_by}>: {_escape(request.reason or '')}"
    )
    return {"text": text, "blocks": [_section(text)]}


CANCEL_REQUEST_ACTION = "cancel_request"


def requests_message(mine: list[RequestInfo], decidable: list[RequestInfo]) -> Message:
    """``/token requests``: what the caller asked for (with Cancel), and what they may
    decide (with Approve and Deny)."""
    blocks: list[dict[str, Any]] = []
    if mine:
        blocks.append(_section("*Your pending requests*"))
        for request in mine:
            blocks.append(
                _section(
                    f"*{_escape(request.name)}* · asked {when(request.created_at)}",
                    {
                        "type": "button",
                        "action_id": CANCEL_REQUEST_ACTION,
                        "text": _plain("Cancel"),
                        "value": str(request.id),
                    },
                )
            )
    if decidable:
        blocks.append(_section("*Waiting for your decision*"))
        for request in decidable:
            blocks += approval_request_message(request)["blocks"][:2]
    if not blocks:
        blocks.append(_section("No pending requests."))
    return {
        "text": f"{len(mine)} pending request(s) of yours, {len(decidable)} to decide",
        "blocks": blocks,
    }


def report_message(report: Report) -> Message:
    """``/token report`` for admins (R6)."""
    lines = [
        f"*Seats* (members holding an active personal token): {report.seats}",
        f"*Service users* (never seats): {report.service_users}",
    ]
    for kind in ("user", "service"):
        states = report.tokens.get(kind, {})
        summary = ", ".join(f"{states.get(s, 0)} {s}" for s in ("active", "revoked", "expired"))
        lines.append(f"*{kind.title()} tokens:* {summary}")
    return {"text": "tokenbot report", "blocks": [_section("\n".join(lines))]}
