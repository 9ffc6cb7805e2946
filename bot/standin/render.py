"""Block Kit rendered as plain text, to show in a terminal what a person would see."""

from __future__ import annotations

import re
import textwrap
from typing import Any

_DATE = re.compile(r"<!date\^[^|>]*\|([^>]*)>")
_LINK = re.compile(r"<([^|>]+)\|([^>]+)>")
_MENTION = re.compile(r"<@(\w+)>")
_CHANNEL = re.compile(r"<#(\w+)>")
_EMOJI = {
    ":key:": "🔑",
    ":no_entry:": "⛔",
    ":white_check_mark:": "✅",
    ":warning:": "⚠️",
    ":rotating_light:": "🚨",
}


def mrkdwn(text: str) -> str:
    text = _DATE.sub(r"\1", text)
    text = _MENTION.sub(r"@\1", text)
    text = _CHANNEL.sub(r"#\1", text)
    text = _LINK.sub(r"\2", text)
    for code, char in _EMOJI.items():
        text = text.replace(code, char)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text(obj: dict[str, Any] | None) -> str:
    if not obj:
        return ""
    return mrkdwn(obj["text"]) if obj.get("type") == "mrkdwn" else str(obj.get("text", ""))


def _button(element: dict[str, Any]) -> str:
    label = f"[{_text(element.get('text'))}]"
    return label + (" (asks to confirm)" if "confirm" in element else "")


def _initial(element: dict[str, Any]) -> str:
    """What an input shows before anyone touches it."""
    if "initial_option" in element:
        return _text(element["initial_option"].get("text"))
    if "initial_conversation" in element:
        return "#" + str(element["initial_conversation"])
    if element.get("type") == "checkboxes":
        ticked = {o.get("value") for o in element.get("initial_options", [])}
        return "  ".join(
            ("☑ " if o.get("value") in ticked else "☐ ") + _text(o.get("text"))
            for o in element.get("options", [])
        )
    return str(element.get("initial_value", ""))


def render_blocks(blocks: list[dict[str, Any]], indent: str = "  ") -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind in ("section", "header"):
            text = _text(block.get("text"))
            if "accessory" in block and block["accessory"].get("type") == "button":
                text += "   " + _button(block["accessory"])
            lines.append(text)
        elif kind == "context":
            lines.append("  ".join(_text(e) for e in block.get("elements", [])))
        elif kind == "actions":
            lines.append("  ".join(_button(e) for e in block.get("elements", [])))
        elif kind == "input":
            value = _initial(block.get("element", {}))
            if "\n" in value:  # a multiline input: its lines under the label
                lines.append(f"{_text(block.get('label'))}:")
                lines += [f"  [ {line:<40} ]" for line in value.splitlines()]
            else:
                lines.append(f"{_text(block.get('label'))}: [ {value:<20} ]")
            if block.get("hint"):
                lines.append(f"  {_text(block['hint'])}")
        elif kind == "divider":
            lines.append("─" * 40)
    out: list[str] = []
    for line in lines:
        for part in line.splitlines() or [""]:
            out.extend(textwrap.wrap(part, 96, subsequent_indent="  ") or [""])
    return textwrap.indent("\n".join(out), indent)


def render_view(view: dict[str, Any]) -> str:
    title = _text(view.get("title"))
    buttons = "  ".join(f"[{_text(view[k])}]" for k in ("close", "submit") if view.get(k))
    body = render_blocks(view.get("blocks", []), indent="  │ ")
    return f"  ┌ {title}\n{body}\n  └ {buttons}"
