"""The one error path. A refusal (any ``TokenbotError``) raised by a guard or a listener
becomes one plain sentence for the person, where they acted (:func:`refuse`):

- a modal's submission: the inline error, in the acknowledgement itself (Slack takes
  errors nowhere else), on the field the error names (InvalidField; InvalidFields names
  several, each with its sentence) or else the modal's main input, declared where the
  listener is registered;
- a slash command: an ephemeral answer, in the acknowledgement when it was not sent yet;
- a button: acknowledged first, then the screen it was on (a list, a reminder) again
  with the sentence on top, where the registration says how to redraw it; else an
  ephemeral message through the click's response_url (or in the channel, where the
  registration says so); for a click on the Home tab, the Home tab again with the
  sentence on top.

It is reached two ways, both set up at registration: a guard's refusal comes before the
listener, through Bolt's error handler (:func:`answer_error`); a listener's, through the
wrapper the listener is registered in (:func:`answering`), which sees whether the
acknowledgement is sent yet. Anything else is an operator's matter: logged with its type
and where it came from, never the payload (it may carry a secret)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncBoltContext, AsyncBoltRequest
from slack_bolt.kwargs_injection.async_utils import build_async_required_kwargs
from slack_bolt.util.utils import get_arg_names_of_callable
from slack_sdk.web.async_client import AsyncWebClient

from bot import screens
from bot.blocks.text import inline
from bot.blocks.tokens import text_message
from bot.deps import Deps
from bot.listeners.payload import channel_of, clicked_on_home, kind_of
from bot.sender import deliver_ephemeral, failure_reason
from storage.errors import InvalidField, InvalidFields, TokenbotError

log = logging.getLogger(__name__)
AGAIN = "That did not work. Try again."
Listener = Callable[..., Awaitable[None]]
# (context, sentence) -> the message to show in place of the one clicked.
Redraw = Callable[[AsyncBoltContext, str], Awaitable[dict[str, Any]]]


class Unavailable(TokenbotError):
    """Slack would not do what the person asked just now (open a modal, say); the
    sentence says what to try."""


@dataclass(frozen=True)
class Replies:
    """Where a listener's refusals go, declared where it is registered, before its
    guards: ``middleware=[Replies(field=REASON_BLOCK), require_approver]``.

    ``field``: a modal's input that takes errors naming no field of their own (by
    default, the modal's first input). ``in_channel``: a button's refusals go in the
    channel (chat.postEphemeral) rather than through its response_url. ``after``: the
    app's own words after a command's refusal, saying what to do next. ``redraw``: for
    a button on a screen (a list, a reminder), that screen as it is now with the
    sentence on top, in place of the message clicked."""

    field: str | None = None
    in_channel: bool = False
    after: str = ""
    redraw: Redraw | None = None

    async def __call__(
        self, context: AsyncBoltContext, next: Callable[[], Awaitable[None]]
    ) -> None:
        """As listener middleware: put the declaration where the error path reads it."""
        context["replies"] = self
        await next()


@dataclass
class Refusal:
    """How to say a refusal: what the acknowledgement carries (when it is still to be
    sent), and what is told besides, if anything."""

    ack: dict[str, Any] | None
    tell: Coroutine[Any, Any, Any] | None


async def service_list_again(context: AsyncBoltContext, notice: str) -> dict[str, Any]:
    """A :data:`Redraw`: the service users' list as the clicker may see it now."""
    deps, org, actor = context["deps"], context["org"], context["actor"]
    return await screens.service_list(deps, org, actor, context["standing"], notice)


def refuse(
    error: TokenbotError,
    body: dict[str, Any],
    context: AsyncBoltContext,
    client: AsyncWebClient,
    *,
    acked: bool,
) -> Refusal:
    """The one place that decides how a refusal reaches the person. ``acked``: whether
    the acknowledgement is sent already."""
    log.info("refused a %s: %s", kind_of(body), type(error).__name__)
    replies: Replies = context.get("replies") or Replies()
    sentence = str(error) or AGAIN
    # A domain sentence may quote what someone typed; the app's own words need no care.
    words = sentence if isinstance(error, Unavailable) else inline(sentence)
    if body.get("type") == "view_submission":
        field = error.field if isinstance(error, InvalidField) else None
        block = field or replies.field or _first_input(body.get("view") or {})
        if block is not None and not acked:
            errors = error.errors if isinstance(error, InvalidFields) else {block: sentence}
            return Refusal({"response_action": "errors", "errors": errors}, None)
        # No input to show it on: the modal closes, and the sentence goes to the DM.
        return Refusal(None, _tell(context, client, body, words, in_channel=True))
    if body.get("command"):
        message = {"response_type": "ephemeral", **text_message(f"{words} {replies.after}".strip())}
        if acked:
            return Refusal(None, context["respond"](**message))
        return Refusal(message, None)
    if replies.redraw is not None and not clicked_on_home(body):
        return Refusal(None, _redraw(context, replies.redraw, words))
    return Refusal(None, _tell(context, client, body, words, in_channel=replies.in_channel))


def answering(handler: Listener) -> Listener:
    """``handler`` as a listener whose refusals go through :func:`refuse`. Bolt passes
    it the request; it passes ``handler`` what ``handler`` asks for, as Bolt would."""
    names = get_arg_names_of_callable(handler)

    async def listener(req: AsyncBoltRequest, resp: BoltResponse, logger: logging.Logger) -> None:
        kwargs = build_async_required_kwargs(
            logger=logger,
            required_arg_names=list(names),
            request=req,
            response=resp,
            this_func=handler,
        )
        try:
            await handler(**kwargs)
        except TokenbotError as error:
            ack, client = req.context.ack, req.context.client
            assert client is not None  # Bolt sets it before any listener runs
            refusal = refuse(error, req.body, req.context, client, acked=ack.response is not None)
            if ack.response is None:
                await ack(refusal.ack or "")
            if refusal.tell is not None:
                await refusal.tell

    # Named as the handler, for Bolt's log lines; not marked as wrapping it, else Bolt
    # would pass this what the handler asks for.
    listener.__module__, listener.__name__ = handler.__module__, handler.__name__
    listener.__qualname__, listener.__doc__ = handler.__qualname__, handler.__doc__
    return listener


async def answer_error(
    error: Exception,
    body: dict[str, Any],
    context: AsyncBoltContext,
    client: AsyncWebClient,
    response: BoltResponse | None,
) -> BoltResponse | None:
    """Bolt's error handler. A guard's refusal comes here before any listener ran (the
    acknowledgement, ``response``, is still to be sent): what this returns becomes it.
    Anything else is logged."""
    deps: Deps | None = context.get("deps")
    if isinstance(error, TokenbotError) and deps is not None and response is not None:
        refusal = refuse(error, body, context, client, acked=False)
        if refusal.tell is not None:
            # Acknowledged first, then told: Slack waits 3 seconds for the acknowledgement.
            deps.background.start(refusal.tell, finish=False)
        return BoltResponse(status=200, body=refusal.ack or "")
    log.error("handling %s failed: %s", kind_of(body), type(error).__name__, exc_info=error)
    return None


async def _tell(
    context: AsyncBoltContext,
    client: AsyncWebClient,
    body: dict[str, Any],
    words: str,
    *,
    in_channel: bool,
) -> None:
    """Show ``words`` to the person who clicked or submitted, only them: on the Home
    tab if they clicked there; else through the click's response_url (unless
    ``in_channel``), in the channel, or in their DM with the app."""
    deps: Deps = context["deps"]
    actor = str(context["actor"])
    try:
        if clicked_on_home(body):
            await screens.publish_home(deps, client, context["org"], actor, words)
            return
        await deliver_ephemeral(
            client,
            user_id=actor,
            message={"text": words},
            response_url=None if in_channel else body.get("response_url"),
            channel_id=channel_of(body),
        )
    except Exception as error:  # logged here: a refusal told in the background has no caller
        log.warning("refusal not shown to %s (%s)", actor, failure_reason(error))


async def _redraw(context: AsyncBoltContext, redraw: Redraw, words: str) -> None:
    """The clicked message replaced by its screen as it is now, ``words`` on top."""
    try:
        await context["respond"](replace_original=True, **await redraw(context, words))
    except Exception as error:  # logged here: a refusal told in the background has no caller
        log.warning("refusal not shown to %s (%s)", context["actor"], failure_reason(error))


def _first_input(view: dict[str, Any]) -> str | None:
    """The block id of a modal's first input: its main one."""
    for block in view.get("blocks") or []:
        if isinstance(block, dict) and block.get("type") == "input" and block.get("block_id"):
            return str(block["block_id"])
    return None
