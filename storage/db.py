"""Engine and sessions: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL by URL; and
the one way async code calls storage (:func:`run`).

Most storage functions take a ``Database`` and work in ``read()``/``write()`` sessions;
async code runs them in a worker thread. The few on the path of every Slack
acknowledgement are *quick* (:func:`quick`): written once, as a coroutine over
:class:`Statements` (prepared statements sent a batch at a time), they run where they
cost least, decided here and nowhere else:

* SQLite: on the event loop, over a connection the loop keeps, when the database is
  free: the write lock not held, and SQLite answering at once (busy timeout 0 on that
  connection). When it is busy, in a worker thread, like the rest.
* PostgreSQL: natively async, over psycopg's async connections, each batch pipelined in
  one round trip. A write is one transaction sent whole, so the row lock it starts with
  is never held while the client waits.

Called synchronously (tests, other storage functions, the CLI), a quick function runs in
the calling thread over a pooled connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import threading
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel import Session

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

# Worker threads that async code may keep busy at once (anyio's default limiter): the
# pool keeps a connection for each, so that no call opens one of its own.
WORKER_THREADS = 40
# Async connections to PostgreSQL the event loop may hold at once.
ASYNC_CONNECTIONS = 20
# The loop's SQLite connection never checkpoints (it would write and sync the database
# file on the loop); after this many commits, a worker thread does.
CHECKPOINT_EVERY = 500

_IMMEDIATE = "tokenbot_immediate"
_INVALIDATES = "tokenbot_invalidates"
_EPOCH_VALUE = sa.text("SELECT value FROM validityepoch WHERE id = 1")
_BUMP_EPOCH = sa.text(  # the same statement on SQLite and PostgreSQL
    "INSERT INTO validityepoch (id, value) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET value = validityepoch.value + 1"
)
# PostgreSQL: the same bump, and a notification delivered to every listener when (and
# only if) the transaction commits. The payload says whose epoch moved (the schema: one
# database may hold several tokenbots) and to what.
VALIDITY_CHANNEL = "tokenbot_validity"  # as spelled in the statement below
_BUMP_EPOCH_AND_NOTIFY = sa.text(
    "WITH bumped AS (INSERT INTO validityepoch (id, value) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET value = validityepoch.value + 1 RETURNING value) "
    "SELECT pg_notify('tokenbot_validity', current_schema() || ' ' || value) FROM bumped"
)
_SQLITE_BUSY = 5


def invalidates(session: Session) -> None:
    """Mark the transaction as one after which some token may no longer be valid: caches
    of validation results drop everything once it commits (here at once; in other
    processes as soon as they hear of it on PostgreSQL, else at their next
    refresh_generation)."""
    if not session.info.get(_INVALIDATES):
        postgres = session.get_bind().dialect.name == "postgresql"
        session.execute(_BUMP_EPOCH_AND_NOTIFY if postgres else _BUMP_EPOCH)
        session.info[_INVALIDATES] = True


# -- quick storage functions ------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A statement (built once, with named parameters) and the parameters of one run."""

    statement: sa.Executable
    params: Mapping[str, Any] = field(default_factory=dict)


# The rows of one query: named tuples, each value as its column's type reads it (aware
# datetimes, JSON decoded).
Rows = list[Any]


class Statements(Protocol):
    """What a quick function talks to. Each call sends its queries together and answers
    with the rows of each, in order."""

    async def read(self, *queries: Query) -> list[Rows]:
        """Run ``queries`` outside any transaction: each sees what was committed when it
        runs. (On SQLite a writing function runs wholly under the write lock.)"""
        ...

    async def write(self, *queries: Query) -> list[Rows]:
        """Run ``queries`` as one transaction and commit it: a function's last use of the
        database. Nothing runs between them, so whatever must hold under concurrency is
        in the statements: a row lock first, then statements that check as they write."""
        ...


class Decline(Exception):
    """Raised by a quick function, before it writes, for a rare case it leaves to
    ``fallback``: ``fallback(db)`` runs instead, in a worker thread."""

    def __init__(self, fallback: Callable[[Database], Any]) -> None:
        super().__init__("left to the fallback")
        self.fallback = fallback


Body = Callable[Concatenate[Statements, P], Coroutine[Any, Any, T]]


class Quick(Generic[P, T]):
    """A storage function written over :class:`Statements` (see :func:`quick`)."""

    def __init__(self, body: Body[P, T], writes: bool) -> None:
        self.body = body
        self.writes = writes
        self.__name__ = body.__name__
        self.__qualname__ = body.__qualname__
        self.__doc__ = body.__doc__

    def __call__(self, db: Database, /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run in this thread, over a pooled connection."""
        return db.run_here(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<quick storage function {self.__qualname__}>"


def quick(*, writes: bool) -> Callable[[Body[P, T]], Quick[P, T]]:
    """Declare a storage function quick: ``fn(db, *args)`` runs it synchronously, and
    ``await run(fn, db, *args)`` where the database runs it best (see the module's
    docstring). ``writes``: it ends with :meth:`Statements.write`."""

    def declare(body: Body[P, T]) -> Quick[P, T]:
        return Quick(body, writes)

    return declare


async def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """The one way async code calls storage: a quick function (whose first argument is
    the Database) the quick way, any other in a worker thread. The loop never waits."""
    if isinstance(fn, Quick):
        db, *rest = args
        return cast(T, await cast(Database, db).run_quick(fn, *rest, **kwargs))
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))


class _NextId(sa.sql.expression.ColumnElement[int]):
    """The id the next row of ``table`` will have, taken now (see :func:`next_id`)."""

    inherit_cache = False  # compiled once per statement, by Database.prepared
    type = sa.Integer()

    def __init__(self, table: sa.Table) -> None:
        self.table_name = table.name


@compiles(_NextId)
def _next_id_sqlite(element: _NextId, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's own choice for a new row id; exact, as a writing quick function runs
    # under the write lock from its first statement.
    table = compiler.preparer.quote(element.table_name)
    return f"(SELECT coalesce(max(id), 0) + 1 FROM {table})"  # noqa: S608 (a table's name)


@compiles(_NextId, "postgresql")
def _next_id_postgresql(element: _NextId, compiler: SQLCompiler, **kw: Any) -> str:
    return f"nextval(pg_get_serial_sequence('{element.table_name}', 'id'))"


def next_id(table: sa.Table) -> sa.ColumnElement[int]:
    """The id for a row of ``table`` that a quick write will insert, read beforehand: so
    the write can name the row (an audit event's subject) without a round trip between
    its statements."""
    return _NextId(table)


Function = Callable[..., sa.ColumnElement[Any]]


def dialect_function(name: str, type_: sa.types.TypeEngine[Any], sqlite: str, pg: str) -> Function:
    """A SQL function spelled ``sqlite`` on SQLite and ``pg`` on PostgreSQL: templates in
    which ``{}`` stands for its compiled arguments, separated by commas."""
    element = type(
        name, (sa.sql.functions.FunctionElement,), {"inherit_cache": True, "type": type_}
    )

    def spelled(template: str) -> Callable[..., str]:
        def compile_(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
            return template.format(compiler.process(element.clauses, **kw))

        return compile_

    compiles(element)(spelled(sqlite))
    compiles(element, "postgresql")(spelled(pg))
    return cast(Function, element)


_sha256 = dialect_function(
    "Sha256Hex", sa.String(), "tokenbot_sha256({})", "encode(sha256(convert_to({}, 'UTF8')), 'hex')"
)


def sha256_hex(text: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """SHA-256 of ``text`` encoded as UTF-8, in hex, computed by the database: what
    ``hashlib.sha256(text.encode()).hexdigest()`` gives."""
    return _sha256(text)


def _sqlite_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Prepared:
    """A statement compiled once for a dialect, with how its parameters and rows are
    converted (as SQLAlchemy's types say, e.g. UTC datetimes, JSON)."""

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect) -> None:
        compiled = cast(sa.ClauseElement, statement).compile(dialect=dialect)
        self._compiled = compiled
        self.sql = compiled.string
        self._order: list[str] | None = getattr(compiled, "positiontup", None)
        binds = getattr(compiled, "binds", {})
        self._binds = {
            name: process
            for name, bind in binds.items()
            if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        columns = list(getattr(statement, "exported_columns", []))
        self.returns = bool(columns)
        self._row: Any = namedtuple("_Row", [c.key for c in columns], rename=True)  # type: ignore[misc]
        self._results = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        ]
        self._convert = any(self._results)

    def parameters(self, params: Mapping[str, Any]) -> Any:
        values = cast(dict[str, Any], self._compiled.construct_params(dict(params)))
        for name, process in self._binds.items():
            if name in values:
                values[name] = process(values[name])
        return values if self._order is None else [values[name] for name in self._order]

    def rows(self, fetched: list[Any]) -> Rows:
        make = self._row._make
        if not self._convert:
            return [make(row) for row in fetched]
        results = self._results
        return [
            make([v if p is None else p(v) for p, v in zip(results, row, strict=True)])
            for row in fetched
        ]


def _busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == _SQLITE_BUSY)
    return "locked" in str(error) or "busy" in str(error)


class _SqliteStatements:
    def __init__(self, db: Database, conn: sqlite3.Connection) -> None:
        self.db = db
        self.conn = conn

    def _run(self, query: Query) -> Rows:
        prepared = self.db.prepared(query.statement)
        cursor = self.conn.execute(prepared.sql, prepared.parameters(query.params))
        return prepared.rows(cursor.fetchall()) if prepared.returns else []

    async def read(self, *queries: Query) -> list[Rows]:
        return [self._run(query) for query in queries]

    async def write(self, *queries: Query) -> list[Rows]:
        answers = [self._run(query) for query in queries]
        self.conn.execute("COMMIT")
        return answers


class _PostgresStatements:
    """Over a psycopg connection, sync (a worker thread) or async (the loop)."""

    def __init__(self, db: Database, conn: Any) -> None:
        self.db = db
        self.conn = conn
        self.wrote = False

    def _batch(self, queries: tuple[Query, ...]) -> list[tuple[_Prepared, Any]]:
        return [
            (prepared, prepared.parameters(query.params))
            for query in queries
            if (prepared := self.db.prepared(query.statement))
        ]


class _AsyncPostgres(_PostgresStatements):
    async def read(self, *queries: Query) -> list[Rows]:
        return await self._send(queries, transaction=False)

    async def write(self, *queries: Query) -> list[Rows]:
        self.wrote = True
        return await self._send(queries, transaction=True)

    async def _send(self, queries: tuple[Query, ...], transaction: bool) -> list[Rows]:
        batch = self._batch(queries)
        conn = self.conn
        cursors = []
        if len(batch) == 1 and not transaction:
            prepared, params = batch[0]
            cursors.append(await conn.cursor().execute(prepared.sql, params))
        else:
            async with conn.pipeline():
                if transaction:
                    await conn.execute("BEGIN")
                for prepared, params in batch:
                    cursors.append(await conn.cursor().execute(prepared.sql, params))
                if transaction:
                    await conn.execute("COMMIT")
        return [
            prepared.rows(await cursor.fetchall()) if prepared.returns else []
            for (prepared, _), cursor in zip(batch, cursors, strict=True)
        ]


class _SyncPostgres(_PostgresStatements):
    """In a worker thread: the connection is SQLAlchemy's (not autocommit)."""

    async def read(self, *queries: Query) -> list[Rows]:
        return self._send(queries, commit=False)

    async def write(self, *queries: Query) -> list[Rows]:
        self.wrote = True
        return self._send(queries, commit=True)

    def _send(self, queries: tuple[Query, ...], commit: bool) -> list[Rows]:
        batch = self._batch(queries)
        conn = self.conn
        with conn.pipeline():
            cursors = [conn.cursor().execute(prepared.sql, params) for prepared, params in batch]
            if commit:
                conn.commit()
        return [
            prepared.rows(cursor.fetchall()) if prepared.returns else []
            for (prepared, _), cursor in zip(batch, cursors, strict=True)
        ]


def _complete(work: Coroutine[Any, Any, T]) -> T:
    """Run a quick function's coroutine over synchronous statements: it never suspends."""
    try:
        work.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    work.close()
    raise RuntimeError("a quick storage function awaited something other than Statements")


class _AsyncConnections:
    """psycopg async connections of one event loop: up to ``size`` in use at once, kept
    when idle. One that fails or is cut off mid-transaction is closed, not kept."""

    def __init__(self, db: Database, size: int) -> None:
        import psycopg

        self.loop = asyncio.get_running_loop()
        self._psycopg = psycopg
        args, kwargs = db.engine.dialect.create_connect_args(db.engine.url)
        self._connect = partial(psycopg.AsyncConnection.connect, *args, autocommit=True, **kwargs)
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self.failures = psycopg.OperationalError  # a connection lost

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], bool]]:
        """A connection, and whether it was kept from before (it may have gone stale)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            kept = False
            try:
                yield conn, reused
                idle = self._psycopg.pq.TransactionStatus.IDLE
                kept = not conn.broken and conn.info.transaction_status == idle
            finally:
                if kept:
                    self._idle.append(conn)
                else:
                    _close_now(conn)

    def close(self) -> None:
        while self._idle:
            _close_now(self._idle.pop())


def _close_now(conn: psycopg.AsyncConnection[Any]) -> None:
    # Without awaiting: from a worker thread, or while being cancelled. The server rolls
    # back whatever transaction was open.
    if not conn.closed:
        conn.pgconn.finish()


# -- the database ------------------------------------------------------------------------


class Database:
    """Owns the engine. ``read()`` and ``write()`` give one transaction each; quick
    functions run through :func:`run` (or synchronously, by calling them).

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
        # 100 ms; other processes still queue on the busy timeout. The event loop never
        # waits for it: a quick function finding it held runs in a worker thread.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        # Grows when a token may have stopped being valid: at once after such a write by
        # this process, and when refresh_generation() sees another process's.
        self.generation = 0
        self._epoch_seen: int | None = None
        self._prepared: dict[int, tuple[sa.Executable, _Prepared]] = {}
        self._loop_connection: Any = None  # SQLite: the event loop's own connection
        self._loop_commits = 0
        self._async: _AsyncConnections | None = None  # PostgreSQL: the loop's connections

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
        self.saw_epoch(value)
        return self.generation

    def saw_epoch(self, value: int | None) -> None:
        """The shared epoch was read, or heard of, as ``value``: if it is not the one last
        seen (the first look also counts: nothing is assumed), the generation moves on."""
        if value != self._epoch_seen:
            self.generation += 1  # before the value is noted: whoever sees it, sees this
            self._epoch_seen = value

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        if self._loop_connection is not None:
            self._loop_connection.invalidate()  # closed, not pooled: its busy timeout is 0
            self._loop_connection = None
        if self._async is not None:
            self._async.close()
            self._async = None
        self.engine.dispose()

    # -- quick functions -------------------------------------------------------------------

    def prepared(self, statement: sa.Executable) -> _Prepared:
        """``statement`` compiled for this database; once, as statements are built once."""
        found = self._prepared.get(id(statement))
        if found is None or found[0] is not statement:
            found = (statement, _Prepared(statement, self.engine.dialect))
            self._prepared[id(statement)] = found
        return found[1]

    def run_here(self, fn: Quick[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a quick function in this thread, over a pooled connection."""
        try:
            return self._run_in_thread(fn, args, kwargs)
        except Decline as declined:
            return cast(T, declined.fallback(self))

    async def run_quick(self, fn: Quick[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a quick function where it costs least (see the module's docstring)."""
        try:
            if self.dialect != "sqlite":
                return await self._run_async(fn, args, kwargs)
            ran, answer = self._run_on_loop(fn, args, kwargs)
            if ran:
                return cast(T, answer)
            return await anyio.to_thread.run_sync(self._run_in_thread, fn, args, kwargs)
        except Decline as declined:
            return cast(T, await anyio.to_thread.run_sync(declined.fallback, self))

    def _run_in_thread(self, fn: Quick[P, T], args: Any, kwargs: Any) -> T:
        raw = self.engine.raw_connection()
        try:
            if self.dialect == "sqlite":
                conn = cast(sqlite3.Connection, raw.driver_connection)
                with (self._write_lock if fn.writes else None) or nullcontext():
                    return self._run_sqlite(conn, fn, args, kwargs)
            return _complete(fn.body(_SyncPostgres(self, raw.driver_connection), *args, **kwargs))
        finally:
            raw.close()  # back to the pool, which rolls back whatever is left open

    def _run_sqlite(self, conn: sqlite3.Connection, fn: Quick[P, T], args: Any, kwargs: Any) -> T:
        if fn.writes:
            conn.execute("BEGIN IMMEDIATE")
        try:
            return _complete(fn.body(_SqliteStatements(self, conn), *args, **kwargs))
        finally:
            if conn.in_transaction:  # refused, or failed: nothing of it stays
                conn.execute("ROLLBACK")

    def _run_on_loop(self, fn: Quick[P, T], args: Any, kwargs: Any) -> tuple[bool, Any]:
        """SQLite, on the event loop: (True, answer), or (False, None) when the database
        is busy and nothing was done."""
        lock = self._write_lock
        assert lock is not None
        if fn.writes and not lock.acquire(blocking=False):
            return False, None
        try:
            answer = self._run_sqlite(self._loop_sqlite(), fn, args, kwargs)
        except sqlite3.OperationalError as error:
            if _busy(error):  # another process is writing, or checkpointing
                return False, None
            raise
        finally:
            if fn.writes:
                lock.release()
        if fn.writes:
            self._loop_commits += 1
            if self._loop_commits % CHECKPOINT_EVERY == 0:
                done = asyncio.get_running_loop().run_in_executor(None, self._checkpoint)
                done.add_done_callback(_log_failure)
        return True, answer

    def _loop_sqlite(self) -> sqlite3.Connection:
        if self._loop_connection is None:
            raw = self.engine.raw_connection()
            conn = cast(sqlite3.Connection, raw.driver_connection)
            conn.execute("PRAGMA busy_timeout=0")  # busy: the work goes to a thread instead
            conn.execute("PRAGMA wal_autocheckpoint=0")  # see CHECKPOINT_EVERY
            self._loop_connection = raw
        return cast(sqlite3.Connection, self._loop_connection.driver_connection)

    def _checkpoint(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    async def _run_async(self, fn: Quick[P, T], args: Any, kwargs: Any) -> T:
        connections = self._async_connections()
        for attempt in range(2):
            async with connections.connection() as (conn, reused):
                statements = _AsyncPostgres(self, conn)
                try:
                    return await fn.body(statements, *args, **kwargs)
                except connections.failures:
                    # A kept connection the server has closed since: nothing was written,
                    # so the function runs again, once, on a new one.
                    if attempt or not reused or statements.wrote or not conn.broken:
                        raise
        raise AssertionError("unreachable")

    def _async_connections(self) -> _AsyncConnections:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async.loop is not loop:
            if self._async is not None:
                self._async.close()  # another loop's, which is gone
            self._async = _AsyncConnections(self, ASYNC_CONNECTIONS)
        return self._async


_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class InvalidationListener:
    """PostgreSQL: one dedicated connection that LISTENs for the epoch's notifications, so
    that a change committed by any process moves this one's generation within
    milliseconds (the one-second poll of :meth:`Database.refresh_generation` stays, for
    a connection that has died without saying so). When the connection drops, it is made
    again, after 0.2 s, then twice as long each time up to 30 s; on each, the epoch is
    read once, for what was missed meanwhile. On SQLite it does nothing: the poll alone
    serves there. Waiting for a notification never blocks the event loop.
    """

    def __init__(self, db: Database, first_delay: float = 0.2, max_delay: float = 30.0) -> None:
        self.db = db
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.listening = asyncio.Event()  # set while a LISTEN is in place
        self.backend_pid: int | None = None  # the server process of that connection
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float = 5.0) -> None:
        """Start listening; return once the first LISTEN is in place, or after ``wait``
        seconds (polling covers the time until it is)."""
        if self.db.dialect != "postgresql" or self._task is not None:
            return
        self._task = asyncio.create_task(self._listen())
        try:
            await asyncio.wait_for(self.listening.wait(), wait)
        except TimeoutError:
            log.warning("not yet listening for revocations; polling meanwhile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        import psycopg

        args, kwargs = self.db.engine.dialect.create_connect_args(self.db.engine.url)
        # A peer that vanishes (a host down, a network cut) is noticed within a minute.
        for name, setting in _KEEPALIVES.items():
            kwargs.setdefault(name, setting)
        delay = self.first_delay
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(*args, autocommit=True, **kwargs)
                async with conn:
                    await conn.execute(f"LISTEN {VALIDITY_CHANNEL}")
                    cursor = await conn.execute(
                        "SELECT current_schema(), (SELECT value FROM validityepoch WHERE id = 1)"
                    )
                    schema, value = cast(tuple[str, int | None], await cursor.fetchone())
                    self.db.saw_epoch(value)  # what changed before the LISTEN
                    self.backend_pid = conn.info.backend_pid
                    self.listening.set()
                    delay = self.first_delay
                    async for note in conn.notifies():
                        theirs, _, moved_to = note.payload.partition(" ")
                        if theirs == schema:  # not another tokenbot's, in another schema
                            self.db.saw_epoch(int(moved_to) if moved_to.isdigit() else None)
            except (psycopg.Error, OSError) as error:
                log.warning(
                    "listening for revocations failed (%s); polling until it is back, in %g s",
                    type(error).__name__,
                    delay,
                )
            finally:
                self.listening.clear()
                self.backend_pid = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)


def _log_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and (error := done.exception()) is not None:
        log.warning("checkpoint of the SQLite database failed: %s", error)


def make_engine(url: str) -> Engine:
    parsed = sa.make_url(url)
    # A connection kept for every worker thread (WORKER_THREADS), a few more for threads
    # of others (the scheduler's), so that a call never waits to open one.
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=WORKER_THREADS,
            max_overflow=10,
            hide_parameters=True,
        )
    engine = sa.create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=WORKER_THREADS,
        max_overflow=10,
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
        dbapi_conn.create_function("tokenbot_sha256", 1, _sqlite_sha256, deterministic=True)

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
