"""``/token`` and its subcommands (SPEC §4), one listener each.

Answers come in the acknowledgement itself (an ephemeral message): one round trip, and no
second request to Slack. Only the subcommands that open a modal go on after it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import screens
from bot.approvers import Standing
from bot.blocks import tokens as token_blocks
from bot.config import Settings
from bot.deps import Deps
from bot.guards import require_admin
from bot.listeners import webhooks
from bot.listeners.payload import (
    AUDIT_DEFAULT,
    AUDIT_MAX,
    audit_size,
    mentioned_member,
    unescaped,
)
from bot.listeners.replies import Listener, Replies, Unavailable, answering
from storage import tokens
from storage.tokens import TokenInfo

Matcher = Callable[..., Awaitable[bool]]


def words(command: dict[str, Any]) -> tuple[str, str]:
    """The subcommand (lower case) and the rest of what was typed after it, as typed."""
    sub, _, rest = (command.get("text") or "").strip().partition(" ")
    return sub.lower(), unescaped(rest.strip())


def subcommand(name: str, rest: str | None = None) -> Matcher:
    """A matcher for ``/token <name>``; with ``rest``, for exactly ``/token <name> <rest>``."""

    async def matches(command: dict[str, Any]) -> bool:
        sub, after = words(command)
        return sub == name and (rest is None or after.lower() == rest)

    return matches


def subcommand_with_argument(name: str) -> Matcher:
    """A matcher for ``/token <name> <something>``."""

    async def matches(command: dict[str, Any]) -> bool:
        sub, after = words(command)
        return sub == name and bool(after)

    return matches


# Every subcommand there is (``help`` included), for naming requests in the metrics.
SUBCOMMANDS = frozenset(
    {"help", "new", "list", "revoke", "rotate", "report", "audit", "webhooks", "requests"}
    | {"service", "settings"}
)


def register(app: AsyncApp, settings: Settings) -> None:
    name = settings.command
    subcommands: list[tuple[Matcher, list[Any], Listener]] = [
        (subcommand("new"), [], handle_new),
        (
            subcommand_with_argument("list"),
            [require_admin("see another member's tokens")],
            handle_member_list,
        ),
        (subcommand("list"), [], handle_list),
        (subcommand("revoke"), [Replies(after=f"See `{name} list`.")], handle_revoke),
        (subcommand("rotate"), [Replies(after=f"See `{name} list`.")], handle_rotate),
        (subcommand("report"), [require_admin("see the report")], handle_report),
        (subcommand("audit"), [require_admin("see the audit log")], handle_audit),
        (subcommand("webhooks"), [webhooks.ADMINS_ONLY], handle_webhooks),
        (subcommand("requests"), [], handle_requests),
        (subcommand("service", "list"), [], handle_service_list),
        (subcommand("service", "request"), [], handle_service_request),
        (subcommand("settings"), [require_admin("change the settings")], handle_settings),
    ]
    for matches, middleware, handler in subcommands:
        app.command(name, matchers=[matches], middleware=middleware)(answering(handler))
    app.command(name)(answering(handle_help))  # help, and whatever none of them took


async def _answer(ack: AsyncAck, message: token_blocks.Message) -> None:
    await ack(response_type="ephemeral", **message)


async def handle_help(ack: AsyncAck, command: dict[str, Any]) -> None:
    """``/token`` and ``/token help``; anything else is an unknown subcommand."""
    name, text = command["command"], (command.get("text") or "").strip()
    if words(command)[0] in ("", "help"):
        await _answer(ack, token_blocks.help_message(name))
    else:
        await _answer(ack, token_blocks.unknown_subcommand_message(name, text))


async def handle_new(
    ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str, actor: str
) -> None:
    """Open the Generate modal, with the name typed after ``new``; at the cap, say so
    with the active tokens and their Revoke buttons instead (R9)."""
    full = await screens.cap_reached(deps, org, actor)
    if full is not None:
        await _answer(ack, token_blocks.cap_reached_message(full.cap, full.active))
        return
    await ack()
    name = words(command)[1]
    if not await screens.open_generate_modal(client, command.get("trigger_id"), name, command):
        raise Unavailable(f"{screens.COULD_NOT_OPEN} Run `{command['command']} new` again.")


async def handle_list(ack: AsyncAck, deps: Deps, org: str, actor: str) -> None:
    await _answer(ack, await screens.token_list(deps, org, actor))


async def handle_member_list(ack: AsyncAck, command: dict[str, Any], deps: Deps, org: str) -> None:
    """``/token list @member``, for admins: that member's tokens, to revoke (R16)."""
    member = mentioned_member(words(command)[1])
    if member is None:
        usage = f"Name one member, as a mention: `{command['command']} list @member`."
        await _answer(ack, token_blocks.text_message(usage))
        return
    await _answer(ack, await screens.member_token_list(deps, org, member))


async def handle_audit(ack: AsyncAck, command: dict[str, Any], deps: Deps, org: str) -> None:
    """``/token audit [n]``, for admins: the last n events of the audit log (R27)."""
    size = audit_size(words(command)[1])
    if size is None:
        usage = (
            f"Say how many events to show, from 1 to {AUDIT_MAX}: "
            f"`{command['command']} audit 50` (without a number, {AUDIT_DEFAULT})."
        )
        await _answer(ack, token_blocks.text_message(usage))
        return
    await _answer(ack, await screens.audit_log(deps, org, size))


def asking_to_confirm(verb: str, confirm: Callable[[TokenInfo], token_blocks.Message]) -> Listener:
    """The listener of ``/token <verb> <name>``: it asks the member to confirm acting on
    their token of that name (revoke R16, rotate R18), with the message ``confirm``
    builds; the button it carries does the rest."""

    async def handle(
        ack: AsyncAck, command: dict[str, Any], deps: Deps, org: str, actor: str
    ) -> None:
        name = words(command)[1]
        if not name:
            usage = f"Say which token: `{command['command']} {verb} <name>`."
            await _answer(ack, token_blocks.text_message(usage))
            return
        info = await deps.call(tokens.find_user_token, deps.db, org, actor, name, deps.clock())
        await _answer(ack, confirm(info))

    handle.__name__ = handle.__qualname__ = f"handle_{verb}"
    return handle


handle_revoke = asking_to_confirm("revoke", token_blocks.revoke_confirm_message)
handle_rotate = asking_to_confirm("rotate", token_blocks.rotate_confirm_message)


async def handle_report(ack: AsyncAck, deps: Deps, org: str) -> None:
    await _answer(ack, await screens.report(deps, org))


async def handle_webhooks(ack: AsyncAck, deps: Deps, org: str) -> None:
    await _answer(ack, await screens.webhook_list(deps, org))


async def handle_requests(
    ack: AsyncAck, deps: Deps, org: str, actor: str, standing: Standing
) -> None:
    await _answer(ack, await screens.requests_listing(deps, org, actor, standing))


async def handle_service_list(
    ack: AsyncAck, deps: Deps, org: str, actor: str, standing: Standing
) -> None:
    await _answer(ack, await screens.service_list(deps, org, actor, standing))


async def handle_service_request(
    ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str
) -> None:
    await ack()
    if not await screens.open_request_modal(deps, client, org, command):
        again = f"Run `{command['command']} service request` again."
        raise Unavailable(f"{screens.COULD_NOT_OPEN} {again}")


async def handle_settings(
    ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str
) -> None:
    """The organization's settings, in a modal (admins; the guard asked Slack)."""
    await ack()
    if not await screens.open_settings_modal(deps, client, org, command):
        raise Unavailable(f"{screens.COULD_NOT_OPEN} Run `{command['command']} settings` again.")
