"""What Prometheus scrapes at ``/metrics`` (prometheus-client). Each app has a registry of
its own, so two apps in one process (tests, the demo) count apart.

Every label value comes from a fixed set the code knows (a route's template, a
listener's kind and id, an outcome), never from what a request says: a value read from
a payload that the app does not know becomes ``other``."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# Seconds a scrape reuses the outbox's figures: one query however often it is scraped.
OUTBOX_FIGURES_MAX_AGE = 5.0
OTHER = "other"


@dataclass(frozen=True)
class OutboxFigures:
    """How many messages wait to be sent, and how long the oldest of them has waited."""

    pending: int
    oldest_age: float  # seconds; 0 when none waits


class Metrics:
    """The app's counters, histograms and gauges, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.http_requests = Counter(
            "tokenbot_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["route", "status"],
            registry=registry,
        )
        self.http_seconds = Histogram(
            "tokenbot_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            registry=registry,
        )
        self.slack_requests = Counter(
            "tokenbot_slack_requests",
            "Requests from Slack, by listener (command:<subcommand>, action:<action id>, "
            "view:<callback id>, event:<event type>).",
            ["listener"],
            registry=registry,
        )
        self.slack_seconds = Histogram(
            "tokenbot_slack_request_duration_seconds",
            "Time until a request from Slack is acknowledged, by listener.",
            ["listener"],
            registry=registry,
        )
        self.introspections = Counter(
            "tokenbot_introspections",
            "Token checks by resource servers and gateways, by endpoint and outcome "
            "(active, inactive, unauthenticated, bad_request, throttled).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.validation_cache = Counter(
            "tokenbot_validation_cache",
            "Token validations answered from the cache (hit) or the database (miss).",
            ["result"],
            registry=registry,
        )
        self.sweeps = Counter(
            "tokenbot_sweep_runs",
            "Runs of the sweep (expiry, reminders, deliveries), by outcome (ok, failed).",
            ["outcome"],
            registry=registry,
        )
        self.sweep_seconds = Histogram(
            "tokenbot_sweep_duration_seconds",
            "Time a run of the sweep took.",
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.slack_api_errors = Counter(
            "tokenbot_slack_api_errors",
            "Failed calls to Slack's Web API and response URLs, each attempt counted, by "
            "method and error (ratelimited, server_error, connection, http_error, api_error).",
            ["method", "error"],
            registry=registry,
        )
        self.outbox_pending = Gauge(
            "tokenbot_outbox_pending_messages",
            "Messages in the outbox waiting to be sent (or sent again).",
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "tokenbot_outbox_oldest_pending_age_seconds",
            "How long the oldest message waiting in the outbox has waited.",
            registry=registry,
        )
        self._outbox_read_at: float | None = None

    async def refresh_outbox(self, read: Callable[[], Awaitable[OutboxFigures]]) -> None:
        """Set the outbox gauges from ``read()``, unless they were set within the last
        OUTBOX_FIGURES_MAX_AGE seconds."""
        now = time.monotonic()
        if self._outbox_read_at is not None and now - self._outbox_read_at < OUTBOX_FIGURES_MAX_AGE:
            return
        self._outbox_read_at = now
        figures = await read()
        self.outbox_pending.set(figures.pending)
        self.outbox_oldest_age.set(figures.oldest_age)

    def exposition(self) -> Response:
        """The registry in Prometheus' text format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def route_of(routes: list[BaseRoute], scope: Scope) -> str:
    """The template of the route ``scope`` goes to (``/api/v1/auth/{path:path}``), or
    ``other``: never the path itself, which the client chooses."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL and isinstance(route, Route):
            return route.path
    return OTHER


class HttpMetrics:
    """Counts every request and times its answer, by route template and status code.
    Outermost, so that what the edge refuses (413, 408) is counted too."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts: the app failed

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = route_of(self.routes, scope)
            self.metrics.http_requests.labels(route, str(status)).inc()
            self.metrics.http_seconds.labels(route).observe(time.perf_counter() - started)


def metrics_route(metrics: Metrics, outbox: Callable[[], Awaitable[OutboxFigures]]) -> Route:
    """``GET /metrics``: the outbox's figures read (at most every few seconds), then all."""

    async def scrape(request: Request) -> Response:
        try:
            await metrics.refresh_outbox(outbox)
        except Exception as error:
            # The rest still tells what is going on; the gauges keep their last figures.
            log.warning("metrics: the outbox could not be read (%s)", type(error).__name__)
        return metrics.exposition()

    return Route("/metrics", scrape, methods=["GET"])
