"""The ``tokenbot`` command: serve · socket · demo · db upgrade."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

from bot.config import Mode, Settings, SettingsError, load_settings
from bot.deps import Deps
from bot.logs import setup_logging
from storage.db import Database
from storage.migrate import upgrade


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenbot", description="Hand out and retire API tokens from Slack."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="HTTP mode: Slack events, health check")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 (a server is meant to listen)
    serve.add_argument("--port", type=int, default=3000)
    sub.add_parser("socket", help="Socket Mode (needs SLACK_APP_TOKEN)")
    sub.add_parser("demo", help="run the main flows against a local Slack stand-in")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply database migrations")
    return parser


def _settings(mode: Mode) -> Settings:
    settings = load_settings()
    settings.require(mode)
    return settings


def _prepare(settings: Settings) -> Deps:
    db = Database(settings.database_url)
    upgrade(db)
    return Deps(settings=settings, db=db)


def serve(host: str, port: int) -> None:
    import uvicorn

    from bot.app import build_app
    from bot.web import build_web

    deps = _prepare(_settings("serve"))
    web = build_web(deps, build_app(deps))
    # Everything built so far lives as long as the process: keep it out of the garbage
    # collector's scans, which otherwise show up as pauses in request latency.
    gc.freeze()
    uvicorn.run(web, host=host, port=port, log_config=None, access_log=False)


def socket_mode() -> None:
    from slack_bolt.adapter.socket_mode.websockets import AsyncSocketModeHandler

    from bot.app import build_app, shared_session

    settings = _settings("socket")
    deps = _prepare(settings)
    assert settings.slack_app_token is not None

    async def run() -> None:
        app = build_app(deps)
        async with shared_session(app):
            handler = AsyncSocketModeHandler(app, settings.slack_app_token.get_secret_value())
            await handler.start_async()

    asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("WARNING" if args.command == "demo" else "INFO")
    try:
        if args.command == "serve":
            serve(args.host, args.port)
        elif args.command == "socket":
            socket_mode()
        elif args.command == "demo":
            from bot.demo import run_demo

            return asyncio.run(run_demo())
        elif args.command == "db":
            upgrade(Database(load_settings().database_url))
            print("database is at the newest schema")
    except SettingsError as error:
        print(f"tokenbot: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
