"""The HTTP edge under hostile clients: body limits, signatures checked before anything
is parsed, malformed headers, log hygiene (in-process); slow clients, open files, the
internal API listener and shutdown (``tokenbot serve`` as a real process)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from slack_bolt.async_app import AsyncBoltRequest

from bot.app import build_app, shared_session
from bot.config import SettingsError, load_settings
from bot.logs import setup_logging
from bot.standin.client import http_client
from bot.standin.harness import BOT_TOKEN, RESOURCE_SERVER, SIGNING_SECRET, Running
from bot.standin.server import SlackStandin, free_port
from tests.conftest import Tokenbot
from tests.e2e.conftest import ALICE

FORM = "application/x-www-form-urlencoded"
MAX_BODY = 1024 * 1024  # the default limit (TOKENBOT_HTTP_MAX_BODY)
ROOT = Path(__file__).resolve().parents[2]


def _events_address(env: Running) -> tuple[str, int]:
    url = httpx.URL(env.slack.events_url)
    assert url.host and url.port
    return url.host, url.port


async def _raw_request(host: str, port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send one request over a fresh connection; the whole answer, as bytes."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- bodies: signature first, size limit -------------------------------------------------


async def test_a_signed_command_is_acknowledged_promptly_while_large_unsigned_bodies_arrive(
    env: Running,
) -> None:
    host, port = _events_address(env)
    junk = b"a=&" * (1_000_000 // 3)
    head = (
        f"POST /slack/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: {FORM}\r\n"
        f"Content-Length: {len(junk)}\r\nConnection: close\r\n"
        f"X-Slack-Request-Timestamp: {int(time.time())}\r\n"
        f"X-Slack-Signature: v0={'0' * 64}\r\n\r\n"
    ).encode()
    floods = [asyncio.create_task(_raw_request(host, port, head, junk)) for _ in range(4)]
    await asyncio.sleep(0)  # let the floods start writing before the command is sent
    started = time.perf_counter()
    response = await env.slack.command("/token", "list", ALICE)
    elapsed = time.perf_counter() - started
    answers = await asyncio.wait_for(asyncio.gather(*floods), timeout=60)
    assert response.status_code == 200 and "no active tokens" in response.text
    assert [_status(a) for a in answers] == [401] * 4
    assert elapsed < 1.0, f"the signed command took {elapsed:.2f} s"


async def test_a_body_over_the_limit_is_refused_with_413_from_its_length(env: Running) -> None:
    body = "a=" + "b" * MAX_BODY
    response = await env.slack.post(body, FORM)
    assert response.status_code == 413
    assert "Traceback" not in response.text


async def test_a_body_over_the_limit_is_refused_before_it_ends(env: Running) -> None:
    """No Content-Length: the body is counted as it arrives and refused once past the
    limit, without waiting for the rest."""
    host, port = _events_address(env)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST /slack/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: {FORM}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"a" * (64 * 1024)
        for _ in range(MAX_BODY // len(chunk) + 1):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        # The last chunk is never sent: only a refusal can answer.
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    finally:
        writer.close()
    assert _status(answer) == 413


@pytest.mark.parametrize(
    "body", [b"\xff\xfe not utf-8", b"payload=%7B%7D"], ids=["not-utf8", "form"]
)
async def test_a_bad_signature_is_refused_whatever_the_body(env: Running, body: bytes) -> None:
    headers = {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=" + "0" * 64,
    }
    response = await env.slack.http.post(env.slack.events_url, content=body, headers=headers)
    assert response.status_code == 401


# -- malformed headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    ["abc", "", "1.5", "9" * 5000, "-1", "+1700000000", "17000 00000", "1e9"],
    ids=["letters", "empty", "decimal", "5000-digits", "negative", "plus", "space", "exp"],
)
async def test_a_malformed_timestamp_is_refused_with_401_and_no_traceback(
    env: Running,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    timestamp: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    body = env.slack.command_body("/token", "help", ALICE)
    headers = {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": env.slack.verifier.generate_signature(timestamp=timestamp, body=body),
    }
    response = await env.slack.http.post(env.slack.events_url, content=body, headers=headers)
    assert response.status_code == 401
    assert "Traceback" not in response.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
    assert "Traceback" not in capfd.readouterr().err


async def test_a_signature_with_non_ascii_characters_is_refused_with_401(env: Running) -> None:
    body = env.slack.command_body("/token", "help", ALICE)
    headers = {
        **env.slack.sign(body),
        "Content-Type": FORM,
        "X-Slack-Signature": "v0=é",
    }
    encoded = {k: v.encode("latin-1") for k, v in headers.items()}
    response = await env.slack.http.post(env.slack.events_url, content=body, headers=encoded)
    assert response.status_code == 401


# -- logs --------------------------------------------------------------------------------

FORGED = "\n2030-01-01 00:00:00,000 ERROR [-] bot: forged line"


@pytest.mark.parametrize("why", ["bad signature", "stale"])
async def test_an_unverified_request_leaves_only_its_size_and_reason_in_the_logs(
    env: Running, caplog: pytest.LogCaptureFixture, why: str
) -> None:
    caplog.set_level(logging.DEBUG)
    response_url = env.standin.new_response_url(ALICE, "C0GENERAL")
    body = urlencode(
        {
            "command": "/token",
            "text": "list" + FORGED,
            "user_id": ALICE,
            "team_id": env.standin.team_id,
            "response_url": response_url,
        }
    )
    if why == "stale":
        response = await env.slack.post(body, FORM, timestamp=int(time.time()) - 5 * 60 - 5)
    else:
        headers = {**env.slack.sign(body), "Content-Type": FORM}
        headers["X-Slack-Signature"] = "v0=" + "1" * 64
        response = await env.slack.http.post(env.slack.events_url, content=body, headers=headers)
    assert response.status_code == 401
    assert "forged line" not in caplog.text
    assert response_url not in caplog.text
    assert "/response/" not in caplog.text
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and str(len(body)) in refusals[0] and why in refusals[0], refusals


def test_a_log_message_with_newlines_comes_out_as_one_line() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging("INFO")
        formatter = root.handlers[0].formatter
        assert formatter is not None
        record = logging.LogRecord(
            "bot.web", logging.INFO, __file__, 1, "name %s", ("x\r\ny" + FORGED,), None
        )
        record.request_id = "-"
        assert "\n" not in formatter.format(record) and "\r" not in formatter.format(record)
        assert "forged line" in formatter.format(record)
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            failing = logging.LogRecord(
                "bot.web", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
            )
        failing.request_id = "-"
        line = formatter.format(failing)
        assert "\n" not in line and "Traceback" in line and "ValueError" in line
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


# -- `tokenbot serve` as a process -------------------------------------------------------


@dataclass
class Served:
    url: str
    api_url: str | None


def _settings(database_url: str, slack_api_url: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": slack_api_url,
        "TOKENBOT_DATABASE_URL": database_url,
        "TOKENBOT_RESOURCE_SERVERS": ":".join(RESOURCE_SERVER),
        **extra,
    }


def _environment(database_url: str, slack_api_url: str, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **_settings(database_url, slack_api_url, extra)}


@asynccontextmanager
async def tokenbot_serve(
    database_url: str,
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    api_port: int | None = None,
) -> AsyncIterator[Served]:
    """``tokenbot serve`` on a free port, with the Slack stand-in; stopped by SIGTERM, after
    which it must have exited cleanly."""
    standin = SlackStandin()
    async with standin.running():
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
            *args,
            env=_environment(database_url, standin.base_url + "/api/", env or {}),
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=preexec_fn,
        )
        assert process.stderr is not None
        url = f"http://127.0.0.1:{port}"
        api_url = f"http://127.0.0.1:{api_port}" if api_port else None
        try:
            async with http_client(timeout=2) as http:
                for base in filter(None, (url, api_url)):
                    await _wait_healthy(http, base, process)
            yield Served(url, api_url)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            try:
                returncode = await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                raise
            stderr = (await process.stderr.read()).decode()
        assert returncode == 0, stderr
        assert "Traceback" not in stderr, stderr


async def _wait_healthy(
    http: httpx.AsyncClient, base: str, process: asyncio.subprocess.Process
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise AssertionError(f"tokenbot serve exited with {process.returncode}")
        try:
            if (await http.get(base + "/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{base}/healthz did not answer within 30 s")


# Starting ``tokenbot serve`` takes longer than what each test does with it: the tests
# share two servers, each started once for the module (and stopped as above).


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def impatient_server(module_database_url: str) -> AsyncIterator[Served]:
    """1 s to send the headers, 1 s for the body; the API on its own listener, set from
    the environment."""
    api_port = free_port()
    settings = {
        "TOKENBOT_HTTP_HEADER_TIMEOUT": "1",
        "TOKENBOT_HTTP_BODY_TIMEOUT": "1",
        "TOKENBOT_API_LISTEN": f"127.0.0.1:{api_port}",
    }
    async with tokenbot_serve(module_database_url, env=settings, api_port=api_port) as served:
        yield served


def _few_open_files() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def frugal_server(module_database_url: str) -> AsyncIterator[Served]:
    """Started with a soft limit of 256 open files, the default timeouts, and the API on
    its own listener, set by ``--api-listen``."""
    api_port = free_port()
    async with tokenbot_serve(
        module_database_url,
        "--api-listen",
        f"127.0.0.1:{api_port}",
        preexec_fn=_few_open_files,
        api_port=api_port,
    ) as served:
        yield served


@pytest.mark.asyncio(loop_scope="module")
async def test_a_client_that_dribbles_its_headers_is_disconnected(impatient_server: Served) -> None:
    url = httpx.URL(impatient_server.url)
    assert url.host and url.port
    reader, writer = await asyncio.open_connection(url.host, url.port)
    started = time.monotonic()
    closed = False
    try:
        # One byte every 0.2 s: never idle, never done.
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            try:
                await writer.drain()
                await asyncio.wait_for(reader.read(1), timeout=0.2)
            except TimeoutError:
                continue
            except ConnectionError:
                pass
            closed = True
            break
    finally:
        writer.close()
    assert closed, "the server kept a connection whose headers never completed"
    assert time.monotonic() - started < 5


@pytest.mark.asyncio(loop_scope="module")
async def test_a_body_that_does_not_arrive_in_time_gets_408(impatient_server: Served) -> None:
    url = httpx.URL(impatient_server.url)
    assert url.host and url.port
    head = (
        f"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\n"
        "Content-Length: 100\r\n\r\ncommand=%2Ftoken"
    ).encode()
    answer = await asyncio.wait_for(_raw_request(url.host, url.port, head), timeout=10)
    assert _status(answer) == 408


@pytest.mark.asyncio(loop_scope="module")
async def test_many_idle_connections_do_not_stop_healthz(frugal_server: Served) -> None:
    """Started with a soft limit of 256 open files; 400 connections that never send a
    byte leave /healthz answering (the limit is raised at start; idle heads time out)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard limit of open files ({hard}) is too low for this test")
    url = httpx.URL(frugal_server.url)
    assert url.host and url.port
    idle = [await asyncio.open_connection(url.host, url.port) for _ in range(400)]
    try:
        async with http_client(timeout=5) as http:
            response = await http.get(frugal_server.url + "/healthz")
        assert response.status_code == 200
    finally:
        for _, writer in idle:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for _, writer in idle))


@pytest.mark.asyncio(loop_scope="module")
async def test_the_api_can_be_served_on_its_own_listener(frugal_server: Served) -> None:
    served = frugal_server
    assert served.api_url
    auth = httpx.BasicAuth(*RESOURCE_SERVER)
    async with http_client(timeout=5) as http:
        public = await http.post(served.url + "/api/v1/introspect", data={"token": "x"}, auth=auth)
        public_auth = await http.get(
            served.url + "/api/v1/auth", headers={"Authorization": "Bearer x"}
        )
        internal = await http.post(
            served.api_url + "/api/v1/introspect", data={"token": "x"}, auth=auth
        )
        internal_slack = await http.post(served.api_url + "/slack/events", content=b"")
        unsigned_on_public = await http.post(served.url + "/slack/events", content=b"")
        health = [
            (await http.get(base + "/healthz")).status_code for base in (served.url, served.api_url)
        ]
        ready = [
            (await http.get(base + "/readyz")).status_code for base in (served.url, served.api_url)
        ]
        public_metrics = await http.get(served.url + "/metrics")
        internal_metrics = await http.get(served.api_url + "/metrics")
    assert public.status_code == 404 and public_auth.status_code == 404
    assert internal.status_code == 200 and internal.json() == {"active": False}
    assert internal_slack.status_code == 404
    assert unsigned_on_public.status_code == 401
    assert health == [200, 200] and ready == [200, 200]
    assert public_metrics.status_code == 404  # for the operators' side only
    assert internal_metrics.status_code == 200
    assert "tokenbot_introspections_total" in internal_metrics.text


@pytest.mark.asyncio(loop_scope="module")
async def test_the_api_listener_can_be_set_from_the_environment(impatient_server: Served) -> None:
    served = impatient_server
    assert served.api_url
    async with http_client(timeout=5) as http:
        public = await http.post(served.url + "/api/v1/introspect", data={"token": "x"})
        internal = await http.post(served.api_url + "/api/v1/introspect", data={"token": "x"})
    assert public.status_code == 404
    assert internal.status_code == 401  # no resource-server credentials


@pytest.mark.parametrize(
    "value", ["3001", "127.0.0.1", "127.0.0.1:0", "host:99999", ":3001", "h:1:x", "h:\uff13"]
)
def test_a_bad_api_listener_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TOKENBOT_API_LISTEN", value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value).startswith("TOKENBOT_API_LISTEN: ")
    assert "\n" not in str(refused.value)


def test_a_bad_api_listener_stops_the_process_with_one_line(
    database_url: str, tokenbot: Tokenbot
) -> None:
    settings = _settings(database_url, "http://127.0.0.1:9/api/", {})
    settings["TOKENBOT_API_LISTEN"] = "127.0.0.1"
    done = tokenbot("serve", "--port", str(free_port()), env=settings)
    assert done.code == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokenbot: TOKENBOT_API_LISTEN:"), lines


async def test_socket_mode_requests_are_still_answered(env: Running) -> None:
    """Socket Mode carries no signature (Slack's WebSocket is the proof): with Bolt's own
    check off, its requests are answered as before."""
    app = build_app(env.deps)
    body = env.slack.command_body("/token", "help", ALICE)
    async with shared_session(app):
        response = await app.async_dispatch(AsyncBoltRequest(body=body, mode="socket_mode"))
    assert response.status == 200
    assert "/token new" in response.body
