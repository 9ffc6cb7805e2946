"""Every message and view tokenbot builds stays inside Slack's Block Kit limits, whatever
people typed: beyond them Slack refuses the whole message (invalid_blocks). The limits
are the stand-in's, which refuses what Slack refuses."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from bot.blocks import service as blocks
from bot.blocks import tokens as token_blocks
from bot.blocks.text import clip, escape, inline, quoted
from bot.standin.server import message_problems, view_problems
from storage.approvals import RequestInfo
from storage.reports import Report
from storage.services import ServiceUserInfo
from storage.tokens import IssuedToken, TokenInfo
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


def token(n: int = 1, name: str = TOKEN_NAME) -> TokenInfo:
    return TokenInfo(
        id=n,
        kind="service",
        name=name,
        hint="tbs_…abcd",
        created_at=NOW,
        last_used_at=NOW,
        cutoff_at=NOW + timedelta(days=30),
        state="active",
    )


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


def service(n: int, tokens: int) -> ServiceUserInfo:
    return ServiceUserInfo(
        id=n,
        name=SERVICE_NAME,
        purpose=PURPOSE,
        scopes=SCOPES,
        owners=[f"U{m:010d}" for m in range(40)],
        tokens=[token(n * 100 + t) for t in range(tokens)],
    )


def texts(obj: Any) -> list[str]:
    """Every string a person could read in ``obj`` (text objects, top-level text)."""
    if isinstance(obj, dict):
        found = [obj["text"]] if isinstance(obj.get("text"), str) else []
        return found + [t for key, v in obj.items() if key != "text" for t in texts(v)]
    if isinstance(obj, list):
        return [t for v in obj for t in texts(v)]
    return []


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


REQUESTS = [
    request(),
    request(purpose=PURPOSE_LINES, justification=JUSTIFICATION_LINES),
    request(state="approved", decided_by=USER, decided_at=NOW),
    request(state="denied", decided_by=USER, decided_at=NOW, reason=REASON),
    request(state="denied", decided_by=USER, decided_at=NOW, reason=JUSTIFICATION_LINES),
    request(state="cancelled", decided_by=USER, decided_at=NOW),
    request(state="expired", decided_by=USER, decided_at=NOW),
]


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: f"{r.state}-{r.purpose[:2]!r}")
def test_every_request_message_fits_at_the_most_escaping(req: RequestInfo) -> None:
    issued = IssuedToken(token(), "tbs_" + "x" * 60)
    fits_a_message(blocks.approval_request_message(req))
    fits_a_message(blocks.decided_message(req))
    fits_a_message(blocks.request_sent_message(req, "3 approver(s) by DM"))
    fits_a_message(blocks.service_token_message(issued, req))
    fits_a_message(blocks.denied_message(req))
    fits_a_view(blocks.deny_modal(req, '{"request": 1}'))


def test_the_request_modal_fits() -> None:
    fits_a_view(blocks.service_request_modal(["api:read", "api:write"], "{}" * 700))


def test_30_requests_each_way_fit_in_one_message_and_say_how_many_more() -> None:
    message = blocks.requests_message(
        [request(n) for n in range(30)], [request(100 + n) for n in range(30)]
    )
    fits_a_message(message)
    more = [t for t in texts(message["blocks"]) if t.startswith("… and")]
    assert more and more[-1].startswith("… and ")
    shown = sum(1 for b in message["blocks"] if b.get("type") == "actions")
    assert f"… and {30 - shown} more waiting" in more[-1]


def test_requests_of_one_kind_use_all_the_room() -> None:
    message = blocks.requests_message([request(n) for n in range(60)], [])
    fits_a_message(message)
    assert len(message["blocks"]) == 50 and "… and 12 more of yours" in texts(message)[-1]


def test_token_messages_fit_at_the_most_escaping() -> None:
    many = [token(n) for n in range(100)]
    issued = IssuedToken(token(), "tbu_" + "x" * 60)
    fits_a_message(token_blocks.token_list_message(many, 100, notice=inline(TOKEN_NAME)))
    fits_a_message(token_blocks.cap_reached_message(100, many))
    fits_a_message(token_blocks.new_token_message(issued))
    fits_a_message(token_blocks.revoke_confirm_message(token()))
    fits_a_message(token_blocks.text_message(token_blocks.revoked_notice(token())))
    fits_a_message(token_blocks.text_message(token_blocks.kept_notice(token())))
    fits_a_message(token_blocks.refusal_message(f"No token named “{TOKEN_NAME * 60}”.", "See."))
    fits_a_message(token_blocks.unknown_subcommand_message("/token", JUSTIFICATION))
    fits_a_message(token_blocks.help_message("/token", notice=inline(JUSTIFICATION)))
    for service_user in (None, SERVICE_NAME):
        fits_a_message(token_blocks.reminder_message(token(), 7, True, "/token", service_user))
        fits_a_message(token_blocks.expired_message(token(), "/token", service_user))


def test_views_fit_at_the_most_escaping() -> None:
    fits_a_view(token_blocks.home_view([token(n) for n in range(100)], 100, inline(REASON)))
    fits_a_view(token_blocks.generate_modal(TOKEN_NAME, "{}"))


def test_the_service_list_of_a_large_organization_fits_in_one_message() -> None:
    services = [service(n, 20 if n == 0 else n % 3) for n in range(60)]
    message = blocks.service_list_message(services, True, "/token", notice="n" * 300)
    fits_a_message(message)
    assert "more service users that do not fit" in texts(message)[-1]
    assert sum(1 for b in message["blocks"] if "accessory" in b) >= 20  # all of the first's


def test_a_long_digest_an_orphan_report_and_the_report_fit() -> None:
    fits_a_message(blocks.digest_message([request(n) for n in range(100)], "/token"))
    fits_a_message(blocks.orphaned_message(USER, [SERVICE_NAME] * 200, "/token"))
    report = Report(seats=10**6, service_users=10**6, tokens={"user": {"active": 10**6}})
    fits_a_message(blocks.report_message(report))


def test_clipping_never_cuts_an_escape_in_half() -> None:
    for size in range(1, 40):
        for text in ("&" * 50, "<" * 50, "a&b>c" * 10):
            clipped = clip(escape(text), size)
            assert len(clipped) <= size
            assert not re.search(r"&(?!(amp|lt|gt);)", clipped), clipped


def test_user_text_cannot_make_markup_or_pass_for_the_apps_own_lines() -> None:
    typed = "fine\n*Approved by admin*\n<!channel> `code` ~gone~ _it_ > quote"
    one_line = inline(typed)
    assert "\n" not in one_line and "<" not in one_line
    for mark in "*`~_":
        assert mark not in one_line
    lines = quoted(typed).splitlines()
    assert len(lines) == 3 and all(line.startswith("> ") for line in lines)
    assert not any(mark in line[2:] for line in lines for mark in "*`~_<>")


@pytest.mark.parametrize(
    ("size", "element", "offered"),
    [
        (4, "checkboxes", 4),
        (10, "checkboxes", 10),
        (11, "multi_static_select", 11),
        (150, "multi_static_select", 100),
    ],
)
def test_the_permission_picker_stays_within_slacks_option_limits(
    size: int, element: str, offered: int
) -> None:
    catalogue = [f"scope-{n:03d}:" + "x" * 90 for n in range(size)]  # text longer than 75
    view = blocks.service_request_modal(catalogue, "{}")
    assert view_problems(view) == []
    [picker] = [b["element"] for b in view["blocks"] if b.get("block_id") == blocks.SCOPES_BLOCK]
    assert picker["type"] == element and len(picker["options"]) == offered
    assert picker["options"][0]["value"] == catalogue[0]  # the value is the scope itself
