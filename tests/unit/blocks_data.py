"""Data for the Block Kit builders' tests, and ways to look into what they build.

``token``, ``request`` and ``service`` default to the most escaping people can type (the
size tests in test_blocks.py); the behaviour tests pass plain values instead."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

from bot.standin.server import message_problems, view_problems
from storage.approvals import RequestInfo
from storage.services import ServiceUserInfo
from storage.tokens import TokenInfo
from tests.conftest import NOW

# The most escaping each field can need: every character becomes five (&amp;), or a line
# of its own (each quoted line carries "> ").
TOKEN_NAME = "&" * 64  # R15: 64 printable characters
SERVICE_NAME = "&" * 40
PURPOSE = "&" * 500
PURPOSE_LINES = "\n&" * 250
JUSTIFICATION = "&" * 1000
JUSTIFICATION_LINES = "\n<" * 500
REASON = "<" * 1000
SCOPES = [f"{'&' * 60}-{n}" for n in range(80)]
USER = "U0123456789ABCDEF"
# What the app itself may put between < and >: mentions and dates.
APP_MARKUP = re.compile(r"<(@U\w+|!date\^[^<>]*|#C\w+)>")
CUTOFF = NOW + timedelta(days=30)


def token(n: int = 1, name: str = TOKEN_NAME, **changes: Any) -> TokenInfo:
    base = TokenInfo(
        id=n,
        kind="service",
        name=name,
        hint="tbs_…abcd",
        created_at=NOW,
        last_used_at=NOW,
        cutoff_at=CUTOFF,
        state="active",
    )
    return replace(base, **changes)


def request(n: int = 1, **changes: Any) -> RequestInfo:
    base = RequestInfo(
        id=n,
        org="T0",
        requester=USER,
        service_user_id=None,
        name=SERVICE_NAME,
        purpose=PURPOSE,
        scopes=SCOPES,
        justification=JUSTIFICATION,
        state="pending",
        decided_by=None,
        decided_at=None,
        reason=None,
        created_at=NOW,
        expires_at=NOW + timedelta(days=7),
    )
    return replace(base, **changes)


def service(n: int, tokens: int, **changes: Any) -> ServiceUserInfo:
    base = ServiceUserInfo(
        id=n,
        name=SERVICE_NAME,
        purpose=PURPOSE,
        scopes=SCOPES,
        owners=[f"U{m:010d}" for m in range(40)],
        tokens=[token(n * 100 + t) for t in range(tokens)],
    )
    return replace(base, **changes)


def texts(obj: Any) -> list[str]:
    """Every string a person could read in ``obj`` (text objects, top-level text)."""
    if isinstance(obj, dict):
        found = [obj["text"]] if isinstance(obj.get("text"), str) else []
        return found + [t for key, v in obj.items() if key != "text" for t in texts(v)]
    if isinstance(obj, list):
        return [t for v in obj for t in texts(v)]
    return []


def elements(obj: Any, kind: str) -> list[dict[str, Any]]:
    """Every element of type ``kind`` (a button, a checkbox group...) anywhere in ``obj``,
    in the order a person sees them."""
    if isinstance(obj, dict):
        found = [obj] if obj.get("type") == kind else []
        return found + [e for v in obj.values() for e in elements(v, kind)]
    if isinstance(obj, list):
        return [e for v in obj for e in elements(v, kind)]
    return []


def buttons(obj: Any) -> list[dict[str, Any]]:
    return elements(obj, "button")


def types(message: dict[str, Any]) -> list[str]:
    """The types of a message's or view's blocks, in order."""
    return [block["type"] for block in message["blocks"]]


def block_text(block: dict[str, Any]) -> str:
    """What a section or context block says."""
    if block["type"] == "context":
        return " ".join(e["text"] for e in block["elements"])
    return str(block["text"]["text"])


def well_formed(text: str) -> None:
    """No escape cut in half, and nothing between < and > but the app's own markup."""
    assert not re.search(r"&(?!(amp|lt|gt);)", text), text[-40:]
    stripped = APP_MARKUP.sub("", text)
    assert "<" not in stripped and ">" not in stripped.replace("\n> ", "\n").removeprefix("> ")


def fits_a_message(message: dict[str, Any]) -> None:
    assert message_problems(message) == []
    for text in texts(message["blocks"]):
        well_formed(text)


def fits_a_view(view: dict[str, Any]) -> None:
    assert view_problems(view) == []
