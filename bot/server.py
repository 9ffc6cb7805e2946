"""The listeners of ``tokenbot serve``: uvicorn servers with the edge's timeouts and
limits, sharing one event loop, one lifespan (scheduler, Slack session, database) and one
way of stopping."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bot.config import Settings

log = logging.getLogger(__name__)

# Seconds a keep-alive connection may sit idle between requests, and that requests still
# in progress are given to finish once the process is told to stop.
KEEP_ALIVE = 5
GRACEFUL_SHUTDOWN = 30
# Bytes a request head (request line and headers) may take.
MAX_HEAD = 64 * 1024


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol plus what it lacks: uvicorn times out only idle
    keep-alive connections, never one whose request head is still arriving, so a client
    sending its headers a byte at a time holds a connection forever. Here a connection is
    closed when a request head has not arrived within ``head_timeout`` seconds of the
    connection opening or of the request's first byte, or grows past ``MAX_HEAD``."""

    head_timeout: ClassVar[float] = 10.0
    _head_deadline: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_deadline is not None and self._head_bytes > MAX_HEAD:
            self._close("a request head over %d bytes", MAX_HEAD)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_head()

    def on_headers_complete(self) -> None:
        self._head_arrived()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self._head_deadline is None:
            self._head_bytes = 0
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_late)

    def _head_arrived(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        self._close("no complete request head after %g s", self.head_timeout)

    def _close(self, why: str, *args: object) -> None:
        self._head_arrived()
        if not self.transport.is_closing():
            log.debug("closed a connection: " + why, *args)
            self.transport.close()


def listener_config(app: ASGIApp, host: str, port: int, settings: Settings) -> uvicorn.Config:
    """A uvicorn configuration for one listener, with the limits of ``settings``."""
    protocol = type(
        "EdgeHttpProtocol", (EdgeHttpProtocol,), {"head_timeout": settings.http_header_timeout}
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        ws="none",
        lifespan="off",  # run once for every listener by serve_listeners
        log_config=None,
        access_log=False,
        limit_concurrency=settings.http_max_connections,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )


def raise_open_file_limit(needed: int) -> None:
    """Raise the soft limit of open files to the hard one: every connection is one, and
    the usual soft limit of 1,024 is reached by a thousand slow clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("could not raise the limit of open files (%s)", error)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the limit of open files (%d) is below what the connection limit needs (%d): "
            "raise it, or lower TOKENBOT_HTTP_MAX_CONNECTIONS",
            soft,
            needed,
        )


class _Listener(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # serve_listeners handles signals once, for every listener.
        yield


async def serve_listeners(
    app: Starlette, configs: list[uvicorn.Config], sockets: list[socket.socket] | None = None
) -> None:
    """Serve every listener until SIGTERM or SIGINT, then stop them all gracefully (a
    second SIGINT stops at once). ``app``'s lifespan wraps them all. ``sockets``: one
    listening socket for each listener, already bound (a worker's), else each binds its
    own."""
    servers = [_Listener(config) for config in configs]
    loop = asyncio.get_running_loop()

    def stop(received: signal.Signals) -> None:
        for server in servers:
            if server.should_exit and received == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    for received in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(received, stop, received)
    try:
        async with app.router.lifespan_context(app):
            await asyncio.gather(
                *(
                    server.serve(sockets=None if sockets is None else [sockets[n]])
                    for n, server in enumerate(servers)
                )
            )
    finally:
        for received in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(received)
