"""The one error path: how a refusal reaches the person, by where they acted."""

from __future__ import annotations

from typing import Any, cast

from slack_bolt.async_app import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.replies import Replies, Unavailable, refuse
from storage.errors import (
    AlreadyDecided,
    InvalidField,
    InvalidFields,
    NotAllowed,
    TokenNotFound,
)

CLIENT = cast(AsyncWebClient, object())  # never called by what these tests look at


def context(replies: Replies | None = None) -> AsyncBoltContext:
    found = AsyncBoltContext(actor="U0ALICE", org="T0ORG")
    if replies is not None:
        found["replies"] = replies
    return found


def submission(*blocks: str) -> dict[str, Any]:
    view = {"blocks": [{"type": "section"}] + [{"type": "input", "block_id": b} for b in blocks]}
    return {"type": "view_submission", "user": {"id": "U0ALICE"}, "view": view}


COMMAND = {"command": "/token", "user_id": "U0ALICE", "text": "revoke x"}


def test_a_modal_shows_a_field_error_on_the_field_it_names() -> None:
    error = InvalidField("scopes", "Choose a permission.")
    refusal = refuse(error, submission("name", "scopes"), context(), CLIENT, acked=False)
    assert refusal.ack == {
        "response_action": "errors",
        "errors": {"scopes": "Choose a permission."},
    }
    assert refusal.tell is None


def test_a_modal_shows_every_field_error_at_once_each_on_its_field() -> None:
    error = InvalidFields({"user_token_cap": "Use 1 to 1000.", "role_scopes": "Not known."})
    body = submission("user_token_cap", "role_scopes")
    refusal = refuse(error, body, context(), CLIENT, acked=False)
    assert refusal.ack == {
        "response_action": "errors",
        "errors": {"user_token_cap": "Use 1 to 1000.", "role_scopes": "Not known."},
    }
    assert (error.field, str(error)) == ("user_token_cap", "Use 1 to 1000.")


def test_a_modal_shows_other_refusals_on_its_declared_main_input() -> None:
    body = submission("name", "reason")
    error = AlreadyDecided("This request is already approved.")
    refusal = refuse(error, body, context(Replies(field="reason")), CLIENT, acked=False)
    assert refusal.ack == {
        "response_action": "errors",
        "errors": {"reason": "This request is already approved."},
    }
    undeclared = refuse(error, body, context(), CLIENT, acked=False)
    assert undeclared.ack is not None and list(undeclared.ack["errors"]) == ["name"]


def test_a_command_is_answered_ephemerally_in_the_acknowledgement_with_what_to_do() -> None:
    error = TokenNotFound("No active token named “<!here>”.")
    replies = Replies(after="See `/token list`.")
    refusal = refuse(error, COMMAND, context(replies), CLIENT, acked=False)
    assert refusal.ack is not None and refusal.tell is None
    assert refusal.ack["response_type"] == "ephemeral"
    assert refusal.ack["text"] == "No active token named “&lt;!here&gt;”. See `/token list`."


async def test_a_command_already_acknowledged_is_answered_through_its_response_url() -> None:
    said: list[dict[str, Any]] = []

    async def respond(**message: Any) -> None:
        said.append(message)

    found = context()
    found["respond"] = respond
    sentence = "Slack could not open the form just now. Run `/token new` again."
    refusal = refuse(Unavailable(sentence), COMMAND, found, CLIENT, acked=True)
    assert refusal.ack is None and refusal.tell is not None
    await refusal.tell
    # The app's own words keep their formatting; a domain sentence would be escaped.
    assert len(said) == 1 and said[0]["response_type"] == "ephemeral"
    assert said[0]["text"] == sentence


async def test_a_button_is_acknowledged_plainly_and_the_clicker_told_afterwards() -> None:
    click = {"type": "block_actions", "user": {"id": "U0ALICE"}, "actions": [{}]}
    refusal = refuse(NotAllowed("No."), click, context(), CLIENT, acked=False)
    assert refusal.ack is None and refusal.tell is not None
    refusal.tell.close()  # not sent here: the e2e tests follow it to Slack
