"""What people typed, made safe to show in a message: escaped, set apart from the app's own
words, and cut to fit Slack's limits.

Every piece of user text (token and service-user names, purposes, justifications,
reasons, the words of a refusal that quote them, webhook URLs) goes through one of
``inline``, ``quoted`` or ``code`` before it reaches a Block Kit builder's mrkdwn.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

SECTION_MAX = 3000  # characters in a section's text (Slack's limit)
CONFIRM_MAX = 300  # characters in a confirm dialog's text
BLOCKS_MAX = 50  # blocks in a message
VIEW_BLOCKS_MAX = 100  # blocks in a modal or the Home tab
ELLIPSIS = "…"

# Look-alikes for mrkdwn's formatting characters: the text reads the same, but a
# requester cannot make words bold, struck, italic or code that the app did not.
_FORMATTING = str.maketrans(
    {
        "*": "\u2217",  # asterisk operator
        "_": "\u02cd",  # modifier letter low macron
        "~": "\u223c",  # tilde operator
        "`": "\u02cb",  # modifier letter grave accent
    }
)
# An escape cut short by clipping (``&``, ``&am``, ``&amp`` without its ``;``).
_CUT_ESCAPE = re.compile(r"&[a-z]{0,3}$")


def escape(text: str) -> str:
    """Slack's escaping of ``&``, ``<`` and ``>``: no mention, link or date can be made."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """``text`` (already escaped) in at most ``limit`` characters, ending in an ellipsis
    when cut; never in the middle of an escape such as ``&amp;``."""
    if len(text) <= limit:
        return text
    return _CUT_ESCAPE.sub("", text[: limit - len(ELLIPSIS)]) + ELLIPSIS


def inline(text: str, limit: int = SECTION_MAX) -> str:
    """User text on one line inside the app's sentence (a name, a refusal): escaped, its
    formatting characters disarmed, line breaks made spaces, at most ``limit`` long."""
    flat = " ".join(str(text).splitlines())
    return clip(escape(flat).translate(_FORMATTING), limit)


def code(text: str, limit: int = SECTION_MAX) -> str:
    """User text that must read exactly as typed (a URL) as inline code: escaped, on one
    line, at most ``limit`` long with its backticks. Slack formats nothing inside code, so
    only a backtick, which would end it, becomes a look-alike."""
    flat = " ".join(str(text).splitlines()).translate({ord("`"): "\u02cb"})
    return "`" + clip(escape(flat), limit - 2) + "`"


def quoted(text: str, limit: int = SECTION_MAX) -> str:
    """User text of several lines (a purpose, a justification, a reason) as a block quote:
    every line starts with ``>``, so no line can pass for one of the app's own, such as
    "Approved by …". Escaped, formatting disarmed, at most ``limit`` long."""
    lines = str(text).splitlines() or [""]
    body = "\n".join("> " + escape(line).translate(_FORMATTING) for line in lines)
    return clip(body, limit)


def fit(
    blocks: list[dict[str, Any]],
    entries: list[list[dict[str, Any]]],
    limit: int,
    more: Callable[[int], dict[str, Any]],
) -> int:
    """Append whole ``entries`` (each a few blocks) to ``blocks`` while they fit in
    ``limit`` blocks; when some do not, end with the block ``more(left_out)`` ("… and N
    more"). Return how many entries were shown."""
    shown = 0
    for n, entry in enumerate(entries):
        room = limit - len(blocks) - (1 if n < len(entries) - 1 else 0)
        if len(entry) > room:
            break
        blocks += entry
        shown += 1
    if shown < len(entries):
        blocks.append(more(len(entries) - shown))
    return shown
