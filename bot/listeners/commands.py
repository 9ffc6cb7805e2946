"""``/token`` and its subcommands (SPEC §4)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import tokens as token_blocks
from bot.config import Settings
from bot.deps import Deps, org_of
from bot.listeners import service
from bot.listeners.views import COULD_NOT_OPEN, cap_reached, open_generate_modal
from bot.sender import Responder
from storage import tokens
from storage.errors import TokenNotFound


def register(app: AsyncApp, settings: Settings) -> None:
    app.command(settings.command)(handle_token_command)


async def handle_token_command(
    ack: AsyncAck,
    command: dict[str, Any],
    client: AsyncWebClient,
    respond: Responder,
    context: AsyncBoltContext,
) -> None:
    """Answers come in the acknowledgement itself (an ephemeral message): one round trip,
    and no second request to Slack. Only ``new`` goes on, to open the modal."""
    deps: Deps = context["deps"]
    org, user_id, name = org_of(context), command["user_id"], command["command"]
    text = (command.get("text") or "").strip()
    sub, _, rest = text.partition(" ")
    sub, rest = sub.lower(), rest.strip()
    if sub in ("", "help"):
        await _answer(ack, token_blocks.help_message(name))
    elif sub == "new":
        full = await cap_reached(deps, org, user_id)
        if full is not None:
            await _answer(ack, token_blocks.cap_reached_message(full.cap, full.active))
            return
        await ack()
        # Where to show the token once it exists: the modal carries it to the submission.
        where = {
            "response_url": command.get("response_url"),
            "channel_id": command.get("channel_id"),
        }
        if not await open_generate_modal(client, command.get("trigger_id"), rest, where):
            await respond(**token_blocks.text_message(f"{COULD_NOT_OPEN} Run `{name} new` again."))
    elif sub == "list":
        listing = await deps.call(tokens.list_user_tokens, deps.db, org, user_id, deps.clock())
        await _answer(ack, token_blocks.token_list_message(listing.tokens, listing.cap))
    elif sub == "report":
        await _answer(ack, await service.report(deps, client, org, user_id))
    elif sub == "requests":
        await _answer(ack, await service.requests_listing(deps, client, org, user_id))
    elif sub == "service" and rest.lower() == "list":
        await _answer(ack, await service.service_list(deps, client, org, user_id))
    elif sub == "service" and rest.lower() == "request":
        await ack()
        if not await service.open_request_modal(deps, client, org, command):
            await respond(
                **token_blocks.text_message(f"{COULD_NOT_OPEN} Run `{name} service request` again.")
            )
    elif sub == "revoke":
        await _answer(ack, await _revoke_confirmation(deps, org, user_id, rest, name))
    else:
        await _answer(ack, token_blocks.unknown_subcommand_message(name, text))


async def _answer(ack: AsyncAck, message: token_blocks.Message) -> None:
    await ack(response_type="ephemeral", **message)


async def _revoke_confirmation(
    deps: Deps, org: str, user_id: str, raw_name: str, command: str
) -> token_blocks.Message:
    if not raw_name:
        return token_blocks.text_message(f"Say which token: `{command} revoke <name>`.")
    try:
        info = await deps.call(
            tokens.find_user_token, deps.db, org, user_id, raw_name, deps.clock()
        )
    except TokenNotFound as missing:
        return token_blocks.refusal_message(str(missing), f"See `{command} list`.")
    return token_blocks.revoke_confirm_message(info)
