"""The Web API stand-in: answers the methods tokenbot calls and records every call."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

TEAM_ID = "T0TOKENBOT"
BOT_USER_ID = "U0BOT"

# Slack's Block Kit limits, as Slack enforces them: beyond one, the whole message or view
# is refused (``invalid_blocks``). The stand-in refuses the same, so every test that
# sends something through it checks them.
MESSAGE_BLOCKS_MAX, VIEW_BLOCKS_MAX = 50, 100
_TEXT_MAX = {"section": 3000, "header": 150, "context": 3000}
_FIELDS_MAX, _FIELD_TEXT_MAX, _CONTEXT_ELEMENTS_MAX, _ACTIONS_ELEMENTS_MAX = 10, 2000, 10, 25
_BUTTON_TEXT_MAX, _BUTTON_VALUE_MAX = 75, 2000
_CONFIRM_MAX = {"title": 100, "text": 300, "confirm": 30, "deny": 30}
_VIEW_TEXT_MAX = {"title": 24, "submit": 24, "close": 24}
_LABEL_MAX, _PRIVATE_METADATA_MAX = 2000, 3000
# Options an element may offer, and the length of each option's text and value.
_OPTIONS_MAX = {"checkboxes": 10, "radio_buttons": 10, "static_select": 100}
_OPTIONS_MAX["multi_static_select"] = _OPTIONS_MAX["static_select"]
_OPTION_TEXT_MAX, _OPTION_VALUE_MAX = 75, 150


def _too_long(what: str, obj: Any, limit: int) -> list[str]:
    text = obj.get("text", "") if isinstance(obj, dict) else obj
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        size = len(text) if isinstance(text, str) else type(text).__name__
        return [f"{what}: {size} characters (1 to {limit})"]
    return []


def _element_problems(where: str, element: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if element.get("type") == "button":
        problems += _too_long(f"{where} button text", element.get("text"), _BUTTON_TEXT_MAX)
        if len(str(element.get("value", ""))) > _BUTTON_VALUE_MAX:
            problems.append(f"{where} button value over {_BUTTON_VALUE_MAX} characters")
        for key, limit in _CONFIRM_MAX.items() if "confirm" in element else ():
            problems += _too_long(f"{where} confirm {key}", element["confirm"].get(key), limit)
    if (most := _OPTIONS_MAX.get(str(element.get("type")))) is not None:
        options = element.get("options") or []
        if not 1 <= len(options) <= most:
            problems.append(f"{where} {element['type']}: {len(options)} options (1 to {most})")
        for option in options:
            problems += _too_long(f"{where} option text", option.get("text"), _OPTION_TEXT_MAX)
            problems += _too_long(f"{where} option value", option.get("value"), _OPTION_VALUE_MAX)
    return problems


def block_problems(blocks: list[dict[str, Any]], max_blocks: int) -> list[str]:
    """What Slack would refuse in ``blocks`` (a message's, or a view's with
    ``VIEW_BLOCKS_MAX``); empty when Slack would take them."""
    problems = [f"{len(blocks)} blocks (at most {max_blocks})"] if len(blocks) > max_blocks else []
    for n, block in enumerate(blocks):
        kind, where = block.get("type"), f"block {n} ({block.get('type')})"
        if kind in ("section", "header") and ("text" in block or kind == "header"):
            problems += _too_long(f"{where} text", block.get("text"), _TEXT_MAX[kind])
        if kind == "section":
            fields = block.get("fields") or []
            if len(fields) > _FIELDS_MAX:
                problems.append(f"{where}: {len(fields)} fields (at most {_FIELDS_MAX})")
            for field_ in fields:
                problems += _too_long(f"{where} field", field_, _FIELD_TEXT_MAX)
            if "accessory" in block:
                problems += _element_problems(where, block["accessory"])
        elif kind == "context":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= _CONTEXT_ELEMENTS_MAX:
                problems.append(f"{where}: {len(elements)} elements")
            for element in elements:
                problems += _too_long(f"{where} element", element, _TEXT_MAX["context"])
        elif kind == "actions":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= _ACTIONS_ELEMENTS_MAX:
                problems.append(f"{where}: {len(elements)} elements")
            for element in elements:
                problems += _element_problems(where, element)
        elif kind == "input":
            problems += _too_long(f"{where} label", block.get("label"), _LABEL_MAX)
            problems += _element_problems(where, block.get("element") or {})
            if "hint" in block:
                problems += _too_long(f"{where} hint", block["hint"], _LABEL_MAX)
    return problems


def view_problems(view: dict[str, Any]) -> list[str]:
    """What Slack would refuse in a modal or Home tab view."""
    problems = block_problems(view.get("blocks") or [], VIEW_BLOCKS_MAX)
    for key, limit in _VIEW_TEXT_MAX.items():
        if key in view:
            problems += _too_long(f"view {key}", view[key], limit)
    if len(view.get("private_metadata") or "") > _PRIVATE_METADATA_MAX:
        problems.append(f"private_metadata over {_PRIVATE_METADATA_MAX} characters")
    return problems


def message_problems(args: dict[str, Any]) -> list[str]:
    """What Slack would refuse in a message (chat.* arguments or a response_url body)."""
    blocks = args.get("blocks") or []
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    return block_problems(list(blocks), MESSAGE_BLOCKS_MAX)


@dataclass
class Call:
    """One request the stand-in received: a Web API method or a ``response_url`` post."""

    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    result: dict[str, Any] = field(default_factory=dict)  # what the stand-in answered, once it has
    token: str | None = None  # the bearer token the call came with

    @property
    def blocks(self) -> list[dict[str, Any]]:
        blocks = self.args.get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else list(blocks)

    @property
    def view(self) -> dict[str, Any]:
        view = self.args.get("view") or {}
        return json.loads(view) if isinstance(view, str) else dict(view)

    def text_content(self) -> str:
        """All the text a person could read in this call, for searching."""
        return json.dumps(self.args, ensure_ascii=False)


@dataclass
class Workspace:
    """An installation the stand-in grants through OAuth (``oauth.v2.access``)."""

    team_id: str
    enterprise_id: str | None = None
    org_wide: bool = False  # an org-wide (Enterprise Grid) install
    installer: str = "U0INSTALLER"
    # Slack's token rotation: the first bot token expires after ``expires_in`` seconds,
    # and comes with a refresh token (the tokens it gets live 12 hours).
    rotation: bool = False
    expires_in: int = 12 * 3600

    @property
    def bot_id(self) -> str:
        return "B" + (self.enterprise_id if self.org_wide and self.enterprise_id else self.team_id)


@dataclass
class Failure:
    status: int = 200
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SlackStandin:
    """Answers the Web API on loopback. ``calls`` holds what arrived, oldest first.

    Make a method fail with :meth:`fail_next`; add people with :meth:`add_user`.
    """

    def __init__(self, team_id: str = TEAM_ID) -> None:
        self.team_id = team_id
        self.calls: list[Call] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, list[str]] = {}  # user group handle -> member ids
        self.response_urls: dict[str, dict[str, Any]] = {}
        # Calls refused for breaking Slack's limits, with why (they are in ``calls`` too).
        self.refused: list[tuple[Call, list[str]]] = []
        self._failures: dict[str, list[Failure]] = {}
        self._holds: dict[str, asyncio.Event] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        # OAuth: the install codes not yet exchanged, the bot tokens and refresh tokens
        # issued, and the tokens no longer good (revoked, or replaced by a refresh).
        self.codes: dict[str, Workspace] = {}
        self.bot_tokens: dict[str, Workspace] = {}
        self.refresh_tokens: dict[str, Workspace] = {}
        self.dead_tokens: set[str] = set()
        self.base_url = ""
        self.app = Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["POST", "GET"]),
                Route("/response/{key}", self._response_url, methods=["POST"]),
            ]
        )

    # -- set-up ---------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        is_admin: bool = False,
        deleted: bool = False,
        is_restricted: bool = False,
    ) -> None:
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": name.title(),
            "deleted": deleted,
            "is_admin": is_admin,
            "is_owner": False,
            "is_restricted": is_restricted,
            "is_bot": False,
            "profile": {"display_name": name, "real_name": name.title()},
        }

    def grant_install(self, code: str, workspace: Workspace) -> None:
        """The install screen Slack shows, accepted: ``code`` comes back to the app's
        redirect URL, and ``oauth.v2.access`` exchanges it (once) for a bot token."""
        self.codes[code] = workspace

    def revoke_tokens(self, workspace: Workspace) -> None:
        """What Slack does when the app is removed: every token of ``workspace`` stops
        working."""
        for token, held in list(self.bot_tokens.items()):
            if held == workspace:
                self.dead_tokens.add(token)

    def fail_next(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` fail with ``error`` or HTTP ``status``.

        ``method`` is a Web API method name, or ``response_url``.
        """
        failure = Failure(status=status, error=error, headers=headers or {})
        self._failures.setdefault(method, []).extend([failure] * times)

    def hold(self, method: str) -> asyncio.Event:
        """Calls of ``method`` (or ``response_url``) are recorded at once but answered
        only once the returned event is set: a Slack that is slow to answer."""
        gate = self._holds[method] = asyncio.Event()
        return gate

    async def _held(self, method: str) -> None:
        gate = self._holds.get(method)
        if gate is not None:
            await gate.wait()

    def new_response_url(self, user_id: str, channel_id: str) -> str:
        key = f"R{next(self._ids):06d}"
        self.response_urls[key] = {"user": user_id, "channel": channel_id, "uses": 0}
        return f"{self.base_url}/response/{key}"

    # -- what arrived ---------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(
        self,
        method: str | tuple[str, ...],
        predicate: Callable[[Call], bool] = lambda c: True,
        *,
        after: int = 0,
        timeout: float = 5.0,
    ) -> Call:
        """The first call of ``method`` (or one of them) at index ``after`` or later that
        matches ``predicate``; TimeoutError when none comes within ``timeout`` seconds."""
        methods = (method,) if isinstance(method, str) else method

        def found() -> Call | None:
            for call in self.calls[after:]:
                if call.method in methods and predicate(call):
                    return call
            return None

        await self._wait(found, timeout, f"no {' or '.join(methods)} call", after)
        result = found()
        assert result is not None
        return result

    async def wait_for_count(
        self,
        method: str,
        count: int,
        predicate: Callable[[Call], bool] = lambda c: True,
        *,
        after: int = 0,
        timeout: float = 5.0,
    ) -> list[Call]:
        """The calls of ``method`` at index ``after`` or later that match ``predicate``,
        once there are ``count`` of them; TimeoutError when they don't come in time."""

        def matching() -> list[Call]:
            return [c for c in self.calls[after:] if c.method == method and predicate(c)]

        await self._wait(
            lambda: len(matching()) >= count,
            timeout,
            f"fewer than {count} {method} calls ({len(matching())} so far)",
            after,
        )
        return matching()

    async def _wait(
        self, done: Callable[[], object], timeout: float, what: str, after: int
    ) -> None:
        """Wait until ``done()`` holds: it is looked at again whenever a call arrives or
        is answered. TimeoutError, saying what was missing, when it does not hold in time."""
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(done), timeout)
        except TimeoutError:
            seen = [c.method for c in self.calls[after:]]
            raise TimeoutError(f"{what} after {timeout} s; the calls since: {seen}") from None

    async def _record(self, method: str, args: dict[str, Any]) -> Call:
        call = Call(method, args)
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        return call

    async def _answer(self, call: Call, result: dict[str, Any]) -> JSONResponse:
        """Answer ``call`` with ``result``; whoever waits for answered calls is told."""
        # Set before anything can suspend: whoever was woken by the call's arrival finds
        # it answered, as Slack's caller does.
        call.result = result
        async with self._changed:
            self._changed.notify_all()
        return JSONResponse(result)

    def _take_failure(self, method: str) -> Failure | None:
        queue = self._failures.get(method)
        return queue.pop(0) if queue else None

    # -- the HTTP side --------------------------------------------------------------------

    @staticmethod
    async def _args(request: Request) -> dict[str, Any]:
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            return dict(json.loads(body or b"{}"))
        args: dict[str, Any] = dict(parse_qsl(body.decode(), keep_blank_values=True))
        args.update(request.query_params)
        return args

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        args = await self._args(request)
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer if scheme.lower() == "bearer" else args.get("token")
        call = await self._record(method, args)
        call.token = token
        await self._held(method)
        failure = self._take_failure(method)
        if failure is not None:
            if failure.status != 200:
                return PlainTextResponse("error", failure.status, headers=failure.headers)
            return JSONResponse({"ok": False, "error": failure.error}, headers=failure.headers)
        if token in self.dead_tokens:
            return await self._answer(call, {"ok": False, "error": "token_revoked"})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return JSONResponse({"ok": False, "error": "unknown_method"})
        if method == "auth.test" and token in self.bot_tokens:
            return await self._answer(call, {"ok": True, **self._installed(token)})
        if problems := self._limits(method, args):
            self.refused.append((call, problems))
            return await self._answer(
                call, {"ok": False, "error": "invalid_blocks", "problems": problems}
            )
        return await self._answer(call, {"ok": True, **handler(args)})

    async def _response_url(self, request: Request) -> Response:
        key = request.path_params["key"]
        args = await self._args(request)
        call = await self._record("response_url", {**args, "_key": key})
        if problems := message_problems(args):
            self.refused.append((call, problems))
            return PlainTextResponse("invalid_blocks", 400)
        await self._held("response_url")
        failure = self._take_failure("response_url")
        if failure is not None:
            return PlainTextResponse(failure.error or "error", failure.status or 404)
        entry = self.response_urls.get(key)
        if entry is None:
            return PlainTextResponse("expired_url", 404)
        entry["uses"] += 1
        return PlainTextResponse("ok")

    @staticmethod
    def _limits(method: str, args: dict[str, Any]) -> list[str]:
        if method.startswith("views."):
            view = args.get("view") or {}
            return view_problems(json.loads(view) if isinstance(view, str) else dict(view))
        if method in ("chat.postMessage", "chat.postEphemeral", "chat.update"):
            return message_problems(args)
        return []

    # -- Web API methods ------------------------------------------------------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "team_id": self.team_id,
            "user_id": BOT_USER_ID,
            "bot_id": "B0BOT",
            "team": "Tokenbot Demo",
            "url": "https://demo.slack.invalid/",
        }

    def _installed(self, token: str) -> dict[str, Any]:
        """``auth.test`` for a bot token issued through OAuth: its installation."""
        workspace = self.bot_tokens[token]
        return {
            "team_id": "" if workspace.org_wide else workspace.team_id,
            "enterprise_id": workspace.enterprise_id,
            "is_enterprise_install": workspace.org_wide,
            "user_id": BOT_USER_ID,
            "bot_id": workspace.bot_id,
            "team": workspace.team_id,
            "url": f"https://{workspace.team_id.lower()}.slack.invalid/",
        }

    def _oauth_v2_access(self, args: dict[str, Any]) -> dict[str, Any]:
        """An install code, or a refresh token (token rotation), for a bot token."""
        refresh = str(args.get("refresh_token"))
        if args.get("grant_type") == "refresh_token":
            workspace = self.refresh_tokens.get(refresh)
            if workspace is None:
                return {"ok": False, "error": "invalid_refresh_token"}
            # A refreshed token lives the usual 12 hours.
            workspace = dataclasses.replace(workspace, expires_in=12 * 3600)
        else:
            workspace = self.codes.pop(str(args.get("code")), None)
            if workspace is None:
                return {"ok": False, "error": "invalid_code"}
        n = next(self._ids)
        token = f"xoxb-{workspace.team_id}-{n:04d}"
        self.bot_tokens[token] = workspace
        enterprise = None
        if workspace.enterprise_id:
            enterprise = {"id": workspace.enterprise_id, "name": "Demo Org"}
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "bot",
            "scope": "commands,chat:write,im:write,users:read,usergroups:read",
            "bot_user_id": BOT_USER_ID,
            "app_id": "A0TOKENBOT",
            "team": None if workspace.org_wide else {"id": workspace.team_id, "name": "Demo"},
            "enterprise": enterprise,
            "is_enterprise_install": workspace.org_wide,
            "authed_user": {"id": workspace.installer},
        }
        if workspace.rotation:
            # One refresh token for the installation, used again for every refresh.
            if refresh not in self.refresh_tokens:
                refresh = f"xoxe-1-{workspace.team_id}-{n:04d}"
                self.refresh_tokens[refresh] = workspace
            answer.update(refresh_token=refresh, expires_in=workspace.expires_in)
        return answer

    def _store_view(self, args: dict[str, Any], view_id: str | None = None) -> dict[str, Any]:
        view = args.get("view") or {}
        view = json.loads(view) if isinstance(view, str) else dict(view)
        view_id = view_id or f"V{next(self._ids):06d}"
        # The fields Slack adds to a view it stores, with Slack's defaults.
        view = {
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "clear_on_close": False,
            "notify_on_close": False,
            **view,
        }
        view.update(
            id=view_id,
            team_id=self.team_id,
            hash=f"{time.time():.6f}",
            state={"values": {}},
            previous_view_id=None,
            root_view_id=view_id,
            app_id="A0TOKENBOT",
            app_installed_team_id=self.team_id,
            bot_id="B0BOT",
        )
        self.views[view_id] = view
        return {"view": view}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._store_view(args)

    def _views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._store_view(args)

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._store_view(args, args.get("view_id"))

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        home = next(
            (k for k, v in self.views.items() if v.get("_user") == args.get("user_id")), None
        )
        result = self._store_view(args, home)
        result["view"]["_user"] = args.get("user_id")
        return result

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"message_ts": f"{time.time():.6f}"}

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "channel": args.get("channel"),
            "ts": f"{time.time():.6f}",
            "message": {"text": args.get("text", "")},
        }

    def _chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("message_ts", ""))
        if not channel or not ts:
            return {"ok": False, "error": "message_not_found"}
        # Slack's shape: the workspace's address, the channel, "p" and the ts without its dot.
        link = f"https://demo.slack.invalid/archives/{channel}/p{ts.replace('.', '')}"
        return {"channel": channel, "permalink": link}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text")}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users", ""))
        return {"channel": {"id": "D" + users.split(",")[0].lstrip("UW")}}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        return {"user": user} if user else {"ok": False, "error": "user_not_found"}

    def _usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        groups = [
            {"id": f"S{n:05d}", "handle": handle, "name": handle.title(), "users": users}
            for n, (handle, users) in enumerate(self.groups.items())
        ]
        return {"usergroups": groups}

    def _users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"members": list(self.users.values()), "response_metadata": {"next_cursor": ""}}

    # -- running --------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SlackStandin]:
        """Serve on a free loopback port for the duration of the block."""
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        try:
            async with serve_in_background(self.app, port):
                try:
                    yield self
                finally:
                    for gate in self._holds.values():  # nothing held keeps it running
                        gate.set()
        finally:
            self._holds.clear()


class _PromptServer(uvicorn.Server):
    """uvicorn's server, stopped as soon as it is asked to.

    uvicorn looks whether it should stop every 0.1 s, and once stopping waits 0.1 s for
    its connections before it looks whether any are left; a test starts and stops two
    servers, so these waits would add up to more than the test itself. This one wakes at
    once when stopped, and looks for connections still open every few milliseconds. What
    stopping does is uvicorn's: no new connections, requests in flight answered, then the
    lifespan's shutdown.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    async def main_loop(self) -> None:
        ticks = 0
        while not await self.on_tick(ticks):
            ticks += 10  # uvicorn refreshes its Date header on every tenth tick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their answer
        state = self.server_state
        # uvicorn tells of no connection's end: looked at, as uvicorn does, only oftener.
        while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


@asynccontextmanager
async def serve_in_background(app: Any, port: int) -> AsyncIterator[None]:
    """Run ``app`` with uvicorn on 127.0.0.1:``port`` until the block ends."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False
    )
    server = _PromptServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.005)
    try:
        yield
    finally:
        server.stop()
        await task
