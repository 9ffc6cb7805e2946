"""What a member does in Slack, as steps the e2e tests share."""

from __future__ import annotations

import asyncio
import reprlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode

import httpx

from bot.standin.harness import Running
from bot.standin.server import Call
from storage import tokenformat, usage
from tests.conftest import FIXTURES

COMMAND = "/token"
T = TypeVar("T")


async def run_command(env: Running, text: str, user: str) -> Call:
    """Send ``/token text`` and return the app's answer: the message in its
    acknowledgement (as method "ack"), or the modal it opened."""
    mark = len(env.standin.calls)
    response = await env.slack.command(COMMAND, text, user)
    assert response.status_code == 200
    if response.content:
        return Call("ack", response.json())
    return await env.standin.wait_for("views.open", after=mark)


async def open_generate_modal(env: Running, user: str, name: str = "") -> str:
    opened = await run_command(env, f"new {name}".strip(), user)
    assert opened.method == "views.open", opened.args
    return str(opened.result["view"]["id"])


async def generate(env: Running, user: str, name: str) -> str:
    """Generate a token through the modal; return the secret the member was shown."""
    view_id = await open_generate_modal(env, user)
    mark = len(env.standin.calls)
    response = await env.slack.submit_view(view_id, user, {"token_name": {"name": name}})
    assert response.status_code == 200 and response.content == b"", response.text
    shown = await env.standin.wait_for("response_url", after=mark)
    secrets = tokenformat.TOKEN_PATTERN.findall(shown.text_content())
    assert len(secrets) == 1
    secret = await until_valid(env, str(secrets[0]))
    if (env.slack.team_id, user) in env.deps.homes_open:
        # Done once the member's open Home tab shows the new token.
        await env.standin.wait_for("views.publish", lambda c: c.args["user_id"] == user, after=mark)
    return secret


async def settled(env: Running) -> None:
    """Wait until the background work (profile refreshes, Home tabs published again, their
    follow-ups) is done; fail after 5 seconds."""
    while env.deps.background.tasks:
        await asyncio.wait_for(asyncio.wait(list(env.deps.background.tasks)), 5)


async def until_valid(env: Running, secret: str) -> str:
    """Wait until the token just shown is valid: it becomes so once the app has
    recorded its delivery, just after Slack took the message."""
    valid = await eventually(
        lambda: usage.validate(env.db, secret, env.deps.clock()), lambda v: v is not None
    )
    assert valid is not None, "the token shown never became valid"
    return secret


async def eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 5) -> T:
    """Poll ``read`` until ``done`` holds, for outcomes that send nothing to wait on; fail
    the test when it still does not hold after ``timeout`` seconds."""

    async def read_now() -> T:
        return read()

    return await eventually_async(read_now, done, timeout)


async def eventually_async(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 5
) -> T:
    """:func:`eventually`, for outcomes read through HTTP."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout} s; last read: {reprlib.repr(value)}")
        await asyncio.sleep(0.02)


async def post_fixture_command(env: Running, fixture: str, text: str) -> httpx.Response:
    """Slack's own slash-command body from ``fixture``, re-aimed at ``/token text``, with a
    ``response_url`` the stand-in answers, then signed and posted."""
    fields = dict(parse_qsl((FIXTURES / fixture).read_text().strip()))
    fields.update(
        command=COMMAND,
        text=text,
        response_url=env.standin.new_response_url(fields["user_id"], fields["channel_id"]),
    )
    return await env.slack.post(urlencode(fields), "application/x-www-form-urlencoded")
