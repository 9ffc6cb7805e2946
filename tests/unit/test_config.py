"""Settings: a missing or invalid one stops the process with one line naming it."""

from __future__ import annotations

import os

import pytest

from bot.config import SettingsError, load_settings
from tests.conftest import Tokenbot

BASE = {"SLACK_SIGNING_SECRET": "s3cret-signing", "SLACK_BOT_TOKEN": "xoxb-1-2-abc"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SLACK_", "TOKENBOT_")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({}, "SLACK_SIGNING_SECRET: required for `tokenbot serve`"),
        ({"SLACK_SIGNING_SECRET": "x"}, "SLACK_BOT_TOKEN: required for `tokenbot serve`"),
        ({**BASE, "SLACK_BOT_TOKEN": "nope"}, "SLACK_BOT_TOKEN: must be a bot token"),
        ({**BASE, "TOKENBOT_DATABASE_URL": "mysql://db"}, "TOKENBOT_DATABASE_URL: names 'mysql'"),
        ({**BASE, "TOKENBOT_DATABASE_URL": "not a url"}, "TOKENBOT_DATABASE_URL: is not a"),
        ({**BASE, "TOKENBOT_COMMAND": "token"}, "TOKENBOT_COMMAND: must be a slash command"),
        ({**BASE, "SLACK_API_URL": "slack.com"}, "SLACK_API_URL: must be an http(s) URL"),
        ({**BASE, "TOKENBOT_RESOURCE_SERVERS": "gw"}, "TOKENBOT_RESOURCE_SERVERS: must be"),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings().require("serve")
    assert str(error.value).startswith(line)
    assert "\n" not in str(error.value)
    assert "s3cret-signing" not in str(error.value)


def test_socket_mode_needs_an_app_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="SLACK_APP_TOKEN: required for `tokenbot socket`"):
        load_settings().require("socket")


def test_valid_settings_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        **BASE,
        "SLACK_API_URL": "http://127.0.0.1:9/api",
        "TOKENBOT_DATABASE_URL": "postgresql://u@db/tokenbot",
        "TOKENBOT_RESOURCE_SERVERS": "gateway:abc, billing:def",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    settings.require("serve")
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"
    assert settings.database_url == "postgresql+psycopg://u@db/tokenbot"
    assert {k: v.get_secret_value() for k, v in settings.resource_servers.items()} == {
        "gateway": "abc",
        "billing": "def",
    }
    assert "abc" not in repr(settings) and "s3cret" not in repr(settings)


def test_serve_with_a_missing_setting_exits_with_one_line(tokenbot: Tokenbot) -> None:
    result = tokenbot("serve")
    assert result.code == 2
    assert result.stderr.strip() == "tokenbot: SLACK_SIGNING_SECRET: required for `tokenbot serve`"
    assert result.stdout == ""


OAUTH = {"SLACK_SIGNING_SECRET": "s3cret-signing", "SLACK_CLIENT_ID": "123.456"}


def test_serve_with_oauth_credentials_needs_no_bot_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**OAUTH, "SLACK_CLIENT_SECRET": "client-s3cret"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    settings.require("serve")
    assert settings.multi_workspace
    assert "client-s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (OAUTH, "SLACK_CLIENT_SECRET: required with SLACK_CLIENT_ID"),
        (
            {"SLACK_SIGNING_SECRET": "s", "SLACK_CLIENT_SECRET": "x"},
            "SLACK_CLIENT_ID: required with SLACK_CLIENT_SECRET",
        ),
        (
            {**BASE, "SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "x"},
            "SLACK_BOT_TOKEN: set it or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET, not both",
        ),
    ],
)
def test_oauth_credentials_come_as_a_pair_and_alone(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings().require("serve")
    assert str(error.value) == line


def test_socket_mode_still_needs_a_bot_token_with_oauth_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {**OAUTH, "SLACK_CLIENT_SECRET": "x", "SLACK_APP_TOKEN": "xapp-1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN: required for `tokenbot socket`"):
        load_settings().require("socket")
