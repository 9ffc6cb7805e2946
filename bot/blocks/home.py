"""The App Home tab: the member's tokens, their pending requests, the approvers' queue and,
for admins, the report's figures, within a view's 100 blocks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.blocks.service import cancel_entry, decision_entry, report_text
from bot.blocks.text import fit
from bot.blocks.tokens import (
    OPEN_GENERATE_ACTION,
    _context,
    _plain,
    _section,
    token_entry,
)
from storage.approvals import RequestInfo
from storage.reports import Report
from storage.tokens import TokenInfo

# Blocks each part may take at most: together with the heading, the Generate button, a
# notice and the footer, never more than a view's 100 (each part ends with "… and N more"
# when it is cut).
TOKENS_MAX, MINE_MAX, QUEUE_MAX, REPORT_MAX = 40, 12, 32, 3


@dataclass(frozen=True)
class Home:
    """What one member's Home tab shows."""

    tokens: Sequence[TokenInfo]
    cap: int
    mine: Sequence[RequestInfo] = field(default_factory=tuple)  # their pending requests
    decidable: Sequence[RequestInfo] = field(default_factory=tuple)  # the approvers' queue
    report: Report | None = None  # for admins


def _more(command: str) -> Callable[[int], dict[str, Any]]:
    return lambda left: _context(f"… and {left} more: `{command}` shows them all.")


def _part(
    blocks: list[dict[str, Any]],
    heading: str,
    entries: list[list[dict[str, Any]]],
    most: int,
    more: Callable[[int], dict[str, Any]],
) -> None:
    """A heading and as many whole entries as fit in ``most`` blocks."""
    blocks.append({"type": "divider"})
    blocks.append(_section(heading))
    fit(blocks, entries, len(blocks) + most - 2, more)


def home_view(home: Home, command: str, notice: str | None = None) -> dict[str, Any]:
    """The Home tab of one member (SPEC §4): their tokens with cutoffs and buttons, their
    pending requests with Cancel, the requests they may decide with Approve and Deny,
    and for an admin the report's figures. ``notice`` says what just happened."""
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain("Your API tokens")}]
    if notice:
        blocks.append(_section(notice))
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": OPEN_GENERATE_ACTION,
                    "text": _plain("Generate token"),
                    "style": "primary",
                }
            ],
        }
    )
    if home.tokens:
        blocks.append(_section(f"*Your active tokens* ({len(home.tokens)} of {home.cap})"))
        entries = [token_entry(t) for t in home.tokens]
        fit(blocks, entries, len(blocks) + TOKENS_MAX - 1, _more(f"{command} list"))
    else:
        blocks.append(_section("You have no active tokens."))
    if home.mine:
        entries = [cancel_entry(r) for r in home.mine]
        _part(blocks, "*Your pending requests*", entries, MINE_MAX, _more(f"{command} requests"))
    if home.decidable:
        entries = [decision_entry(r) for r in home.decidable]
        heading = "*Waiting for your decision*"
        _part(blocks, heading, entries, QUEUE_MAX, _more(f"{command} requests"))
    if home.report is not None:
        figures = [[_section(report_text(home.report))]]
        _part(blocks, "*Your organization*", figures, REPORT_MAX, _more(f"{command} report"))
    blocks.append(_context("A new token is shown to you once, in a message only you can see."))
    return {"type": "home", "blocks": blocks}
