"""What the messages and modals about service users and their requests say, and carry for
the listeners that answer their buttons and submissions (bot/listeners/service.py,
actions.py)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from bot.blocks import service as blocks
from bot.blocks.owners import ADD_OWNER_ACTION, REMOVE_OWNER_ACTION, TAKE_OVER_ACTION
from bot.blocks.service import (
    APPROVE_ACTION,
    CANCEL_REQUEST_ACTION,
    DENY_ACTION,
    DENY_CALLBACK,
    INPUT,
    NAME_BLOCK,
    PURPOSE_BLOCK,
    REASON_BLOCK,
    REQUEST_CALLBACK,
    SCOPES_BLOCK,
    WHY_BLOCK,
)
from bot.blocks.tokens import SERVICE_REVOKE_ACTION, SERVICE_ROTATE_ACTION, when
from bot.listeners.payload import malformed, private_metadata, request_id_of
from storage.approvals import JUSTIFICATION_MAX, PURPOSE_MAX, REASON_MAX, RequestInfo
from storage.reports import Report
from storage.services import ServiceUserInfo
from storage.tokens import IssuedToken
from tests.conftest import NOW
from tests.unit.blocks_data import (
    CUTOFF,
    USER,
    block_text,
    buttons,
    fits_a_message,
    fits_a_view,
    request,
    token,
    types,
)

APPROVER = "U0APPROVER"
SECRET = "tbs_" + "S3cr3tS3cr3t" * 5
EXPIRES = NOW + timedelta(days=7)

OWNER_ACTIONS = {ADD_OWNER_ACTION, REMOVE_OWNER_ACTION}


def asked(n: int = 9, **changes: Any) -> RequestInfo:
    """A request for a new service user, as a member would type it."""
    plain = {
        "name": "ci-deployer",
        "purpose": "Deploys the site\nevery night",
        "scopes": ["api:read", "api:write"],
        "justification": "CI needs it",
    }
    return request(n, **{**plain, **changes})


def denied(**changes: Any) -> RequestInfo:
    return asked(
        **{
            "state": "denied",
            "decided_by": APPROVER,
            "decided_at": NOW,
            "reason": "Too broad\nask for read only",
            **changes,
        }
    )


def approved(**changes: Any) -> RequestInfo:
    return asked(**{"state": "approved", "decided_by": APPROVER, "decided_at": NOW, **changes})


def owned(n: int = 1, tokens: int = 2, **changes: Any) -> ServiceUserInfo:
    """A service user with plain names, owned by two members."""
    plain = ServiceUserInfo(
        id=n,
        name="ci-deployer",
        purpose="Deploys the site",
        scopes=["api:read"],
        owners=["U1", "U2"],
        tokens=[token(n * 100 + t, f"deploy-{t}") for t in range(tokens)],
    )
    return replace(plain, **changes)


def inputs(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A modal's input blocks by block_id, where a submission's values are keyed."""
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


# The request modal


def test_the_request_modal_has_the_inputs_the_submission_reads() -> None:
    view = blocks.service_request_modal(["api:read"], '{"channel_id": "C1"}')
    assert view["type"] == "modal" and view["callback_id"] == REQUEST_CALLBACK
    assert view["private_metadata"] == '{"channel_id": "C1"}'
    assert [view[k]["text"] for k in ("title", "submit", "close")] == [
        "Request service token",
        "Send request",
        "Cancel",
    ]
    fields = inputs(view)
    assert list(fields) == [NAME_BLOCK, PURPOSE_BLOCK, SCOPES_BLOCK, WHY_BLOCK]
    assert all(f["element"]["action_id"] == INPUT for f in fields.values())
    assert [f["optional"] for f in fields.values()] == [False, True, True, False]
    assert [f["label"]["text"] for f in fields.values()] == [
        "Service user",
        "What it is for",
        "Permissions",
        "Why you need it",
    ]
    assert "approver decides" in block_text(view["blocks"][-1])
    fits_a_view(view)


def test_the_request_modals_text_inputs_stop_where_the_request_would_be_refused() -> None:
    fields = inputs(blocks.service_request_modal(["api:read"], "{}"))
    name, purpose, why = (fields[b]["element"] for b in (NAME_BLOCK, PURPOSE_BLOCK, WHY_BLOCK))
    assert (name["max_length"], name["multiline"]) == (40, False)  # a service name's longest
    assert (purpose["max_length"], purpose["multiline"]) == (PURPOSE_MAX, True)
    assert (why["max_length"], why["multiline"]) == (JUSTIFICATION_MAX, True)


def test_the_permission_picker_offers_each_permission_by_its_name() -> None:
    view = blocks.service_request_modal(["api:read", "reports:read"], "{}")
    picker = inputs(view)[SCOPES_BLOCK]["element"]
    assert picker["type"] == "checkboxes"
    assert [(o["text"]["text"], o["value"]) for o in picker["options"]] == [
        ("api:read", "api:read"),
        ("reports:read", "reports:read"),
    ]


@pytest.mark.parametrize(("size", "element"), [(10, "checkboxes"), (11, "multi_static_select")])
def test_past_10_permissions_the_picker_becomes_a_multi_select(size: int, element: str) -> None:
    catalogue = [f"scope:{n}" for n in range(size)]
    picker = inputs(blocks.service_request_modal(catalogue, "{}"))[SCOPES_BLOCK]["element"]
    assert picker["type"] == element and picker["action_id"] == INPUT
    assert [o["value"] for o in picker["options"]] == catalogue
    if element == "multi_static_select":
        assert picker["placeholder"]["text"] == "Choose permissions"


def test_a_long_permission_is_cut_to_75_characters_to_read_but_sent_back_whole() -> None:
    long, too_long = "a" * 100, "b" * 151
    picker = inputs(blocks.service_request_modal([long, too_long, "api:read"], "{}"))
    options = picker[SCOPES_BLOCK]["element"]["options"]
    assert options[0]["text"]["text"] == "a" * 74 + "…"
    assert options[0]["value"] == long
    # Over Slack's 150 characters a value could not come back: it is not offered.
    assert [o["value"] for o in options] == [long, "api:read"]


# The request, to the approvers


def test_an_approval_request_says_who_asks_for_what_and_why() -> None:
    message = blocks.approval_request_message(asked())
    assert types(message) == ["section", "actions", "context"]
    assert block_text(message["blocks"][0]) == (
        f"<@{USER}> asks for a token for a new service user *ci-deployer*\n"
        "*Permissions:* `api:read` `api:write`\n"
        "*Purpose:*\n> Deploys the site\n> every night\n"
        "*Why:*\n> CI needs it"
    )
    assert block_text(message["blocks"][2]) == f"Expires unanswered {when(EXPIRES)}."
    assert message["text"] == "Service token request for ci-deployer"
    fits_a_message(message)


def test_a_request_for_an_existing_service_user_says_so_and_may_have_no_purpose() -> None:
    summary = block_text(
        blocks.approval_request_message(asked(service_user_id=3, purpose=""))["blocks"][0]
    )
    assert summary.startswith(f"<@{USER}> asks for a token for service user *ci-deployer*\n")
    assert "*Purpose:*\n> —\n" in summary


def test_approve_asks_to_confirm_and_deny_asks_for_a_reason_both_naming_the_request() -> None:
    approve, deny = buttons(blocks.approval_request_message(asked(9)))
    assert (approve["action_id"], approve["value"], approve["style"]) == (
        APPROVE_ACTION,
        "9",
        "primary",
    )
    confirm = approve["confirm"]
    assert confirm["title"]["text"] == "Approve this request?"
    assert confirm["text"]["text"] == (
        "A token for *ci-deployer* is issued and shown to the requester."
    )
    assert (confirm["confirm"]["text"], confirm["deny"]["text"]) == ("Approve", "Back")
    assert (deny["action_id"], deny["value"], deny["style"]) == (DENY_ACTION, "9", "danger")
    assert "confirm" not in deny  # it opens the reason's modal, which can be closed


def test_deny_is_a_click_that_must_bring_a_trigger_to_open_its_modal() -> None:
    click = {"type": "block_actions", "user": {"id": "U1"}}
    for button in buttons(blocks.approval_request_message(asked(9))):
        action = {"action_id": button["action_id"], "value": button["value"]}
        expected = "trigger_id: missing" if button["action_id"] == DENY_ACTION else None
        assert malformed({**click, "actions": [action]}) == expected


def test_a_long_permission_list_says_how_many_more_there_are() -> None:
    scopes = [f"scope-{n:02d}" for n in range(100)]
    summary = block_text(blocks.approval_request_message(asked(scopes=scopes))["blocks"][0])
    [line] = [x for x in summary.splitlines() if x.startswith("*Permissions:*")]
    shown = re.findall(r"`scope-\d\d`", line)
    assert 40 < len(shown) < 100
    assert line.endswith(f" and {100 - len(shown)} more")


# The decision


def test_every_copy_of_an_approved_request_says_who_approved_it_and_when() -> None:
    message = blocks.decided_message(approved())
    assert types(message) == ["section", "section"]
    assert buttons(message) == []  # nobody can decide it again
    assert block_text(message["blocks"][0]).startswith(f"<@{USER}> asks for a token")
    assert block_text(message["blocks"][1]) == (
        f":white_check_mark: Approved by <@{APPROVER}> · {when(NOW)}"
    )
    assert message["text"] == "Service token request for ci-deployer: approved"


def test_every_copy_of_a_denied_request_quotes_the_reason_under_the_decision() -> None:
    message = blocks.decided_message(denied())
    assert buttons(message) == []
    assert block_text(message["blocks"][1]) == (
        f":no_entry: Denied by <@{APPROVER}> · {when(NOW)}\n> Too broad\n> ask for read only"
    )
    assert message["text"] == "Service token request for ci-deployer: denied"


def test_a_request_closed_without_a_decision_says_why_on_one_line() -> None:
    closed = asked(state="cancelled", decided_at=NOW, reason="The name was\ntaken.")
    assert block_text(blocks.decided_message(closed)["blocks"][1]) == (
        f"This request was cancelled: The name was taken. · {when(NOW)}"
    )
    lapsed = blocks.decided_message(asked(state="expired", decided_at=NOW))
    assert block_text(lapsed["blocks"][1]) == f"This request was expired · {when(NOW)}"


def test_an_approved_token_that_could_not_be_delivered_says_it_was_revoked() -> None:
    message = blocks.decided_message(approved(), undelivered=True, command="/tok")
    outcome = block_text(message["blocks"][1])
    assert outcome.startswith(f":white_check_mark: Approved by <@{APPROVER}>")
    assert f"could not be delivered to <@{USER}>" in outcome
    assert "revoked at once and never worked" in outcome
    assert f"<@{USER}> can ask again with `/tok service request`." in outcome
    assert "could not be delivered" not in block_text(
        blocks.decided_message(approved())["blocks"][1]
    )


def test_the_deny_modal_asks_for_the_reason_and_carries_the_request() -> None:
    view = blocks.deny_modal(asked(9), json.dumps({"request": 9}))
    assert view["callback_id"] == DENY_CALLBACK
    assert request_id_of(private_metadata(view)) == 9
    assert [view[k]["text"] for k in ("title", "submit", "close")] == [
        "Deny request",
        "Deny",
        "Back",
    ]
    assert types(view) == ["section", "input"]
    assert block_text(view["blocks"][0]) == (
        f"Deny the token for *ci-deployer* asked by <@{USER}>?"
    )
    reason = inputs(view)[REASON_BLOCK]
    assert reason["label"]["text"] == "Reason (the requester sees it)"
    assert reason["optional"] is False
    element = reason["element"]
    assert (element["action_id"], element["multiline"]) == (INPUT, True)
    assert element["max_length"] == REASON_MAX
    fits_a_view(view)


# What the requester hears


def test_the_requester_is_told_where_the_request_went() -> None:
    message = blocks.request_sent_message(asked(), "#approvals")
    expected = (
        "Your request for a token for *ci-deployer* went to #approvals. "
        "You will see the token here once it is approved."
    )
    assert types(message) == ["section"]
    assert message["text"] == block_text(message["blocks"][0]) == expected


def test_an_approved_token_is_shown_once_in_a_code_block_and_never_in_the_notification() -> None:
    issued = IssuedToken(token(5, "ci-deployer"), SECRET)
    message = blocks.service_token_message(issued, approved())
    assert types(message) == ["section", "section", "context"]
    assert block_text(message["blocks"][0]).startswith(
        f":key: Your request was approved by <@{APPROVER}>. The token for *ci-deployer*"
    )
    assert block_text(message["blocks"][1]) == f"```{SECRET}```"
    assert json.dumps(message, ensure_ascii=False).count(SECRET) == 1
    assert SECRET not in message["text"]
    assert message["text"] == "Your token for ci-deployer is ready. Copy it now."
    assert f"Expires if unused by {when(CUTOFF)}." in block_text(message["blocks"][2])
    fits_a_message(message)


def test_no_other_service_message_shows_the_secret() -> None:
    issued = IssuedToken(token(5, "ci-deployer"), SECRET)
    with_token = replace(owned(tokens=0), tokens=[issued.info])
    others: list[dict[str, Any]] = [
        blocks.approval_request_message(approved()),
        blocks.decided_message(approved()),
        blocks.decided_message(approved(), undelivered=True),
        blocks.request_sent_message(approved(), "#approvals"),
        blocks.denied_message(denied()),
        blocks.closed_as_taken_message(asked(state="cancelled"), "/token"),
        blocks.requests_message([approved()], [approved()]),
        blocks.service_list_message([with_token], True, "/token"),
        blocks.digest_message([approved()], "/token"),
    ]
    for built in others:
        dumped = json.dumps(built, ensure_ascii=False)
        assert SECRET not in dumped and SECRET[4:20] not in dumped
        assert "ci-deployer" in dumped


def test_a_denial_reaches_the_requester_with_the_reason_quoted() -> None:
    message = blocks.denied_message(denied())
    expected = (
        f"Your request for a token for *ci-deployer* was denied by <@{APPROVER}>:\n"
        "> Too broad\n> ask for read only"
    )
    assert block_text(message["blocks"][0]) == expected
    assert message["text"] == expected


def test_a_request_closed_as_taken_tells_the_requester_why_and_what_to_do() -> None:
    taken = "the name ci-deployer was given to another service user meanwhile"
    closed = asked(state="cancelled", reason=taken)
    message = blocks.closed_as_taken_message(closed, "/tok")
    said = block_text(message["blocks"][0])
    assert said.startswith(
        "Your request for a token for *ci-deployer* was closed: "
        f"{taken}. Ask again with another name with "
        "`/tok service request`"
    )
    assert message["text"] == said
    no_reason = blocks.closed_as_taken_message(asked(state="cancelled"), "/tok")
    assert "*ci-deployer* was closed. Ask again" in no_reason["text"]


# Pending requests


def test_pending_requests_offer_cancel_on_ones_own_and_approve_or_deny_on_others() -> None:
    message = blocks.requests_message([asked(1)], [asked(2, requester="U0OTHER")])
    assert types(message) == ["section", "section", "section", "section", "actions"]
    assert block_text(message["blocks"][0]) == "*Your pending requests*"
    assert block_text(message["blocks"][1]) == f"*ci-deployer* · asked {when(NOW)}"
    assert block_text(message["blocks"][2]) == "*Waiting for your decision*"
    assert block_text(message["blocks"][3]).startswith("<@U0OTHER> asks for a token")
    assert [(b["action_id"], b["value"]) for b in buttons(message)] == [
        (CANCEL_REQUEST_ACTION, "1"),
        (APPROVE_ACTION, "2"),
        (DENY_ACTION, "2"),
    ]
    assert message["text"] == "1 pending request(s) of yours, 1 to decide"


def test_no_pending_requests_says_so() -> None:
    message = blocks.requests_message([], [])
    assert [block_text(b) for b in message["blocks"]] == ["No pending requests."]
    assert message["text"] == "0 pending request(s) of yours, 0 to decide"


def test_many_requests_of_ones_own_leave_room_for_those_to_decide() -> None:
    message = blocks.requests_message(
        [asked(n) for n in range(60)], [asked(100 + n) for n in range(5)]
    )
    assert len(message["blocks"]) == 50
    said = [block_text(b) for b in message["blocks"] if b["type"] != "actions"]
    cancels = [b for b in buttons(message) if b["action_id"] == CANCEL_REQUEST_ACTION]
    assert f"… and {60 - len(cancels)} more of yours." in said
    assert "*Waiting for your decision*" in said
    approvals = [b for b in buttons(message) if b["action_id"] == APPROVE_ACTION]
    assert len(approvals) >= 1
    assert (
        said[-1] == f"… and {5 - len(approvals)} more waiting: decide them on their messages first."
    )
    assert message["text"] == "60 pending request(s) of yours, 5 to decide"


# The report, the service users, the notices to approvers and admins


def test_the_report_counts_seats_service_users_and_tokens_by_state() -> None:
    report = Report(
        seats=12,
        service_users=3,
        tokens={"user": {"active": 12, "revoked": 4, "expired": 2}, "service": {"active": 5}},
    )
    message = blocks.report_message(report)
    assert block_text(message["blocks"][0]).splitlines() == [
        "*Seats* (members holding an active personal token): 12",
        "*Service users* (never seats): 3",
        "*User tokens:* 12 active, 4 revoked, 2 expired",
        "*Service tokens:* 5 active, 0 revoked, 0 expired",
    ]
    assert message["text"] == "tokenbot report"


def test_the_report_shows_tokens_being_delivered_only_when_there_are_some() -> None:
    report = Report(seats=1, service_users=0, tokens={"user": {"active": 1, "being delivered": 2}})
    lines = block_text(blocks.report_message(report)["blocks"][0]).splitlines()
    assert lines[2] == "*User tokens:* 1 active, 0 revoked, 0 expired, 2 being delivered"
    assert lines[3] == "*Service tokens:* 0 active, 0 revoked, 0 expired"


def test_the_service_list_shows_each_service_user_with_its_tokens_and_their_buttons() -> None:
    message = blocks.service_list_message([owned(1, tokens=2)], True, "/tok")
    assert types(message) == [
        "section",
        "section",
        "actions",
        "section",
        "actions",
        "section",
        "actions",
    ]
    assert block_text(message["blocks"][0]) == "*All service users* (1)"
    assert block_text(message["blocks"][1]) == (
        "*ci-deployer* · Deploys the site\nPermissions: `api:read` · owners: <@U1>, <@U2>"
    )
    assert block_text(message["blocks"][3]) == (
        f"`tbs_…abcd` *deploy-0*\nLast used {when(NOW)} · expires if unused by {when(CUTOFF)}"
    )
    assert [(b["action_id"], b["value"]) for b in buttons(message["blocks"][2])] == [
        (ADD_OWNER_ACTION, "1"),
        (REMOVE_OWNER_ACTION, "1"),
    ]
    on_tokens = [b for b in buttons(message) if b["action_id"] not in OWNER_ACTIONS]
    assert [(b["action_id"], b["value"]) for b in on_tokens] == [
        (SERVICE_ROTATE_ACTION, "100"),
        (SERVICE_REVOKE_ACTION, "100"),
        (SERVICE_ROTATE_ACTION, "101"),
        (SERVICE_REVOKE_ACTION, "101"),
    ]
    titles = {b["action_id"]: b["confirm"]["title"]["text"] for b in on_tokens}
    assert titles == {
        SERVICE_ROTATE_ACTION: "Rotate this token?",
        SERVICE_REVOKE_ACTION: "Revoke this token?",
    }
    assert message["text"] == "1 service user(s), 2 active token(s)."
    fits_a_message(message)


def test_an_owner_sees_their_own_service_users_under_their_heading() -> None:
    message = blocks.service_list_message([owned(1), owned(2)], False, "/tok", notice="Revoked.")
    assert block_text(message["blocks"][0]) == "Revoked."
    assert block_text(message["blocks"][1]) == "*Your service users* (2)"
    assert message["text"] == "Revoked."


def test_a_service_user_without_tokens_owners_or_purpose_says_so() -> None:
    lonely = owned(tokens=0, owners=[], purpose="")
    header = block_text(blocks.service_list_message([lonely], True, "/tok")["blocks"][1])
    assert header == (
        "*ci-deployer* · —\nPermissions: `api:read` · owners: none active\nNo active tokens."
    )


def test_past_10_owners_the_service_list_says_how_many_more() -> None:
    crowded = owned(owners=[f"U{n:02d}" for n in range(14)])
    header = block_text(blocks.service_list_message([crowded], True, "/tok")["blocks"][1])
    assert header.count("<@U") == 10
    assert header.endswith("<@U09> and 4 more")


def test_an_empty_service_list_tells_admins_and_owners_apart() -> None:
    admin = blocks.service_list_message([], True, "/tok")
    assert types(admin) == ["section"]
    assert admin["text"] == block_text(admin["blocks"][0]) == "There are no service users yet."
    owner = blocks.service_list_message([], False, "/tok")
    expected = "You own no service users. Ask for one with `/tok service request`."
    assert owner["text"] == block_text(owner["blocks"][0]) == expected


def test_a_large_service_list_stops_within_50_blocks_and_says_how_many_more() -> None:
    # A heading, then 8 service users of 6 blocks each (heading, owner buttons, and two
    # tokens, each a line and its buttons) fit with room for the last block, which says
    # the rest.
    message = blocks.service_list_message([owned(n) for n in range(30)], True, "/tok")
    assert len(message["blocks"]) == 50
    assert len(buttons(message)) == 8 * 6
    assert block_text(message["blocks"][-1]) == (
        "… and 22 more service users that do not fit here."
    )
    assert message["text"] == "30 service user(s), 60 active token(s)."


def test_the_digest_lists_each_waiting_request_with_its_dates() -> None:
    message = blocks.digest_message([asked(1), asked(2, name="billing-sync")], "/tok")
    assert types(message) == ["section", "section", "section", "context"]
    assert block_text(message["blocks"][0]) == (":hourglass: *Requests waiting for a decision* (2)")
    assert block_text(message["blocks"][1]) == (
        f"<@{USER}> asks for *ci-deployer* (`api:read` `api:write`) since {when(NOW)}; "
        f"expires unanswered {when(EXPIRES)}."
    )
    assert "*billing-sync*" in block_text(message["blocks"][2])
    assert block_text(message["blocks"][3]) == (
        "Decide on the request messages, or with `/tok requests`."
    )
    assert buttons(message) == []
    assert message["text"] == "2 service-token request(s) wait for a decision."


def test_a_digest_of_more_than_20_requests_lists_20_and_says_how_many_more() -> None:
    message = blocks.digest_message([asked(n) for n in range(25)], "/tok")
    assert len(message["blocks"]) == 22
    assert block_text(message["blocks"][-1]).startswith("and 5 more. Decide on")
    assert message["text"] == "25 service-token request(s) wait for a decision."


def test_the_admins_hear_which_service_users_a_deactivated_member_left_without_owners() -> None:
    message = blocks.orphaned_message("U0GONE", ["ci-deployer", "billing-sync"], "/tok")
    assert block_text(message["blocks"][0]) == (
        "<@U0GONE> was deactivated and was the only owner of the service user(s) below. "
        "Their tokens keep working, but nobody will be reminded before they expire except "
        "the admins. Take one over to own it, or review them with `/tok service list`."
    )
    assert types(message) == ["section", "section", "section"]
    assert [block_text(b) for b in message["blocks"][1:]] == ["*ci-deployer*", "*billing-sync*"]
    take_overs = buttons(message)
    assert [(b["action_id"], b["value"]) for b in take_overs] == [
        (TAKE_OVER_ACTION, "ci-deployer"),
        (TAKE_OVER_ACTION, "billing-sync"),
    ]
    assert all(b["confirm"]["title"]["text"] == "Take over this service user?" for b in take_overs)
    assert message["text"] == (
        "<@U0GONE> was deactivated; left with no owner: ci-deployer, billing-sync"
    )


def test_past_30_names_the_orphan_notice_says_how_many_more() -> None:
    names = [f"svc-{n:02d}" for n in range(35)]
    message = blocks.orphaned_message("U0GONE", names, "/tok")
    assert len(buttons(message)) == 30 and buttons(message)[-1]["value"] == "svc-29"
    assert block_text(message["blocks"][-1]).startswith("… and 5 more")
    assert "svc-29" in message["text"] and "svc-30" not in message["text"]
    fits_a_message(message)


def test_a_service_user_with_many_tokens_shows_ten_and_leaves_room_for_the_others() -> None:
    crowded, after = owned(1, tokens=40), owned(2, tokens=1)
    message = blocks.service_list_message([crowded, after], True, "/tok")
    fits_a_message(message)
    shown = [b["value"] for b in buttons(message) if b["action_id"] == SERVICE_REVOKE_ACTION]
    assert shown == [str(100 + n) for n in range(10)] + ["200"]  # the next one still shows
    assert "… and 30 more of its tokens" in json.dumps(message, ensure_ascii=False)
