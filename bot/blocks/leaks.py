"""Messages about a token revoked for being pasted in a Slack message (R19). None of
them ever shows the token itself: only its name and hint."""

from __future__ import annotations

import re

from bot.blocks.text import inline
from bot.blocks.tokens import Message, _context, _name, _section, _whose
from storage.tokens import TokenInfo

# What may go into the app's own link and mention syntax: a permalink is Slack's, and
# ids are Slack's, but neither may break out of the ``<…>`` they are put in.
_PERMALINK = re.compile(r"https://[^\s<>|]+")
_CHANNEL = re.compile(r"[CG][A-Z0-9]{2,31}")
_USER = re.compile(r"[UW][A-Z0-9]{2,31}")


def _where(channel: str, permalink: str | None) -> str:
    """The message, linked when Slack gave its permalink, and its conversation."""
    message = (
        f"<{permalink}|a message>" if permalink and _PERMALINK.fullmatch(permalink) else "a message"
    )
    if _CHANNEL.fullmatch(channel):
        return f"{message} in <#{channel}>"
    if channel.startswith("D"):
        return f"{message} in a direct message with the app"
    return f"{message} in a conversation ({inline(channel, 40)})"


def _by(poster: str | None) -> str:
    return f" by <@{poster}>" if poster and _USER.fullmatch(poster) else ""


def leaked_message(
    info: TokenInfo,
    command: str,
    *,
    channel: str,
    permalink: str | None,
    poster: str | None,
    service_user: str | None = None,
) -> Message:
    """The DM to a token's owners when it was revoked for being pasted in a message:
    which token, where (linked), and how to get a new one."""
    if service_user is None:
        next_step = f"generate a new token with `{command} new`"
    else:
        next_step = f"ask for a new token with `{command} service request` ({inline(service_user)})"
    text = (
        f":rotating_light: {_whose(info, service_user)} was revoked: it was pasted in "
        f"{_where(channel, permalink)}{_by(poster)}, where others could read it. "
        "It no longer works."
    )
    return {
        "text": f"The token “{_name(info)}” was revoked: it was pasted in a message.",
        "blocks": [
            _section(text),
            _section(f"If it is still needed, {next_step} and put it where the old one was."),
            _context("Ask for that message to be deleted: it still shows the token."),
        ],
    }


HINTS_SHOWN = 10  # a message can hold many tokens; the note names the first ones


def leak_noticed_message(revoked: list[TokenInfo], *, in_app_dm: bool = False) -> Message:
    """What the person who pasted tokens is told, where they pasted them: the tokens
    (by hint) are revoked, and the message should go."""
    hints = ", ".join(f"`{t.hint}`" for t in revoked[:HINTS_SHOWN])
    if len(revoked) > HINTS_SHOWN:
        hints += f" and {len(revoked) - HINTS_SHOWN} more"
    where = "your message above" if in_app_dm else "your message"
    if len(revoked) == 1:
        text = (
            f"{where.capitalize()} shows the token {hints}. It has been revoked, so that "
            "nobody who reads it can use it, and its owner has been told how to get a new one."
        )
    else:
        text = (
            f"{where.capitalize()} shows the tokens {hints}. They have been revoked, so "
            "that nobody who reads them can use them, and their owners have been told how "
            "to get new ones."
        )
    return {
        "text": f"A token you pasted was revoked: please delete {where}.",
        "blocks": [_section(f":rotating_light: {text} Please delete {where}.")],
    }
