"""What operators see: ``/metrics``, JSON log lines, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from bot.jobs import sweep_and_deliver
from bot.logs import setup_logging
from bot.metrics import Metrics
from bot.standin.client import http_client
from bot.standin.harness import RESOURCE_SERVER, Running, running_tokenbot
from bot.standin.server import TEAM_ID
from storage import outbox
from storage.migrate import head as code_head
from tests.e2e.conftest import ALICE
from tests.e2e.flows import generate, run_command

GATEWAY = httpx.BasicAuth(*RESOURCE_SERVER)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(env: Running) -> tuple[str, Samples]:
    """``/metrics`` as text, and its samples by (name, labels)."""
    async with http_client(base_url=env.url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for (found, labels) in samples if found == name}


async def introspect(env: Running, data: dict[str, str], auth: httpx.Auth | None) -> int:
    async with http_client(base_url=env.url) as http:
        response = await http.post("/api/v1/introspect", data=data, auth=auth)
    return response.status_code


async def test_a_token_list_command_is_counted_under_its_subcommand(env: Running) -> None:
    _, before = await scrape(env)
    await run_command(env, "list", ALICE)
    await run_command(env, "LIST", ALICE)
    _, after = await scrape(env)
    listener = "tokenbot_slack_requests_total"
    assert value(before, listener, listener="command:list") == 0
    assert value(after, listener, listener="command:list") == 2
    timed = "tokenbot_slack_request_duration_seconds_count"
    assert value(after, timed, listener="command:list") == 2
    route = "tokenbot_http_requests_total"
    assert value(after, route, route="/slack/events", status="200") == 2
    assert value(after, route, route="/metrics", status="200") == 1  # the first scrape


async def test_clicks_submissions_and_events_are_counted_by_their_ids(env: Running) -> None:
    await generate(env, ALICE, "ci")  # /token new, then the Generate modal submitted
    listed = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listed, "revoke_token", ALICE)  # asks to confirm
    await env.standin.wait_for("response_url", after=mark)
    home = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    await env.slack.event(home, event_id="Ev0METRICS1")
    made_up = {"type": "made_up_event", "user": ALICE}
    await env.slack.event(made_up, event_id="Ev0METRICS2")
    _, samples = await scrape(env)
    counted = "tokenbot_slack_requests_total"
    assert value(samples, counted, listener="command:new") == 1
    assert value(samples, counted, listener="view:generate_token") == 1
    assert value(samples, counted, listener="action:revoke_token") == 1
    assert value(samples, counted, listener="event:app_home_opened") == 1
    assert value(samples, counted, listener="event:other") == 1


async def test_metric_labels_never_carry_what_a_member_typed(env: Running) -> None:
    typed = [
        "list-everything",
        "dropTable; --",
        "<script>alert(1)</script>",
        "ünïcödé words",
        "x" * 300,
        'quote" } injected{label="1"',
    ]
    for text in typed:
        await run_command(env, text, ALICE)
    forged = {
        "type": "block_actions",
        "user": {"id": ALICE, "username": "alice", "team_id": TEAM_ID},
        "team": {"id": TEAM_ID, "domain": "example"},
        "trigger_id": "1.2.3",
        "actions": [{"action_id": "made_up_action_1234", "block_id": "b", "type": "button"}],
    }
    await env.slack.interact(forged)
    odd = {**forged, "actions": [{"action_id": ["not", "a", "string"], "block_id": "b"}]}
    refused = await env.slack.interact(odd)
    assert refused.status_code == 400  # named, then refused as malformed: never a 500
    async with http_client(base_url=env.url) as http:
        await http.get("/no/such/path/made-up-9876")
    text, samples = await scrape(env)
    assert value(samples, "tokenbot_slack_requests_total", listener="action:other") == 2
    assert label_values(samples, "tokenbot_slack_requests_total", "listener") <= {
        "command:other",
        "action:other",
    }
    assert value(samples, "tokenbot_slack_requests_total", listener="command:other") == len(typed)
    assert "other" in label_values(samples, "tokenbot_http_requests_total", "route")
    for made_up in ("made_up_action_1234", "made-up-9876", "dropTable", "script", "ünïcödé"):
        assert made_up not in text


async def test_introspections_are_counted_by_outcome(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    assert await introspect(env, {"token": secret}, GATEWAY) == 200
    assert await introspect(env, {"token": secret}, GATEWAY) == 200
    assert await introspect(env, {"token": "tb_not_a_token"}, GATEWAY) == 200
    assert await introspect(env, {"token": secret}, None) == 401
    assert await introspect(env, {}, GATEWAY) == 400
    async with http_client(base_url=env.url) as http:
        await http.get("/api/v1/auth", headers={"Authorization": f"Bearer {secret}"})
        await http.get("/api/v1/auth")
    text, samples = await scrape(env)
    name = "tokenbot_introspections_total"
    assert value(samples, name, endpoint="introspect", outcome="active") == 2
    assert value(samples, name, endpoint="introspect", outcome="inactive") == 1
    assert value(samples, name, endpoint="introspect", outcome="unauthenticated") == 1
    assert value(samples, name, endpoint="introspect", outcome="bad_request") == 1
    assert value(samples, name, endpoint="forward_auth", outcome="active") == 1
    assert value(samples, name, endpoint="forward_auth", outcome="unauthenticated") == 1
    # The first check of the token went to the database; the later ones found it kept.
    assert value(samples, "tokenbot_validation_cache_total", result="miss") >= 1
    assert value(samples, "tokenbot_validation_cache_total", result="hit") >= 2
    assert secret not in text


async def test_a_sweep_run_is_counted_and_timed(env: Running) -> None:
    _, before = await scrape(env)
    await sweep_and_deliver(env.deps, env.slack_app_client)
    _, after = await scrape(env)
    assert value(before, "tokenbot_sweep_runs_total", outcome="ok") == 0
    assert value(after, "tokenbot_sweep_runs_total", outcome="ok") == 1
    assert value(after, "tokenbot_sweep_duration_seconds_count") == 1


async def test_a_failed_sweep_run_is_counted_as_failed(
    env: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr("storage.sweep.sweep", broken)
    with pytest.raises(RuntimeError):
        await sweep_and_deliver(env.deps, env.slack_app_client)
    _, samples = await scrape(env)
    assert value(samples, "tokenbot_sweep_runs_total", outcome="failed") == 1
    assert value(samples, "tokenbot_sweep_runs_total", outcome="ok") == 0


async def test_outbox_depth_and_oldest_age_reflect_the_queued_messages(env: Running) -> None:
    await generate(env, ALICE, "ci")  # the organization exists
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert outbox.queue_digests(env.db, TEAM_ID, ["U0APPR1", "U0APPR2"], an_hour_ago) == 2
    _, samples = await scrape(env)
    assert value(samples, "tokenbot_outbox_pending_messages") == 2
    age = value(samples, "tokenbot_outbox_oldest_pending_age_seconds")
    assert 3600 <= age < 3600 + 60


async def test_the_outbox_is_read_at_most_every_few_seconds(env: Running) -> None:
    await generate(env, ALICE, "ci")
    now = datetime.now(UTC)
    outbox.queue_digests(env.db, TEAM_ID, ["U0APPR1"], now)
    _, first = await scrape(env)
    outbox.queue_digests(env.db, TEAM_ID, ["U0APPR2"], now)
    _, second = await scrape(env)  # within the same few seconds: the figures kept
    assert value(first, "tokenbot_outbox_pending_messages") == 1
    assert value(second, "tokenbot_outbox_pending_messages") == 1


async def test_outbox_figures_are_read_again_once_they_are_old() -> None:
    metrics = Metrics()
    reads: list[int] = []

    async def read() -> object:
        from bot.metrics import OutboxFigures

        reads.append(1)
        return OutboxFigures(len(reads), 0.0)

    await metrics.refresh_outbox(read)  # type: ignore[arg-type]
    await metrics.refresh_outbox(read)  # type: ignore[arg-type]
    assert len(reads) == 1
    metrics._outbox_read_at = time.monotonic() - 10  # as if read 10 s ago
    await metrics.refresh_outbox(read)  # type: ignore[arg-type]
    assert len(reads) == 2


async def test_a_slack_rate_limit_is_counted_by_method(env: Running) -> None:
    env.standin.fail_next("views.open", status=429, headers={"Retry-After": "1"})
    mark = len(env.standin.calls)
    opened = await run_command(env, "new", ALICE)
    assert opened.method == "views.open"  # the retry got through
    assert len(env.standin.calls_to("views.open")[mark:]) <= 2
    env.standin.fail_next("chat.postMessage", error="channel_not_found")
    with pytest.raises(Exception, match="channel_not_found"):
        await env.slack_app_client.chat_postMessage(channel="C0GONE", text="hello")
    _, samples = await scrape(env)
    errors = "tokenbot_slack_api_errors_total"
    assert value(samples, errors, method="views.open", error="ratelimited") == 1
    assert value(samples, errors, method="chat.postMessage", error="api_error") == 1
    assert value(samples, errors, method="views.publish", error="ratelimited") == 0


async def test_two_apps_in_one_process_count_apart(env: Running, database_url: str) -> None:
    await run_command(env, "list", ALICE)
    async with running_tokenbot(database_url, migrate=False) as other:
        _, samples = await scrape(other)
    assert value(samples, "tokenbot_slack_requests_total", listener="command:list") == 0


# -- health ---------------------------------------------------------------------------


async def test_healthz_and_readyz_answer_ok_on_a_migrated_database(env: Running) -> None:
    async with http_client(base_url=env.url) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}


async def test_readyz_is_503_on_a_database_never_migrated(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    async with (
        running_tokenbot(empty, migrate=False) as env,
        http_client(base_url=env.url) as http,
    ):
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert health.status_code == 200  # alive: it serves
    assert ready.status_code == 503
    assert ready.json() == {"status": "database not migrated (run `tokenbot db upgrade`)"}


async def test_readyz_is_503_on_a_database_behind_the_code(env: Running) -> None:
    head = code_head()
    version = sa.text("UPDATE alembic_version SET version_num = :to")
    with env.db.engine.begin() as conn:
        conn.execute(version, {"to": "0009"})
    try:
        async with http_client(base_url=env.url) as http:
            ready = await http.get("/readyz")
    finally:
        with env.db.engine.begin() as conn:
            conn.execute(version, {"to": head})
    assert ready.status_code == 503
    behind = f"database schema is at revision 0009, this code needs {head}"
    assert ready.json() == {"status": behind}


async def test_readyz_is_503_healthz_and_metrics_200_when_the_database_is_unreachable() -> None:
    unreachable = "postgresql://tokenbot@127.0.0.1:9/tokenbot?connect_timeout=2"
    async with (
        running_tokenbot(unreachable, migrate=False) as env,
        http_client(base_url=env.url, timeout=15) as http,
    ):
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
        metrics = await http.get("/metrics")
    assert health.status_code == 200
    assert ready.status_code == 503 and ready.json() == {"status": "database unreachable"}
    # The outbox cannot be read; everything else is still there to see.
    assert metrics.status_code == 200
    assert 'tokenbot_http_requests_total{route="/readyz",status="503"} 1.0' in metrics.text


# -- logs -----------------------------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The process's logging as ``tokenbot serve --log-format json`` sets it up, its
    lines written here instead of to stderr; put back after."""
    loggers = [logging.getLogger(), *map(logging.getLogger, ("slack_sdk", "slack_bolt"))]
    saved = [(logger.handlers[:], logger.level) for logger in loggers]
    setup_logging("INFO", "json")
    written = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)
    try:
        yield written
    finally:
        for logger, (handlers, level) in zip(loggers, saved, strict=True):
            logger.handlers[:] = handlers
            logger.setLevel(level)


async def test_json_logs_are_one_object_a_line_with_the_request_id_and_no_token(
    env: Running, json_logs: io.StringIO
) -> None:
    secret = await generate(env, ALICE, "ci")
    await introspect(env, {"token": secret}, GATEWAY)
    async with http_client(base_url=env.url) as http:  # refused, and logged
        await http.post("/slack/events", content=b"unsigned=1")
    env.standin.fail_next("chat.postMessage", error="channel_not_found")
    with pytest.raises(Exception, match="channel_not_found"):
        await env.slack_app_client.chat_postMessage(channel="C0GONE", text=secret)
    err = json_logs.getvalue()
    lines = [json.loads(line) for line in err.splitlines()]
    assert lines, "nothing was logged"
    for line in lines:
        assert {"time", "level", "logger", "message", "request_id"} <= line.keys()
        datetime.fromisoformat(line["time"])
    refused = [line for line in lines if line["message"].startswith("refused a")]
    assert refused and all(len(line["request_id"]) == 12 for line in refused)
    assert secret not in err


def test_log_format_is_refused_unless_text_or_json(tokenbot) -> None:  # type: ignore[no-untyped-def]
    flag = tokenbot("socket", "--log-format", "xml")
    assert flag.code == 2 and "--log-format" in flag.stderr
    env = {"TOKENBOT_LOG_FORMAT": "xml", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}
    variable = tokenbot("socket", env=env)
    assert variable.code == 2 and "TOKENBOT_LOG_FORMAT" in variable.stderr


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--log-format", "json"], {}, "JsonFormatter"),
        ([], {"TOKENBOT_LOG_FORMAT": "json"}, "JsonFormatter"),
        (["--log-format", "text"], {"TOKENBOT_LOG_FORMAT": "json"}, "OneLineFormatter"),
        ([], {}, "OneLineFormatter"),
    ],
)
def test_serve_logs_in_the_format_chosen(  # type: ignore[no-untyped-def]
    tokenbot, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], expected: str
) -> None:
    chosen: list[str] = []

    def serve(*given: object) -> int:
        chosen.append(type(logging.getLogger().handlers[0].formatter).__name__)
        return 0

    monkeypatch.setattr("bot.cli.serve", serve)
    assert tokenbot("serve", *args, env=env).code == 0
    assert chosen == [expected]
