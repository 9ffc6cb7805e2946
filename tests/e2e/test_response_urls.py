"""Answers go only to Slack's response URLs: a forged one in a signed payload gets nothing,
least of all a new token."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from bot.sender import is_slack_response_url
from bot.standin.harness import Running
from bot.standin.server import SlackStandin
from storage import tokenformat
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate, open_generate_modal, run_command


async def test_a_forged_response_url_in_the_modal_gets_nothing_and_the_token_goes_ephemerally(
    env: Running,
) -> None:
    elsewhere = SlackStandin()
    async with elsewhere.running():
        view_id = await open_generate_modal(env, ALICE)
        forged = elsewhere.new_response_url(ALICE, "C0GENERAL")
        env.standin.views[view_id]["private_metadata"] = json.dumps(
            {"response_url": forged, "channel_id": "C0GENERAL"}
        )
        mark = len(env.standin.calls)
        response = await env.slack.submit_view(view_id, ALICE, {"token_name": {"name": "ci"}})
        assert response.status_code == 200 and response.content == b""
        shown = await env.standin.wait_for("chat.postEphemeral", after=mark)
        assert shown.args["user"] == ALICE and shown.args["channel"] == "C0GENERAL"
        assert len(tokenformat.TOKEN_PATTERN.findall(shown.text_content())) == 1
        assert elsewhere.calls == []


class LogWatch(logging.Handler):
    """Sets ``seen`` when a line containing ``words`` is logged (the app logs on the
    test's own event loop)."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words, self.seen = words, asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.seen.set()


async def test_a_click_with_a_forged_response_url_is_not_answered_there(env: Running) -> None:
    await generate(env, ALICE, "ci")
    confirm = await run_command(env, "revoke ci", ALICE)
    elsewhere, watch = SlackStandin(), LogWatch("response_url outside Slack's hosts")
    logger = logging.getLogger("bot")  # whichever of its modules sends to Slack
    logger.addHandler(watch)
    original = env.standin.new_response_url
    try:
        async with elsewhere.running():
            forged = elsewhere.new_response_url(ALICE, "C0GENERAL")
            env.standin.new_response_url = lambda user, channel: forged  # type: ignore[method-assign]
            response = await env.slack.click(confirm, "cancel", ALICE)
            assert response.status_code == 200
            await asyncio.wait_for(watch.seen.wait(), 5)
            assert elsewhere.calls == []
    finally:
        env.standin.new_response_url = original  # type: ignore[method-assign]
        logger.removeHandler(watch)


API = "http://127.0.0.1:8123/api/"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/actions/T1/2/abc",
        "https://hooks.slack-gov.com/actions/T1/2/abc",
        "https://example.slack.com/x",
        "http://127.0.0.1:8123/response/R1",
    ],
)
def test_slacks_own_response_urls_are_accepted(url: str) -> None:
    assert is_slack_response_url(url, API)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.slack.com/actions/T1/2/abc",  # not https
        "https://hooks.slack.com:8443/actions",  # another port
        "https://hooks.slack.com.evil.test/actions",
        "https://evilslack.com/actions",
        "https://user@hooks.slack.com/actions",
        "https://evil.test\\@hooks.slack.com/actions",
        "http://127.0.0.1:8124/response/R1",  # loopback, but not the Web API's port
        "https://127.0.0.1:8123/response/R1",  # the Web API's host, another scheme
        "/response/R1",
        "",
        ["https://hooks.slack.com/actions"],
        None,
    ],
)
def test_anything_else_is_refused(url: object) -> None:
    assert not is_slack_response_url(url, API)
