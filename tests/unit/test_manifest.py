"""manifest.yml creates an app that can do everything tokenbot asks of Slack."""

from __future__ import annotations

from pathlib import Path

import yaml

from bot import installs
from bot.config import Settings

MANIFEST = yaml.safe_load((Path(__file__).parents[2] / "manifest.yml").read_text())

# Each Web API method tokenbot calls, and the bot scope it needs.
SCOPES_FOR_METHODS = {
    "chat.postEphemeral": "chat:write",
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.getPermalink": None,  # no scope: any message the app can see
    "users.info": "users:read",
    "users.list": "users:read",
    "usergroups.list": "usergroups:read",
    "conversations.open": "im:write",
    "views.open": None,
    "views.publish": None,
    "oauth.v2.access": None,  # installing, and refreshing a bot token: the app's credentials
}


def test_the_command_and_every_url_point_at_slack_events() -> None:
    commands = MANIFEST["features"]["slash_commands"]
    assert [c["command"] for c in commands] == [Settings().command]
    settings = MANIFEST["settings"]
    urls = [c["url"] for c in commands] + [
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
    ]
    assert all(url.endswith("/slack/events") for url in urls)
    assert settings["interactivity"]["is_enabled"] is True


def test_bot_scopes_cover_the_methods_called() -> None:
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert "commands" in scopes
    assert {s for s in SCOPES_FOR_METHODS.values() if s} <= scopes


def test_app_home_has_the_home_and_messages_tabs() -> None:
    home = MANIFEST["features"]["app_home"]
    assert home["home_tab_enabled"] and home["messages_tab_enabled"]
    assert "app_home_opened" in MANIFEST["settings"]["event_subscriptions"]["bot_events"]


def test_the_events_tokenbot_handles_are_subscribed() -> None:
    events = set(MANIFEST["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_home_opened", "user_change", "team_join"} <= events
    assert {"app_uninstalled", "tokens_revoked"} <= events


def test_an_oauth_install_asks_for_the_manifests_scopes_and_comes_back_to_tokenbot() -> None:
    assert set(installs.SCOPES) == set(MANIFEST["oauth_config"]["scopes"]["bot"])
    [redirect] = MANIFEST["oauth_config"]["redirect_urls"]
    assert redirect.endswith("/slack/oauth_redirect")


# Each message event tokenbot reads for leaked tokens (R19), and the scope that lets the
# app receive it.
SCOPES_FOR_MESSAGE_EVENTS = {
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
}


def test_messages_where_the_app_is_are_subscribed_with_their_scopes() -> None:
    events = set(MANIFEST["settings"]["event_subscriptions"]["bot_events"])
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert set(SCOPES_FOR_MESSAGE_EVENTS) <= events
    assert set(SCOPES_FOR_MESSAGE_EVENTS.values()) <= scopes


def test_no_message_event_beyond_the_conversations_the_app_is_in() -> None:
    # The four above are the conversations the app is a member of; a user scope would let
    # it read a person's own conversations too.
    events = MANIFEST["settings"]["event_subscriptions"]["bot_events"]
    assert {e for e in events if e.startswith("message.")} == set(SCOPES_FOR_MESSAGE_EVENTS)
    assert "user" not in MANIFEST["oauth_config"]["scopes"]
