"""Leak response (R19): messages in the conversations the app is in (public and private
channels it was added to, group DMs, its DMs) are read for tokens. A token of the
organization found pasted, in a new message or an edited one, is revoked at once; its
owners get a DM through the outbox, and whoever pasted it a note where they did."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks.leaks import leak_noticed_message
from bot.deps import Deps
from bot.listeners.payload import posted_message
from bot.notify import deliver
from bot.sender import note_to
from storage import leaks, tokenformat
from storage.models import NoticeKind

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.event("message")(handle_message)


async def handle_message(
    body: dict[str, Any], client: AsyncWebClient, deps: Deps, org: str
) -> None:
    posted = posted_message(body)
    if posted is None:
        return  # a bot's message (the app's own included), a deletion, a join
    # Offline: a look-alike whose checksum does not match never reaches the database.
    secrets = tokenformat.find_tokens(posted.text)
    if not secrets:
        return
    place = leaks.Place(channel=posted.channel, ts=posted.ts, poster=posted.poster)
    revoked = await deps.call(leaks.revoke_leaked, deps.db, org, secrets, place, deps.clock())
    log.info(
        "message %s in %s shows %d token(s); %d revoked now",
        posted.ts,
        posted.channel,
        len(secrets),
        len(revoked),
    )
    if not revoked:
        return  # none of the organization's, or revoked already: nothing to say
    if posted.poster is not None:
        note = leak_noticed_message(revoked, in_app_dm=posted.in_app_dm)
        await note_to(
            client,
            user_id=posted.poster,
            channel_id=posted.channel,
            message=note,
            app_dm=posted.in_app_dm,
        )
    await deliver(deps, client, [NoticeKind.LEAKED])
