"""Engine and sessions: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL by URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

_IMMEDIATE = "tokenbot_immediate"
_INVALIDATES = "tokenbot_invalidates"
_EPOCH_VALUE = sa.text("SELECT value FROM validityepoch WHERE id = 1")
_BUMP_EPOCH = sa.text(  # the same statement on SQLite and PostgreSQL
    "INSERT INTO validityepoch (id, value) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET value = validityepoch.value + 1"
)


def invalidates(session: Session) -> None:
    """Mark the transaction as one after which some token may no longer be valid: caches
    of validation results drop everything once it commits (here at once, in other
    processes at their next refresh_generation)."""
    if not session.info.get(_INVALIDATES):
        session.execute(_BUMP_EPOCH)
        session.info[_INVALIDATES] = True


class Database:
    """Owns the engine. ``read()`` and ``write()`` give one transaction each.

    On SQLite a write transaction starts with ``BEGIN IMMEDIATE``, so writers queue on the
    database lock instead of failing on upgrade; on PostgreSQL writers serialise on the
    rows they lock (see ``storage.orgs.lock_org``).
    """

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self.engine = make_engine(url)
        self._writer = self.engine.execution_options(**{_IMMEDIATE: True})
        # SQLite allows one writer at a time. Writers of this process queue here, in
        # order, instead of in SQLite's busy handler, which polls with sleeps of up to
        # 100 ms; other processes still queue on the busy timeout.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        # Grows when a token may have stopped being valid: at once after such a write by
        # this process, and when refresh_generation() sees another process's.
        self.generation = 0
        self._epoch_seen: int | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        lock = self._write_lock or nullcontext()
        with lock, Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session
            if session.info.get(_INVALIDATES):
                self.generation += 1  # after the commit: a reader cannot re-cache the past

    def refresh_generation(self) -> int:
        """Look at the shared epoch; a change made by another process moves
        ``generation`` on. Returns the generation."""
        with self.engine.connect() as conn:
            value = conn.execute(_EPOCH_VALUE).scalar()
        if value != self._epoch_seen:  # (the first look also counts: nothing is assumed)
            self.generation += 1
            self._epoch_seen = value
        return self.generation

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(
            parsed, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True
        )
    engine = sa.create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=10,
        hide_parameters=True,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN can be chosen below.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
