"""The App Home tab's builder: the member's tokens, their pending requests, the approvers'
queue and an admin's figures, each part cut to its share of a view's 100 blocks."""

from __future__ import annotations

from bot.blocks.home import MINE_MAX, QUEUE_MAX, TOKENS_MAX, Home, home_view
from bot.blocks.service import APPROVE_ACTION, CANCEL_REQUEST_ACTION, DENY_ACTION
from bot.blocks.tokens import OPEN_GENERATE_ACTION, REVOKE_ACTION, ROTATE_ACTION
from storage.reports import Report
from tests.unit.blocks_data import fits_a_view, request, token

REPORT = Report(seats=3, service_users=2, tokens={"user": {"active": 4}, "service": {}})


def texts(obj: object) -> list[str]:
    """Every text object's words in ``obj``, in order."""
    if isinstance(obj, dict):
        if obj.get("type") in ("mrkdwn", "plain_text"):
            return [obj["text"]]
        return [t for v in obj.values() for t in texts(v)]
    if isinstance(obj, list):
        return [t for v in obj for t in texts(v)]
    return []


def buttons(view: dict) -> list[tuple[str, str | None]]:
    found = []
    for block in view["blocks"]:
        elements = block.get("elements", []) if block["type"] == "actions" else []
        accessory = [block["accessory"]] if "accessory" in block else []
        for element in [*elements, *accessory]:
            if element.get("type") == "button":
                found.append((element["action_id"], element.get("value")))
    return found


def test_a_member_with_nothing_sees_the_generate_button_and_no_other_part() -> None:
    view = home_view(Home([], 10), "/token")
    assert view["type"] == "home"
    assert [b["type"] for b in view["blocks"]] == ["header", "actions", "section", "context"]
    assert buttons(view) == [(OPEN_GENERATE_ACTION, None)]
    assert "You have no active tokens." in texts(view)
    assert "shown to you once" in view["blocks"][-1]["elements"][0]["text"]


def test_every_part_shows_with_its_buttons() -> None:
    home = Home(
        [token(1, name="ci")],
        10,
        mine=[request(5, name="deployer")],
        decidable=[request(6, name="backup", requester="U0BOB")],
        report=REPORT,
    )
    view = home_view(home, "/token", notice="Revoked *old*.")
    shown = "\n".join(texts(view))
    assert view["blocks"][1]["text"]["text"] == "Revoked *old*."
    assert "*Your active tokens* (1 of 10)" in shown
    assert "*Your pending requests*" in shown and "*deployer*" in shown
    assert "*Waiting for your decision*" in shown and "backup" in shown
    assert "*Your organization*" in shown and "*Seats* (members holding" in shown
    assert buttons(view) == [
        (OPEN_GENERATE_ACTION, None),
        (ROTATE_ACTION, "1"),
        (REVOKE_ACTION, "1"),
        (CANCEL_REQUEST_ACTION, "5"),
        (APPROVE_ACTION, "6"),
        (DENY_ACTION, "6"),
    ]
    fits_a_view(view)


def test_no_report_is_shown_without_one() -> None:
    view = home_view(Home([token(1)], 10, decidable=[request(2)]), "/token")
    assert not any("Seats" in t for t in texts(view))


def test_each_part_is_cut_to_its_share_and_says_where_to_see_the_rest() -> None:
    home = Home(
        [token(n, name=f"t{n}") for n in range(200)],
        1000,
        mine=[request(n) for n in range(100)],
        decidable=[request(n, requester="U0BOB") for n in range(100)],
        report=REPORT,
    )
    view = home_view(home, "/token", notice="A notice.")
    assert len(view["blocks"]) <= 100
    fits_a_view(view)
    actions = [action for action, _ in buttons(view)]
    # Each part keeps a block for its "… and N more" line (and its heading).
    tokens_shown = (TOKENS_MAX - 2) // 2  # a token is a line and its buttons
    assert actions.count(REVOKE_ACTION) == actions.count(ROTATE_ACTION) == tokens_shown
    assert actions.count(CANCEL_REQUEST_ACTION) == MINE_MAX - 3
    assert actions.count(APPROVE_ACTION) == (QUEUE_MAX - 3) // 2
    shown = texts(view)
    assert f"… and {200 - tokens_shown} more: `/token list` shows them all." in shown
    assert f"… and {100 - (MINE_MAX - 3)} more: `/token requests` shows them all." in shown
    assert any("Seats" in t for t in shown)  # the report still has its room
