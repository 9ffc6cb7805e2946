"""The listener label of ``/metrics``: a bounded name for any payload, however odd."""

from __future__ import annotations

from typing import Any

import pytest

from bot.blocks import owners as owner_blocks
from bot.blocks import tokens as token_blocks
from bot.listeners import KNOWN
from bot.listeners.payload import listener_label
from tests.unit.test_manifest import MANIFEST


@pytest.mark.parametrize(
    ("body", "label"),
    [
        ({"command": "/token", "text": "list"}, "command:list"),
        ({"command": "/token", "text": "  Rotate  ci"}, "command:rotate"),
        ({"command": "/token", "text": ""}, "command:help"),
        ({"command": "/token"}, "command:help"),
        ({"command": "/token", "text": "drop table"}, "command:other"),
        ({"command": "/token", "text": ["list"]}, "command:help"),
        (
            {"type": "block_actions", "actions": [{"action_id": token_blocks.REVOKE_ACTION}]},
            "action:revoke_token",
        ),
        ({"type": "block_actions", "actions": [{"action_id": "made_up"}]}, "action:other"),
        ({"type": "block_actions", "actions": "revoke_token"}, "action:other"),
        ({"type": "block_actions", "actions": [["revoke_token"]]}, "action:other"),
        ({"type": "block_actions", "actions": [{"action_id": ["x"]}]}, "action:other"),
        ({"type": "block_actions"}, "action:other"),
        (
            {"type": "view_submission", "view": {"callback_id": token_blocks.GENERATE_CALLBACK}},
            "view:generate_token",
        ),
        (
            {"type": "view_submission", "view": {"callback_id": owner_blocks.ADD_OWNER_CALLBACK}},
            "view:add_service_owner",
        ),
        (
            {"type": "view_closed", "view": {"callback_id": "generate_token"}},
            "view_closed:generate_token",
        ),
        ({"type": "view_submission", "view": "generate_token"}, "view:other"),
        ({"type": "event_callback", "event": {"type": "message"}}, "event:message"),
        ({"type": "event_callback", "event": {"type": "reaction_added"}}, "event:other"),
        ({"type": "event_callback", "event": None}, "event:other"),
        ({"type": "url_verification", "challenge": "x"}, "url_verification"),
        ({"type": "something_new"}, "other"),
        ({"type": {"nested": 1}}, "other"),
        ({}, "other"),
    ],
)
def test_every_payload_gets_a_bounded_label(body: dict[str, Any], label: str) -> None:
    assert listener_label(body, KNOWN) == label


def test_the_events_subscribed_are_the_events_labelled() -> None:
    subscribed = {
        name.partition(".")[0] for name in MANIFEST["settings"]["event_subscriptions"]["bot_events"]
    }
    assert subscribed == KNOWN.events


def test_the_ids_the_listeners_answer_are_known() -> None:
    for named in (
        token_blocks.REVOKE_ACTION,
        token_blocks.ROTATE_ACTION,
        token_blocks.KEEP_ALIVE_ACTION,
        token_blocks.OPEN_GENERATE_ACTION,
        *owner_blocks.OWNER_CALLBACKS,
    ):
        assert named in KNOWN.ids
    # Block ids and input names are not listener ids.
    assert owner_blocks.OWNER_BLOCK not in KNOWN.ids
