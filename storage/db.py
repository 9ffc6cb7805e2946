"""Engine and sessions: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL by URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

_IMMEDIATE = "tokenbot_immediate"


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

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        if self._write_lock is None:
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                yield session
            return
        with (
            self._write_lock,
            Session(self._writer, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

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
