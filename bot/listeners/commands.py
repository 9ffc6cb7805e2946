"""``/token`` and its subcommands (SPEC §4)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import tokens as token_blocks
from bot.config import Settings
from bot.deps import Deps, org_of
from bot.listeners.views import open_generate_modal
from storage import tokens
from storage.errors import TokenNotFound


def register(app: AsyncApp, settings: Settings) -> None:
    app.command(settings.command)(handle_token_command)


async def handle_token_command(
    ack: AsyncAck,
    command: dict[str, Any],
    respond: AsyncRespond,
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    await ack()
    deps: Deps = context["deps"]
    text = (command.get("text") or "").strip()
    sub, _, rest = text.partition(" ")
    sub = sub.lower()
    name = command["command"]
    if sub in ("", "help"):
        await respond(**token_blocks.help_message(name))
    elif sub == "new":
        await _new(deps, command, rest.strip(), respond, client, org_of(context))
    elif sub == "list":
        await _list(deps, command["user_id"], respond, org_of(context))
    elif sub == "revoke":
        await _revoke(deps, command["user_id"], rest.strip(), name, respond, org_of(context))
    else:
        await respond(**token_blocks.unknown_subcommand_message(name, text))


async def _new(
    deps: Deps,
    command: dict[str, Any],
    initial_name: str,
    respond: AsyncRespond,
    client: AsyncWebClient,
    org: str,
) -> None:
    # Where to show the token once it exists: the modal carries it to the submission.
    where = {"response_url": command.get("response_url"), "channel_id": command.get("channel_id")}
    full = await open_generate_modal(
        deps, client, org, command["user_id"], command["trigger_id"], initial_name, where
    )
    if full is not None:
        await respond(**token_blocks.cap_reached_message(full.cap, full.active))


async def _list(deps: Deps, user_id: str, respond: AsyncRespond, org: str) -> None:
    listing = await deps.call(tokens.list_user_tokens, deps.db, org, user_id, deps.clock())
    await respond(**token_blocks.token_list_message(listing.tokens, listing.cap))


async def _revoke(
    deps: Deps, user_id: str, raw_name: str, command: str, respond: AsyncRespond, org: str
) -> None:
    if not raw_name:
        await respond(**token_blocks.text_message(f"Say which token: `{command} revoke <name>`."))
        return
    try:
        info = await deps.call(
            tokens.find_user_token, deps.db, org, user_id, raw_name, deps.clock()
        )
    except TokenNotFound as missing:
        await respond(**token_blocks.text_message(f"{missing} See `{command} list`."))
        return
    await respond(**token_blocks.revoke_confirm_message(info))
