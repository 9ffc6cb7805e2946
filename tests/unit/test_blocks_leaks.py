"""What the messages about a pasted token say: to its owners, which token, where, and
what to do; to whoever pasted it, that it is revoked and the message should go. The
token itself is never in them (they are built from what may be shown of it)."""

from __future__ import annotations

import re
from typing import Any

from bot.blocks.leaks import HINTS_SHOWN, leak_noticed_message, leaked_message
from bot.standin.server import message_problems
from storage.tokens import TokenInfo
from tests.unit.blocks_data import SERVICE_NAME, block_text, texts, token, well_formed

PERMALINK = "https://demo.slack.com/archives/C0GENERAL/p1700000000000100"
_LINK = re.compile(r"<https://[^<>|\s]+\|[^<>]*>")


def mine(name: str = "ci-deploy", n: int = 1) -> TokenInfo:
    return token(n, name, kind="user", hint=f"tbu_…{n:04d}", state="revoked")


def said(message: dict[str, Any]) -> str:
    return "\n".join(block_text(block) for block in message["blocks"])


def fits(message: dict[str, Any]) -> None:
    """Within Slack's limits, and no markup but the app's own (its one link included)."""
    assert message_problems(message) == []
    for text in texts(message["blocks"]):
        well_formed(_LINK.sub("", text))


def test_the_owner_is_told_which_token_where_by_whom_and_how_to_get_a_new_one() -> None:
    message = leaked_message(
        mine(), "/token", channel="C0GENERAL", permalink=PERMALINK, poster="U0BOB"
    )
    text = said(message)
    assert "Your token *ci-deploy* (`tbu_…0001`) was revoked" in text
    assert f"pasted in <{PERMALINK}|a message> in <#C0GENERAL> by <@U0BOB>" in text
    assert "generate a new token with `/token new`" in text
    assert "delete" in text and "no longer works" in text
    assert message["text"] == "The token “ci-deploy” was revoked: it was pasted in a message."
    fits(message)


def test_a_service_tokens_owners_are_told_to_ask_for_a_new_one() -> None:
    info = token(2, "deploy", kind="service", hint="tbs_…abcd")
    message = leaked_message(
        info, "/token", channel="G0PRIVATE", permalink=None, poster=None, service_user="ci-bot"
    )
    text = said(message)
    assert "The token *deploy* (`tbs_…abcd`) of the service user *ci-bot*" in text
    assert "pasted in a message in <#G0PRIVATE>, where" in text  # no link, nobody named
    assert "`/token service request` (ci-bot)" in text


def test_a_leak_in_a_dm_with_the_app_is_said_so() -> None:
    message = leaked_message(mine(), "/token", channel="D0ALICE", permalink=None, poster="U0A")
    assert "in a direct message with the app by <@U0A>" in said(message)


def test_a_link_or_id_that_could_break_out_of_the_apps_markup_is_not_used() -> None:
    for link in ("https://x.slack.com/a|<!channel>", "javascript:alert(1)", "https://a b"):
        message = leaked_message(
            mine(), "/token", channel="C0<!here>", permalink=link, poster="U0<!channel>"
        )
        text = said(message)
        assert "pasted in a message in a conversation (C0&lt;!here&gt;)," in text
        assert "<@" not in text and "|" not in text
        fits(message)


def test_the_owners_message_fits_at_the_most_escaping() -> None:
    fits(
        leaked_message(
            token(),
            "/token",
            channel="C" + "0" * 31,
            permalink=PERMALINK,
            poster="U" + "0" * 31,
            service_user=SERVICE_NAME,
        )
    )


def test_the_poster_is_asked_to_delete_their_message_and_shown_only_hints() -> None:
    one = said(leak_noticed_message([mine()]))
    assert "Your message shows the token `tbu_…0001`. It has been revoked" in one
    assert one.endswith("Please delete your message.")
    two = said(leak_noticed_message([mine("a", 1), mine("b", 2)]))
    assert "the tokens `tbu_…0001`, `tbu_…0002`. They have been revoked" in two
    in_dm = leak_noticed_message([mine()], in_app_dm=True)
    assert said(in_dm).endswith("Please delete your message above.")
    assert in_dm["text"] == "A token you pasted was revoked: please delete your message above."


def test_a_message_full_of_tokens_names_the_first_and_counts_the_rest() -> None:
    many = [mine(str(n), n) for n in range(1, 1001)]
    message = leak_noticed_message(many)
    text = said(message)
    assert text.count("`tbu_…") == HINTS_SHOWN
    assert f"and {1000 - HINTS_SHOWN} more. They have been revoked" in text
    fits(message)
