"""Logging: one line per event, each carrying the id of the HTTP request it belongs to."""

from __future__ import annotations

import logging
import secrets
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

request_id: ContextVar[str] = ContextVar("request_id", default="-")

# slack_sdk and Bolt log whole request and response bodies at DEBUG, and a body may hold a
# new token; they are held at INFO whatever the root level is.
_CHATTY = ("slack_sdk", "slack_bolt")


# A log line is one line: a newline or carriage return that came from a request (a header,
# a field, the text of an exception about it) is written escaped, so nobody can forge lines.
_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r"})


class OneLineFormatter(logging.Formatter):
    """Formats a record, its exception text and stack included, as one line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).translate(_LINE_BREAKS)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        OneLineFormatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_slack_libraries()


# httpx logs the URL of every request at INFO, and a webhook endpoint's path or query may
# hold its receiver's own secret: held at WARNING.
_URLS = ("httpx", "httpcore")


def quiet_slack_libraries() -> None:
    """Hold the HTTP libraries' loggers where they log no body and no URL."""
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.INFO)
    for name in _URLS:
        logging.getLogger(name).setLevel(logging.WARNING)


class RequestIdMiddleware:
    """Gives each HTTP request an id for the log lines it causes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = request_id.set(secrets.token_hex(6))
        try:
            return await self.app(scope, receive, send)
        finally:
            request_id.reset(token)
