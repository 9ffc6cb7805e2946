"""The ``tokenbot`` command: serve · socket · sweep · demo · db upgrade · audit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from datetime import UTC, datetime

import sqlalchemy as sa

from bot.config import Mode, Settings, SettingsError, load_settings, parse_listen
from bot.deps import Deps, wind_down
from bot.logs import LogFormat, setup_logging
from storage.db import Database, InvalidationListener
from storage.migrate import SchemaError, refuse_newer, require_current, upgrade


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenbot", description="Hand out and retire API tokens from Slack."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="HTTP mode: Slack events, health check")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 (a server is meant to listen)
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument(
        "--api-listen",
        type=_listen,
        metavar="HOST:PORT",
        help="serve /api/v1/* and /metrics here only, not on the public listener "
        "(TOKENBOT_API_LISTEN)",
    )
    serve.add_argument(
        "--workers",
        type=_count,
        default=1,
        metavar="N",
        help="run N server processes sharing the listeners (PostgreSQL only)",
    )
    serve.add_argument("--sockets", help=argparse.SUPPRESS)  # a worker's inherited listeners
    socket = sub.add_parser("socket", help="Socket Mode (needs SLACK_APP_TOKEN)")
    for server in (serve, socket):
        server.add_argument(
            "--log-format",
            choices=("text", "json"),
            help="text lines, or one JSON object a line (TOKENBOT_LOG_FORMAT; default text)",
        )
    sweep = sub.add_parser("sweep", help="run the reminder and expiry sweep once")
    sweep.add_argument("--now", type=_when, help="as of this ISO 8601 time (default: now)")
    sweep.add_argument("--dry-run", action="store_true", help="say what would be done")
    sub.add_parser("demo", help="run the main flows against a local Slack stand-in")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply database migrations")
    audit = sub.add_parser("audit", help="check or export the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_sub.add_parser("verify", help="check the hash chain of every organization's log")
    export = audit_sub.add_parser("export", help="the audit log as JSON lines, on stdout")
    export.add_argument("--org", help="only this organization (its Slack team or enterprise id)")
    export.add_argument("--since", type=_when, help="events at or after this ISO 8601 time")
    export.add_argument("--until", type=_when, help="events before this ISO 8601 time")
    return parser


def _listen(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"not a number of processes from 1 to 64: {text!r}")
    return int(text)


def _when(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def sweep_once(now: datetime | None, dry_run: bool) -> None:
    """``tokenbot sweep``: one pass as of ``now``; sends what it queues when it can."""
    from bot.app import build_app, shared_session
    from bot.jobs import sweep_and_deliver
    from storage import outbox, sweep

    settings = load_settings()
    deps = _prepare(settings)
    if now is not None:
        deps.clock = lambda: now
    at = deps.clock()
    if dry_run or not (settings.slack_bot_token or settings.multi_workspace):
        report = sweep.sweep(deps.db, at, dry_run=dry_run)
    else:
        app = build_app(deps)

        async def run() -> sweep.SweepReport:
            async with shared_session(app):
                try:
                    return await sweep_and_deliver(deps, app.client)
                finally:
                    await deps.webhooks.aclose()

        report = asyncio.run(run())
    verb = "would be" if dry_run else "were"
    print(
        f"sweep as of {at.isoformat()}: {len(report.expired)} token(s) {verb} expired, "
        f"{len(report.reminded)} reminder(s) {verb} queued"
    )
    for line in report.lines():
        print("  " + line)
    if not dry_run:
        waiting = outbox.pending_count(deps.db)
        if waiting and not (settings.slack_bot_token or settings.multi_workspace):
            print(
                f"{waiting} message(s) wait to be sent: set SLACK_BOT_TOKEN, or let "
                "`tokenbot serve` send them"
            )


def verify_audit(db: Database) -> int:
    """``tokenbot audit verify``: each organization's chain checked whole; a line for
    each, naming the first bad event where there is one. 1 if any chain is broken."""
    from storage import audit

    broken = 0
    orgs = audit.organizations(db)
    for org in orgs:
        check = audit.check_chain(db, org)
        if check.broken is None:
            print(f"{org}: {check.events} event(s), chain intact")
        else:
            broken += 1
            print(f"{org}: chain broken ({check.events} event(s)): {check.broken}")
    if not orgs:
        print("no organization has an audit log yet")
    return 1 if broken else 0


def export_audit(
    db: Database, org: str | None, since: datetime | None, until: datetime | None
) -> int:
    """``tokenbot audit export``: the events as JSON lines, oldest first per organization,
    each with its id, organization, content and digests (README: how to check them)."""
    from storage import audit

    if org is not None and org not in audit.organizations(db):
        print(f"tokenbot: no organization {org!r} in the database", file=sys.stderr)
        return 2
    for entry in audit.export(db, org, since, until):
        print(json.dumps(entry.exported(), sort_keys=True, ensure_ascii=False))
    return 0


def audit_command(args: argparse.Namespace) -> int:
    db = Database(load_settings().database_url)
    try:
        require_current(db)
        if args.audit_command == "verify":
            return verify_audit(db)
        return export_audit(db, args.org, args.since, args.until)
    except sa.exc.SQLAlchemyError as error:
        print(
            f"tokenbot: the audit log could not be read ({type(error).__name__}); "
            "is the database migrated (`tokenbot db upgrade`)?",
            file=sys.stderr,
        )
        return 2
    finally:
        db.dispose()


def _log_format(args: argparse.Namespace) -> LogFormat:
    """``--log-format``, else TOKENBOT_LOG_FORMAT, for the commands that serve; text for
    the others, which print for a person."""
    if args.command not in ("serve", "socket"):
        return "text"
    chosen: LogFormat | None = args.log_format
    return chosen or load_settings().log_format


def _settings(mode: Mode) -> Settings:
    settings = load_settings()
    settings.require(mode)
    return settings


def _prepare(settings: Settings, migrate: bool = True) -> Deps:
    db = Database(settings.database_url)
    try:
        # An older schema is brought up to date (unless the caller did: the parent of
        # workers); a newer one is refused.
        upgrade(db) if migrate else refuse_newer(db)
    except SchemaError:
        db.dispose()
        raise
    return Deps(settings=settings, db=db)


def serve(
    host: str,
    port: int,
    api_listen: tuple[str, int] | None,
    workers: int = 1,
    sockets: str | None = None,
) -> int:
    """``tokenbot serve``: the public listener and, when set, the internal API listener, in
    one process with one event loop, scheduler and database; or ``workers`` such
    processes (:func:`serve_workers`). ``sockets``: a worker's inherited listeners."""
    from bot.app import build_app
    from bot.server import listener_config, raise_open_file_limit, serve_listeners
    from bot.web import build_api_web, build_web
    from bot.workers import inherited

    settings = _settings("serve")
    if api_listen is not None:
        settings.api_listen = api_listen
    if workers > 1:
        return serve_workers(settings, host, port, workers)
    deps = _prepare(settings, migrate=sockets is None)  # a worker's was done for it
    bolt = build_app(deps)
    web = build_web(deps, bolt, with_api=settings.api_listen is None, freeze_after_start=True)
    configs = [listener_config(web, host, port, settings)]
    if settings.api_listen is not None:
        api_host, api_port = settings.api_listen
        configs.append(listener_config(build_api_web(deps, bolt), api_host, api_port, settings))
    raise_open_file_limit(len(configs) * settings.http_max_connections + 256)
    listening = inherited(sockets) if sockets else None
    with asyncio.Runner(loop_factory=configs[0].get_loop_factory()) as runner:
        runner.run(serve_listeners(web, configs, listening))
    return 0


def serve_workers(settings: Settings, host: str, port: int, count: int) -> int:
    """``tokenbot serve --workers N``: migrate once, bind the listeners, and run ``count``
    workers on them until told to stop (bot.workers)."""
    from bot.workers import Supervisor, bind

    if sa.make_url(settings.database_url).get_backend_name() == "sqlite":
        raise SettingsError(
            "--workers needs PostgreSQL: SQLite allows one writer process at a time; "
            "leave out --workers, or set TOKENBOT_DATABASE_URL to a postgresql:// URL"
        )
    db = Database(settings.database_url)
    try:
        upgrade(db)
    finally:
        db.dispose()
    listeners = [(host, port)] + ([settings.api_listen] if settings.api_listen else [])
    sockets = [bind(*where) for where in listeners]
    argv = ["--host", host, "--port", str(port)]
    if settings.api_listen is not None:
        api_host, api_port = settings.api_listen
        argv += [
            "--api-listen",
            f"[{api_host}]:{api_port}" if ":" in api_host else f"{api_host}:{api_port}",
        ]
    return Supervisor(count, argv, sockets).run()


def socket_mode() -> None:
    """``tokenbot socket``: Socket Mode until Ctrl-C or SIGTERM."""
    settings = _settings("socket")
    deps = _prepare(settings)
    assert settings.slack_app_token is not None
    with contextlib.suppress(asyncio.CancelledError):  # SIGTERM: stopped as asked
        asyncio.run(serve_socket_mode(deps, settings.slack_app_token.get_secret_value()))


async def serve_socket_mode(deps: Deps, app_token: str) -> None:
    """Socket Mode until cancelled (Ctrl-C, or SIGTERM, which cancels it too). Then, as in
    HTTP mode, no new events are taken and the work in flight ends (token deliveries
    finish, see :func:`bot.deps.wind_down`) before the Slack session closes and the
    database is disposed."""
    from slack_bolt.adapter.socket_mode.websockets import AsyncSocketModeHandler

    from bot.app import build_app, shared_session
    from bot.jobs import build_scheduler

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        app = build_app(deps)
        async with shared_session(app):
            jobs = build_scheduler(deps, app.client)
            jobs.start()
            listener = InvalidationListener(deps.db)
            await listener.start()
            handler = AsyncSocketModeHandler(app, app_token)
            try:
                await handler.start_async()  # type: ignore[no-untyped-call]
            finally:
                # Slack sends new events to the app's other connections meanwhile.
                await handler.close_async()  # type: ignore[no-untyped-call]
                jobs.pause()  # no sweep starts while the deliveries in flight finish
                await wind_down(deps)
                jobs.shutdown(wait=False)
                await listener.stop()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await deps.call(deps.db.dispose)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        setup_logging(
            "WARNING" if args.command in ("demo", "sweep", "audit") else "INFO", _log_format(args)
        )
        if args.command == "serve":
            return serve(args.host, args.port, args.api_listen, args.workers, args.sockets)
        elif args.command == "socket":
            socket_mode()
        elif args.command == "sweep":
            sweep_once(args.now, args.dry_run)
        elif args.command == "demo":
            from bot.demo import run_demo

            return asyncio.run(run_demo())
        elif args.command == "audit":
            return audit_command(args)
        elif args.command == "db":
            upgrade(Database(load_settings().database_url))
            print("database is at the newest schema")
    except SettingsError as error:
        print(f"tokenbot: {error}", file=sys.stderr)
        return 2
    except SchemaError as error:  # before anything was served or changed
        print(f"tokenbot: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
