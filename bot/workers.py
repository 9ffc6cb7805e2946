"""``tokenbot serve --workers N``: N server processes sharing the listening sockets.

This process binds the sockets and starts N ``tokenbot serve`` processes that inherit
them; the kernel hands each new connection to one of them. Each is a replica like any
other, with its own event loop, lifespan, scheduler and database connections: the
scheduler's jobs are safe with N of them as with N hosts (sweeps lock rows with SKIP
LOCKED, messages carry unique keys, revocations are heard by all through the database).

SIGTERM or SIGINT stops them all gracefully (each finishes its deliveries in flight); a
second SIGINT stops them at once. A worker that dies otherwise is started again.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger(__name__)

BACKLOG = 2048  # uvicorn's own
RESTART_DELAY = 1.0  # seconds before a worker that died is started again, doubling
MAX_RESTART_DELAY = 30.0
STEADY = 30.0  # seconds a worker must have run for its restart delay to start over
_PR_SET_PDEATHSIG = 1


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, to be inherited by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def inherited(fds: str) -> list[socket.socket]:
    """In a worker: the listening sockets named by ``--sockets``. It also asks to be sent
    SIGTERM should the process that started it die (Linux), so that no worker outlives
    it and keeps serving unsupervised."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    return [socket.socket(fileno=int(fd)) for fd in fds.split(",")]


class Supervisor:
    """Starts the workers, passes signals on, starts again a worker that died."""

    def __init__(self, count: int, argv: list[str], sockets: list[socket.socket]) -> None:
        self.count = count
        self.fds = [sock.fileno() for sock in sockets]
        fd_list = ",".join(map(str, self.fds))
        self.command = [sys.executable, "-m", "bot", "serve", *argv, "--sockets", fd_list]
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * count
        self.started = [0.0] * count
        self.delays = [RESTART_DELAY] * count
        self.due = [0.0] * count  # when a dead worker is to be started again
        self.stopping: signal.Signals | None = None

    def _start(self, n: int) -> None:
        # A session of its own: a Ctrl-C in the terminal reaches this process only, which
        # passes it on once (twice would be the "stop at once" of a second Ctrl-C).
        self.workers[n] = subprocess.Popen(  # noqa: S603 (our own command)
            self.command, pass_fds=self.fds, start_new_session=True
        )
        self.started[n] = time.monotonic()

    def _signal(self, received: int, _frame: FrameType | None) -> None:
        again = self.stopping is not None
        self.stopping = signal.Signals(received)
        passed_on = signal.SIGINT if again and received == signal.SIGINT else signal.SIGTERM
        for worker in self.workers:
            if worker is not None and worker.poll() is None:
                worker.send_signal(passed_on)

    def run(self) -> int:
        """Until every worker has stopped after SIGTERM or SIGINT: 0 if all stopped
        cleanly, else 1."""
        for received in (signal.SIGTERM, signal.SIGINT):
            signal.signal(received, self._signal)
        for n in range(self.count):
            if self.stopping is None:  # a stop asked for meanwhile starts no more
                self._start(n)
        log.info("started %d workers", sum(w is not None for w in self.workers))
        failed = False
        while True:
            for n, worker in enumerate(self.workers):
                if worker is None:
                    if self.stopping is None and time.monotonic() >= self.due[n]:
                        self._start(n)
                    continue
                code = worker.poll()
                if code is None:
                    continue
                self.workers[n] = None
                if self.stopping is not None:
                    # Killed by the SIGTERM passed on: it was still starting, serving nothing.
                    failed = failed or code not in (0, -signal.SIGTERM)
                    continue
                ran = time.monotonic() - self.started[n]
                self.delays[n] = RESTART_DELAY if ran >= STEADY else self.delays[n]
                log.warning(
                    "worker %d stopped (exit status %s); starting it again in %g s",
                    worker.pid,
                    code,
                    self.delays[n],
                )
                self.due[n] = time.monotonic() + self.delays[n]
                self.delays[n] = min(self.delays[n] * 2, MAX_RESTART_DELAY)
            if self.stopping is not None and not any(self.workers):
                return 1 if failed else 0
            time.sleep(0.1)
