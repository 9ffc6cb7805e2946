"""What admins type and click, read in the listeners: a mention, a count of events, the
values their buttons carry."""

from __future__ import annotations

import pytest

from bot.listeners.payload import (
    StaleButton,
    audit_position,
    audit_size,
    member_button,
    mentioned_member,
    unescaped,
)


@pytest.mark.parametrize(
    ("text", "member"),
    [
        ("<@U024BE7LH|bob>", "U024BE7LH"),
        ("<@U024BE7LH>", "U024BE7LH"),
        ("  <@W0123ABCD|grid.user>  ", "W0123ABCD"),
        ("@bob", None),
        ("bob", None),
        ("<@U024BE7LH> <@U0OTHER>", None),
        ("<#C024BE7LR|general>", None),
        ("<!here>", None),
        ("<@u024be7lh>", None),
        ("", None),
    ],
)
def test_a_member_is_named_by_exactly_one_mention(text: str, member: str | None) -> None:
    assert mentioned_member(text) == member


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", 20),
        ("1", 1),
        ("100", 100),
        (" 50 ", 50),
        *[(bad, None) for bad in ("0", "101", "-3", "2.5", "lots", "2 3", "1e2")],
    ],
)
def test_an_audit_count_is_1_to_100_and_20_when_none_is_said(text: str, size: int | None) -> None:
    assert audit_size(text) == size


def test_buttons_carry_what_they_page_from_or_act_on_else_they_are_out_of_date() -> None:
    assert member_button({"value": "12:U0ALICE"}) == (12, "U0ALICE")
    assert audit_position({"value": "20:153"}) == (20, 153)
    for value in ("12", "x:U0ALICE", "12:alice", "", None):
        with pytest.raises(StaleButton):
            member_button({"value": value})
    for value in ("0:153", "101:153", "20", "20:x", None):
        with pytest.raises(StaleButton):
            audit_position({"value": value})


def test_command_text_is_read_as_typed() -> None:
    assert unescaped("a &amp;lt; b &lt;x&gt; &amp;") == "a &lt; b <x> &"
