"""What the messages and modals about personal tokens say, and carry for the listeners
that answer their buttons and submissions (bot/listeners/actions.py, views.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from bot.blocks import tokens as token_blocks
from bot.blocks.home import Home, home_view
from bot.blocks.text import CONFIRM_MAX
from bot.blocks.tokens import (
    CANCEL_ACTION,
    CANCEL_ROTATE_ACTION,
    GENERATE_CALLBACK,
    KEEP_ALIVE_ACTION,
    NAME_BLOCK,
    NAME_INPUT,
    OPEN_GENERATE_ACTION,
    REVOKE_ACTION,
    ROTATE_ACTION,
    SERVICE_REVOKE_ACTION,
    SERVICE_ROTATE_ACTION,
    when,
)
from bot.listeners.payload import malformed
from storage.tokens import NAME_MAX, IssuedToken, Rotation, TokenInfo
from tests.conftest import NOW
from tests.unit.blocks_data import (
    CUTOFF,
    TOKEN_NAME,
    block_text,
    buttons,
    fits_a_message,
    fits_a_view,
    token,
    types,
)

HINT = "tbu_…wxyz"
SECRET = "tbu_" + "S3cr3tS3cr3t" * 5
NOW_SHOWN = "<!date^1795867200^{date_short_pretty} {time}|2026-11-28 12:00 UTC>"
CUTOFF_SHOWN = "<!date^1798459200^{date_short_pretty} {time}|2026-12-28 12:00 UTC>"
STAR = "\u2217"  # what a typed asterisk becomes: it reads the same but makes nothing bold


def mine(n: int = 1, name: str = "ci-deploy", **changes: Any) -> TokenInfo:
    """A member's personal token, with a plain name."""
    return token(n, name, **{"kind": "user", "hint": HINT, **changes})


NEW_HINT = "tbu_…S3cr"
GRACE_END_SHOWN = "<!date^1795953600^{date_short_pretty} {time}|2026-11-29 12:00 UTC>"


def rotation(hours: int = 24, service_user: str | None = None, **changes: Any) -> Rotation:
    """ "ci-deploy" rotated at NOW, and its new token, not yet shown."""
    new = mine(2, hint=NEW_HINT, last_used_at=None, **changes)
    old = mine(1, rotated_at=NOW, **changes)
    return Rotation(old, IssuedToken(new, SECRET), timedelta(hours=hours), service_user)


def test_times_show_in_the_readers_time_zone_with_a_utc_fallback() -> None:
    assert when(NOW) == NOW_SHOWN
    assert when(CUTOFF) == CUTOFF_SHOWN
    assert when(None) == "never"
    assert when(None, "not yet") == "not yet"


def test_a_text_message_says_the_apps_words_in_one_verbatim_section() -> None:
    message = token_blocks.text_message("Nothing was *revoked*.")
    assert message == {
        "text": "Nothing was *revoked*.",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "Nothing was *revoked*.", "verbatim": True},
            }
        ],
    }


def test_a_text_message_cuts_its_section_to_3000_characters_but_not_its_fallback() -> None:
    message = token_blocks.text_message("a" * 4000)
    section = block_text(message["blocks"][0])
    assert len(section) == 3000 and section.endswith("a…")
    assert message["text"] == "a" * 4000
    fits_a_message(message)


def test_a_refusal_shows_the_typed_words_as_plain_text_then_the_apps_own() -> None:
    message = token_blocks.refusal_message("No token named “*x*\n<!here>”.", "See `/token list`.")
    said = block_text(message["blocks"][0])
    assert said == f"No token named “{STAR}x{STAR} &lt;!here&gt;”. See `/token list`."
    assert message["text"] == said
    assert token_blocks.refusal_message("Too many.")["text"] == "Too many."  # no trailing space


def test_help_lists_every_subcommand_under_the_commands_own_name() -> None:
    message = token_blocks.help_message("/tok")
    assert types(message) == ["section", "context"]
    listing = block_text(message["blocks"][0])
    assert listing.startswith("*Personal API tokens*\n")
    for usage in (
        "`/tok new [name]`",
        "`/tok list`",
        "`/tok revoke <name>`",
        "`/tok rotate <name>`",
        "`/tok service request`",
        "`/tok service list`",
        "`/tok requests`",
        "`/tok report`",
        "`/tok webhooks`",
        "`/tok help`",
    ):
        assert usage in listing
    assert "/token" not in listing
    assert "shown once" in block_text(message["blocks"][1])
    assert message["text"] == "tokenbot help"


def test_help_with_a_notice_puts_it_first_and_in_the_fallback() -> None:
    message = token_blocks.help_message("/tok", notice="Try this:")
    assert types(message) == ["section", "section", "context"]
    assert block_text(message["blocks"][0]) == "Try this:"
    assert message["text"] == "Try this:"


def test_an_unknown_subcommand_is_named_before_the_help() -> None:
    message = token_blocks.unknown_subcommand_message("/token", "frobnicate all of it")
    expected = "I don't know `frobnicate`. Here is what I can do:"
    assert message["text"] == expected
    assert block_text(message["blocks"][0]) == expected
    assert "`/token new [name]`" in block_text(message["blocks"][1])


def test_an_unknown_subcommand_is_quoted_in_at_most_40_characters_without_markup() -> None:
    message = token_blocks.unknown_subcommand_message("/token", "<!channel>" + "`x" * 40)
    word = message["text"].removeprefix("I don't know `").removesuffix("`. Here is what I can do:")
    assert len(word) == 40 and word.endswith("…")
    assert word.startswith("&lt;!channel&gt;") and "`" not in word


def test_the_generate_modal_asks_for_the_name_where_the_submission_reads_it() -> None:
    view = token_blocks.generate_modal("", '{"channel_id": "C1"}')
    assert view["type"] == "modal" and view["callback_id"] == GENERATE_CALLBACK
    assert view["private_metadata"] == '{"channel_id": "C1"}'
    assert [view[k]["text"] for k in ("title", "submit", "close")] == [
        "Generate API token",
        "Generate",
        "Cancel",
    ]
    assert types(view) == ["input", "context"]
    name = view["blocks"][0]
    assert name["block_id"] == NAME_BLOCK and name["label"]["text"] == "Token name"
    assert name["element"]["type"] == "plain_text_input"
    assert name["element"]["action_id"] == NAME_INPUT
    assert name["element"]["max_length"] == NAME_MAX == 64
    assert "initial_value" not in name["element"]
    assert name["hint"]["text"] == "1 to 64 characters, unique among your active tokens."
    fits_a_view(view)


def test_the_generate_modal_prefills_the_typed_name_cut_to_the_longest_allowed() -> None:
    element = token_blocks.generate_modal("ci-deploy", "{}")["blocks"][0]["element"]
    assert element["initial_value"] == "ci-deploy"
    element = token_blocks.generate_modal("n" * 100, "{}")["blocks"][0]["element"]
    assert element["initial_value"] == "n" * NAME_MAX


def test_a_new_token_is_shown_once_in_a_code_block_and_never_in_the_notification() -> None:
    message = token_blocks.new_token_message(IssuedToken(mine(), SECRET))
    assert types(message) == ["section", "section", "context"]
    assert block_text(message["blocks"][1]) == f"```{SECRET}```"
    assert json.dumps(message, ensure_ascii=False).count(SECRET) == 1
    assert SECRET not in message["text"]
    assert message["text"] == (
        "Your new token “ci-deploy” is ready. Copy it now: it won't be shown again."
    )
    assert "*ci-deploy*" in block_text(message["blocks"][0])
    assert f"Expires if unused by {CUTOFF_SHOWN}." in block_text(message["blocks"][2])
    assert buttons(message) == []
    fits_a_message(message)


def test_no_other_token_message_shows_the_secret() -> None:
    issued = IssuedToken(mine(), SECRET)
    info = issued.info
    others: list[dict[str, Any]] = [
        token_blocks.token_list_message([info], 10),
        token_blocks.cap_reached_message(1, [info]),
        token_blocks.revoke_confirm_message(info),
        token_blocks.text_message(token_blocks.revoked_notice(info)),
        token_blocks.text_message(token_blocks.kept_notice(info)),
        home_view(Home([info], 10), "/token"),
        token_blocks.reminder_message(info, 7, True, "/token"),
        token_blocks.reminder_message(info, 1, True, "/token", "ci-deployer"),
        token_blocks.expired_message(info, "/token"),
        token_blocks.expired_message(info, "/token", "ci-deployer"),
        token_blocks.revoke_button(info),
        token_blocks.rotate_button(info),
        token_blocks.rotate_confirm_message(info),
        token_blocks.text_message(token_blocks.rotated_notice(rotation(), True)),
    ]
    for built in others:
        dumped = json.dumps(built, ensure_ascii=False)
        assert SECRET not in dumped and SECRET[4:20] not in dumped
        assert "ci-deploy" in dumped  # built from the same token


def test_the_revoke_button_carries_the_token_id_and_asks_to_confirm() -> None:
    button = token_blocks.revoke_button(mine(42))
    assert button["action_id"] == REVOKE_ACTION
    assert button["value"] == "42"
    assert button["style"] == "danger" and button["text"]["text"] == "Revoke"
    confirm = button["confirm"]
    assert confirm["title"]["text"] == "Revoke this token?"
    assert confirm["text"]["text"] == (
        f"*ci-deploy* (`{HINT}`) stops working at once. This cannot be undone."
    )
    assert (confirm["confirm"]["text"], confirm["deny"]["text"]) == ("Revoke", "Keep it")
    assert confirm["style"] == "danger"


def test_the_rotate_button_carries_the_token_id_and_asks_to_confirm() -> None:
    button = token_blocks.rotate_button(mine(42))
    assert (button["action_id"], button["value"]) == (ROTATE_ACTION, "42")
    assert button["text"]["text"] == "Rotate" and "style" not in button
    confirm = button["confirm"]
    assert confirm["title"]["text"] == "Rotate this token?"
    assert confirm["text"]["text"] == (
        f"*ci-deploy* (`{HINT}`) gets a replacement, shown to you once. The old token works "
        "until the grace period ends."
    )
    assert (confirm["confirm"]["text"], confirm["deny"]["text"]) == ("Rotate", "Cancel")
    service = token_blocks.rotate_button(mine(42), SERVICE_ROTATE_ACTION)
    assert service["action_id"] == SERVICE_ROTATE_ACTION and "confirm" in service


def test_the_rotate_confirm_dialog_stays_within_slacks_300_characters() -> None:
    confirm = token_blocks.rotate_button(token(1, TOKEN_NAME))["confirm"]["text"]["text"]
    assert len(confirm) <= CONFIRM_MAX
    assert "…" in confirm and confirm.endswith("until the grace period ends.")


def test_rotate_by_command_asks_first_with_rotate_and_cancel_buttons() -> None:
    message = token_blocks.rotate_confirm_message(mine(7))
    assert types(message) == ["section", "actions"]
    assert block_text(message["blocks"][0]) == (
        f"Rotate *ci-deploy* (`{HINT}`)? You get a new token with the same name and "
        "permissions, shown once. The old one keeps working until the grace period ends: "
        "put the new one in its place before then."
    )
    rotate, cancel = buttons(message)
    assert (rotate["action_id"], rotate["value"]) == (ROTATE_ACTION, "7")
    assert (cancel["action_id"], cancel["text"]["text"]) == (CANCEL_ROTATE_ACTION, "Cancel")
    assert message["text"] == "Rotate “ci-deploy”?"
    fits_a_message(token_blocks.rotate_confirm_message(token(1, TOKEN_NAME)))


def test_a_rotated_token_is_shown_once_with_when_the_old_one_stops() -> None:
    message = token_blocks.rotated_token_message(rotation())
    assert types(message) == ["section", "section", "context"]
    assert block_text(message["blocks"][0]) == (
        ":key: Your token *ci-deploy* was rotated. Here is the new one: copy it now, it will "
        "not be shown again."
    )
    assert block_text(message["blocks"][1]) == f"```{SECRET}```"
    assert json.dumps(message, ensure_ascii=False).count(SECRET) == 1
    assert SECRET not in message["text"]
    assert block_text(message["blocks"][2]).startswith(
        f"The old token (`{HINT}`) keeps working until {GRACE_END_SHOWN}, then stops: put "
        "the new one where it was before then. The new one expires if unused by "
        f"{CUTOFF_SHOWN}."
    )
    assert buttons(message) == []
    fits_a_message(message)


def test_with_no_grace_period_the_old_token_is_said_to_work_no_more() -> None:
    message = token_blocks.rotated_token_message(rotation(hours=0))
    assert block_text(message["blocks"][2]).startswith(f"The old token (`{HINT}`) no longer works.")


def test_a_rotated_service_token_names_its_service_user() -> None:
    message = token_blocks.rotated_token_message(rotation(service_user="ci-deployer"))
    assert block_text(message["blocks"][0]).startswith(
        ":key: The token *ci-deploy* of the service user *ci-deployer* was rotated."
    )


def test_after_a_rotation_the_screen_says_where_the_token_is_or_that_nothing_changed() -> None:
    assert token_blocks.rotated_notice(rotation(), True) == (
        ":white_check_mark: Rotated *ci-deploy*: the new token is shown to you once, in the "
        f"message below. The old token (`{HINT}`) keeps working until {GRACE_END_SHOWN}, "
        "then stops: put the new one where it was before then."
    )
    assert token_blocks.rotated_notice(rotation(), False) == (
        ":warning: The new token for *ci-deploy* could not be shown to you, so nothing "
        f"changed: `{HINT}` works as before."
    )


def test_a_service_tokens_revoke_button_is_routed_to_the_service_list() -> None:
    button = token_blocks.revoke_button(mine(42), SERVICE_REVOKE_ACTION)
    assert button["action_id"] == SERVICE_REVOKE_ACTION and button["value"] == "42"
    assert "confirm" in button


def test_the_revoke_confirm_dialog_stays_within_slacks_300_characters() -> None:
    confirm = token_blocks.revoke_button(token(1, TOKEN_NAME))["confirm"]["text"]["text"]
    assert len(confirm) <= CONFIRM_MAX == 300
    assert "…" in confirm and confirm.endswith("This cannot be undone.")


def test_the_token_list_shows_each_token_with_its_dates_and_rotate_and_revoke_buttons() -> None:
    tokens = [mine(1, last_used_at=None), mine(2, "laptop", created_at=NOW - timedelta(days=1))]
    message = token_blocks.token_list_message(tokens, 10)
    assert types(message) == ["section", "section", "actions", "section", "actions"]
    assert block_text(message["blocks"][0]) == "*Your active tokens* (2 of 10)"
    assert block_text(message["blocks"][1]) == (
        f"*ci-deploy*  `{HINT}`\nCreated {NOW_SHOWN} · last used never · "
        f"expires if unused by {CUTOFF_SHOWN}"
    )
    assert "*laptop*" in block_text(message["blocks"][3])
    assert f"last used {NOW_SHOWN}" in block_text(message["blocks"][3])
    assert [(b["action_id"], b["value"]) for b in buttons(message)] == [
        (ROTATE_ACTION, "1"),
        (REVOKE_ACTION, "1"),
        (ROTATE_ACTION, "2"),
        (REVOKE_ACTION, "2"),
    ]
    assert all("confirm" in b for b in buttons(message))
    assert message["text"] == "You have 2 active tokens."
    fits_a_message(message)


def test_the_fallback_text_of_a_list_of_one_token_says_token() -> None:
    message = token_blocks.token_list_message([mine(1)], 10)
    assert message["text"] == "You have 1 active token."


def test_an_empty_token_list_says_so_and_how_to_make_one() -> None:
    message = token_blocks.token_list_message([], 10)
    assert types(message) == ["section"]
    assert block_text(message["blocks"][0]) == "You have no active tokens. Generate one with `new`."
    assert message["text"] == "You have no active tokens."
    with_notice = token_blocks.token_list_message([], 10, notice="Revoked *x*.")
    assert types(with_notice) == ["section", "section"]
    assert block_text(with_notice["blocks"][0]) == "Revoked *x*."
    assert with_notice["text"] == "Revoked *x*."


def test_a_notice_on_the_token_list_comes_first_and_is_the_fallback() -> None:
    message = token_blocks.token_list_message([mine()], 10, notice="Revoked *old*.")
    assert block_text(message["blocks"][0]) == "Revoked *old*."
    assert block_text(message["blocks"][1]) == "*Your active tokens* (1 of 10)"
    assert message["text"] == "Revoked *old*."


@pytest.mark.parametrize(
    ("count", "notice", "shown", "more", "size"),
    [
        (24, None, 24, None, 49),
        (25, None, 24, 1, 50),
        (100, None, 24, 76, 50),
        (100, "Revoked.", 23, 77, 49),
    ],
)
def test_a_long_token_list_stops_within_50_blocks_and_says_how_many_more(
    count: int, notice: str | None, shown: int, more: int | None, size: int
) -> None:
    message = token_blocks.token_list_message([mine(n) for n in range(count)], 100, notice)
    assert len(message["blocks"]) == size  # Slack's limit for a message is 50
    assert len(buttons(message)) == 2 * shown  # Rotate and Revoke, each token whole
    last = message["blocks"][-1]
    if more is None:
        assert last["type"] == "actions"  # the last token's buttons: nothing left out
    else:
        assert last["type"] == "context"
        assert block_text(last) == f"… and {more} more, not shown here."
    assert message["text"] == (notice or f"You have {count} active tokens.")


def test_at_the_cap_the_notice_says_the_limit_above_the_tokens_to_revoke() -> None:
    tokens = [mine(n, f"t{n}") for n in range(10)]
    message = token_blocks.cap_reached_message(10, tokens)
    notice = block_text(message["blocks"][0])
    assert notice.startswith(":no_entry: You have reached the limit of 10 active tokens")
    assert "Revoke one below" in notice
    assert message["text"] == notice
    assert block_text(message["blocks"][1]) == "*Your active tokens* (10 of 10)"
    revokes = [b for b in buttons(message) if b["action_id"] == REVOKE_ACTION]
    assert [b["value"] for b in revokes] == [str(n) for n in range(10)]


def test_above_a_lowered_cap_the_notice_says_how_many_to_revoke() -> None:
    tokens = [mine(n, f"t{n}") for n in range(5)]
    notice = block_text(token_blocks.cap_reached_message(2, tokens)["blocks"][0])
    assert "limit of 2 active tokens per member. Revoke 4 below to make room" in notice


def test_revoke_by_command_asks_first_with_revoke_and_cancel_buttons() -> None:
    message = token_blocks.revoke_confirm_message(mine(7))
    assert types(message) == ["section", "actions"]
    assert block_text(message["blocks"][0]) == (
        f"Revoke *ci-deploy* (`{HINT}`)? Anything using it stops working at once. "
        "This cannot be undone."
    )
    revoke, cancel = buttons(message)
    assert (revoke["action_id"], revoke["value"], revoke["style"]) == (REVOKE_ACTION, "7", "danger")
    assert (cancel["action_id"], cancel["text"]["text"]) == (CANCEL_ACTION, "Cancel")
    assert "value" not in cancel
    assert message["text"] == "Revoke “ci-deploy”?"


def test_the_revoked_and_kept_notices_name_the_token_and_what_changed() -> None:
    assert token_blocks.revoked_notice(mine()) == (
        f":white_check_mark: Revoked *ci-deploy* (`{HINT}`). It no longer works."
    )
    assert token_blocks.kept_notice(mine()) == (
        f":white_check_mark: Kept *ci-deploy* (`{HINT}`): it now expires if unused by "
        f"{CUTOFF_SHOWN}."
    )


def test_a_typed_name_cannot_make_markup_in_the_apps_sentences() -> None:
    sly = mine(name="*bold* <!channel>")
    expected = f"{STAR}bold{STAR} &lt;!channel&gt;"
    assert f"Revoked *{expected}*" in token_blocks.revoked_notice(sly)
    listing = token_blocks.token_list_message([sly], 10)
    assert block_text(listing["blocks"][1]).startswith(f"*{expected}*  `{HINT}`")
    assert token_blocks.revoke_confirm_message(sly)["text"] == f"Revoke “{expected}”?"


def test_the_generate_button_is_a_click_that_must_bring_a_trigger_to_open_the_modal() -> None:
    click = {"type": "block_actions", "user": {"id": "U1"}}
    assert malformed({**click, "actions": [{"action_id": OPEN_GENERATE_ACTION}]}) == (
        "trigger_id: missing"
    )
    assert malformed({**click, "actions": [{"action_id": REVOKE_ACTION, "value": "1"}]}) is None


def test_a_reminder_names_the_token_its_cutoff_and_offers_revoke_keep_and_rotate() -> None:
    message = token_blocks.reminder_message(mine(5), 7, True, "/tok")
    assert types(message) == ["section", "actions", "context"]
    assert block_text(message["blocks"][0]) == (
        f":warning: Your token *ci-deploy* (`{HINT}`) has not been used and expires in 7 "
        f"days, at {CUTOFF_SHOWN}. Last used: {NOW_SHOWN}. Using it keeps it alive."
    )
    revoke, keep, rotate = buttons(message)
    assert (rotate["action_id"], rotate["value"], rotate["text"]["text"]) == (
        ROTATE_ACTION,
        "5",
        "Rotate",
    )
    assert rotate["confirm"]["title"]["text"] == "Rotate this token?"
    assert (revoke["action_id"], revoke["value"], revoke["text"]["text"]) == (
        REVOKE_ACTION,
        "5",
        "Revoke now",
    )
    assert revoke["confirm"]["title"]["text"] == "Revoke this token?"
    assert (keep["action_id"], keep["value"], keep["text"]["text"]) == (
        KEEP_ALIVE_ACTION,
        "5",
        "Keep for another period",
    )
    assert block_text(message["blocks"][2]) == "See all the tokens with `/tok list`."
    assert message["text"] == "The token “ci-deploy” expires in 7 days if unused."
    fits_a_message(message)


def test_the_last_reminder_says_tomorrow_and_may_leave_out_keep() -> None:
    message = token_blocks.reminder_message(mine(5, last_used_at=None), 1, False, "/tok")
    assert "expires tomorrow, at" in block_text(message["blocks"][0])
    assert "Last used: never." in block_text(message["blocks"][0])
    assert [b["action_id"] for b in buttons(message)] == [REVOKE_ACTION, ROTATE_ACTION]
    assert message["text"] == "The token “ci-deploy” expires tomorrow if unused."


def test_a_service_tokens_reminder_names_its_service_user_and_acts_from_the_list() -> None:
    message = token_blocks.reminder_message(mine(5), 7, True, "/tok", "ci-deployer")
    assert block_text(message["blocks"][0]).startswith(
        f":warning: The token *ci-deploy* (`{HINT}`) of the service user *ci-deployer* "
        "has not been used"
    )
    assert [b["action_id"] for b in buttons(message)] == [
        SERVICE_REVOKE_ACTION,
        KEEP_ALIVE_ACTION,
        SERVICE_ROTATE_ACTION,
    ]
    assert block_text(message["blocks"][2]) == "See all the tokens with `/tok service list`."


def test_an_expiry_notice_says_when_and_what_to_do_next() -> None:
    message = token_blocks.expired_message(mine(), "/tok")
    assert types(message) == ["section"] and buttons(message) == []
    assert block_text(message["blocks"][0]) == (
        f"Your token *ci-deploy* (`{HINT}`) expired at {CUTOFF_SHOWN} after a period "
        "without use, and no longer works. If it is still needed, generate a new token "
        "with `/tok new` and put it where the old one was."
    )
    assert message["text"] == "The token “ci-deploy” has expired."


def test_a_service_tokens_expiry_notice_says_to_ask_for_a_new_one() -> None:
    message = token_blocks.expired_message(mine(), "/tok", "ci-deployer")
    said = block_text(message["blocks"][0])
    assert said.startswith(f"The token *ci-deploy* (`{HINT}`) of the service user *ci-deployer*")
    assert "ask for a new token with `/tok service request` (ci-deployer)" in said
    assert message["text"] == "The token “ci-deploy” has expired."
