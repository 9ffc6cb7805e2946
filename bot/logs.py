"""Logging: one line per event, each carrying the id of the HTTP request it belongs to."""

from __future__ import annotations

import json
import logging
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

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


LogFormat = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line: time (ISO 8601, UTC), level,
    logger, message, request_id, and the exception's text when there is one. The same
    records as the text format, so the same nothing-secret rules hold."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes line breaks: one record is one line whatever it holds.
        return json.dumps(line, ensure_ascii=False, default=str)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def setup_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else OneLineFormatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
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
