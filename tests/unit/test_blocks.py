"""Every message and view tokenbot builds stays inside Slack's Block Kit limits, whatever
people typed: beyond them Slack refuses the whole message (invalid_blocks). The limits
are the stand-in's, which refuses what Slack refuses."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from bot.blocks import service as blocks
from bot.blocks import tokens as token_blocks
from bot.blocks.home import Home, home_view
from bot.blocks.text import clip, escape, fit, inline, quoted
from bot.standin.server import view_problems
from storage.approvals import RequestInfo
from storage.reports import Report
from storage.tokens import IssuedToken
from tests.conftest import NOW
from tests.unit.blocks_data import (
    JUSTIFICATION,
    JUSTIFICATION_LINES,
    PURPOSE_LINES,
    REASON,
    SERVICE_NAME,
    TOKEN_NAME,
    USER,
    fits_a_message,
    fits_a_view,
    request,
    service,
    texts,
    token,
)

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
    big = 10**6
    report = Report(seats=big, service_users=big, tokens={"user": {"active": big}})
    many = Home([token(n) for n in range(100)], 100, [request(n) for n in range(30)])
    everything = replace(many, decidable=[request(n) for n in range(30)], report=report)
    fits_a_view(home_view(everything, "/token", inline(REASON)))
    fits_a_view(token_blocks.generate_modal(TOKEN_NAME, "{}"))


def test_the_service_list_of_a_large_organization_fits_in_one_message() -> None:
    services = [service(n, 20 if n == 0 else n % 3) for n in range(60)]
    message = blocks.service_list_message(services, True, "/token", notice="n" * 300)
    fits_a_message(message)
    assert "more service users that do not fit" in texts(message)[-1]
    assert sum(1 for b in message["blocks"] if b["type"] == "actions") >= 20  # the first's


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


def test_escaping_leaves_no_mention_link_or_date_to_make() -> None:
    assert escape("a&b <!channel> <https://x|y>") == (
        "a&amp;b &lt;!channel&gt; &lt;https://x|y&gt;"
    )


def test_clip_keeps_what_fits_and_ends_what_is_cut_with_an_ellipsis() -> None:
    assert clip("abcd", 4) == "abcd"
    assert clip("abcdef", 4) == "abc…"
    assert clip(escape("a&b"), 4) == "a…"  # not "a&a…": the escape goes whole


def test_inline_text_is_one_line_within_its_limit() -> None:
    assert inline("first\nsecond\r\nthird") == "first second third"
    assert inline("x" * 10, 5) == "xxxx…"
    assert inline("a" * 3000) == "a" * 3000 and len(inline("a" * 3001)) == 3000


def test_quoted_text_starts_every_line_with_a_quote_mark_even_when_empty() -> None:
    assert quoted("") == "> "
    assert quoted("one\n\ntwo") == "> one\n> \n> two"
    assert quoted("x" * 10, 6) == "> xxx…"


def more(left: int) -> dict[str, Any]:
    return {"type": "context", "more": left}


def test_fit_shows_whole_entries_while_they_fit_then_says_how_many_more() -> None:
    heading = {"type": "section"}
    entries = [[{"entry": n, "part": 1}, {"entry": n, "part": 2}] for n in range(5)]
    shown_blocks: list[dict[str, Any]] = [heading]
    assert fit(shown_blocks, entries, 6, more) == 2
    assert shown_blocks == [heading, *entries[0], *entries[1], more(3)]


def test_fit_keeps_no_room_for_a_more_line_after_the_last_entry() -> None:
    shown_blocks: list[dict[str, Any]] = [{"type": "section"}]
    assert fit(shown_blocks, [[{"entry": n}] for n in range(3)], 4, more) == 3
    assert len(shown_blocks) == 4 and more(0) not in shown_blocks


def test_fit_never_splits_an_entry_nor_shows_one_after_a_gap() -> None:
    shown_blocks: list[dict[str, Any]] = []
    entries = [[{"big": n} for n in range(9)], [{"small": 1}]]
    assert fit(shown_blocks, entries, 5, more) == 0
    assert shown_blocks == [more(2)]


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
