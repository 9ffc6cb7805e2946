"""What admins do on their own screens: revoke on a member's token list (R16), and page
through the audit log (R27). Every button here is for admins only, guarded at the click."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot import screens
from bot.blocks import tokens as token_blocks
from bot.blocks.audit import AUDIT_NEWER_ACTION, AUDIT_OLDER_ACTION
from bot.deps import Deps
from bot.guards import OwnerOrAdmin, owner_or_admin, require_admin
from bot.listeners.payload import audit_position, member_button, member_button_value
from bot.listeners.replies import Replies, answering
from bot.notify import deliver_soon
from bot.sender import Responder
from storage import tokens
from storage.models import NoticeKind

Next = Callable[[], Awaitable[None]]


def register(app: AsyncApp) -> None:
    # A refusal shows the member's list again, the sentence on top, to an admin only.
    app.action(
        token_blocks.MEMBER_REVOKE_ACTION,
        middleware=[
            Replies(redraw=_member_list),
            _listed_member,
            require_admin("revoke another member's tokens"),
            owner_or_admin,
        ],
    )(answering(handle_member_revoke))
    for action_id, handler in (
        (AUDIT_OLDER_ACTION, handle_audit_older),
        (AUDIT_NEWER_ACTION, handle_audit_newer),
    ):
        app.action(action_id, middleware=[Replies(), require_admin("see the audit log")])(
            answering(handler)
        )


async def _listed_member(action: dict[str, Any], context: AsyncBoltContext, next: Next) -> None:
    """Whose list the button was on, for showing it again, refusals included."""
    context["listed"] = member_button_value(action)
    await next()


async def _member_list(context: AsyncBoltContext, notice: str) -> dict[str, Any]:
    """The member's list as it is now, the sentence on top; only the sentence for anyone
    Slack has not said, in this click, is an admin (the button's value is the clicker's
    to forge)."""
    listed = context.get("listed")
    if listed is None or not context["standing"].said_admin():
        return token_blocks.text_message(notice)
    return await screens.member_token_list(context["deps"], context["org"], listed[1], notice)


async def handle_member_revoke(
    ack: AsyncAck,
    action: dict[str, Any],
    respond: Responder,
    client: AsyncWebClient,
    deps: Deps,
    org: str,
    as_owner_or_admin: OwnerOrAdmin,
) -> None:
    """Revoke on an admin's list of a member's tokens: answered with that member's tokens
    again; the member is told by DM who revoked which token (through the outbox)."""
    await ack()
    token_id, member = member_button(action)
    revoked = await as_owner_or_admin(tokens.revoke_token, token_id)
    deliver_soon(deps, client, [NoticeKind.REVOKED])
    notice = token_blocks.revoked_notice(revoked)
    await respond(
        replace_original=True, **await screens.member_token_list(deps, org, member, notice)
    )
    screens.refresh_homes(deps, client, org, [member])  # their Home tab lists it no more


async def handle_audit_older(
    ack: AsyncAck, action: dict[str, Any], respond: Responder, deps: Deps, org: str
) -> None:
    """Older: the page of events just before the oldest shown."""
    await ack()
    size, before = audit_position(action)
    await respond(replace_original=True, **await screens.audit_log(deps, org, size, before=before))


async def handle_audit_newer(
    ack: AsyncAck, action: dict[str, Any], respond: Responder, deps: Deps, org: str
) -> None:
    """Newer: the page of events just after the newest shown."""
    await ack()
    size, after = audit_position(action)
    await respond(replace_original=True, **await screens.audit_log(deps, org, size, after=after))
