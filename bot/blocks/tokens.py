"""Messages and modals about personal tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.blocks.text import BLOCKS_MAX, CONFIRM_MAX, SECTION_MAX, clip, fit, inline
from storage.tokens import NAME_MAX, IssuedToken, Rotation, TokenInfo

Message = dict[str, Any]

GENERATE_CALLBACK = "generate_token"
NAME_BLOCK = "token_name"
NAME_INPUT = "name"
REVOKE_ACTION = "revoke_token"
SERVICE_REVOKE_ACTION = "revoke_service_token"  # answered with the service users' list
MEMBER_REVOKE_ACTION = "revoke_member_token"  # on an admin's list of a member's tokens
OPEN_GENERATE_ACTION = "open_generate"
KEEP_ALIVE_ACTION = "keep_alive"
CANCEL_ACTION = "cancel"
ROTATE_ACTION = "rotate_token"
SERVICE_ROTATE_ACTION = "rotate_service_token"  # answered with the service users' list
CANCEL_ROTATE_ACTION = "cancel_rotate"


def when(at: datetime | None, never: str = "never") -> str:
    """A time Slack shows in the reader's own time zone, with a UTC fallback."""
    if at is None:
        return never
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack makes no mention or link of its own from the words; only the
    # app's explicit <@U…> and <!date…> are parsed. The clip is a last guard: builders
    # keep each piece of user text short enough that it never cuts.
    return {"type": "mrkdwn", "text": clip(text, SECTION_MAX) or " ", "verbatim": True}


def _section(text: str, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": _mrkdwn(text)}
    if accessory:
        block["accessory"] = accessory
    return block


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _name(info: TokenInfo) -> str:
    """A token's name as the member typed it, safe inside the app's sentence."""
    return inline(info.name)


def text_message(text: str) -> Message:
    """A message of the app's own words (mrkdwn); user text in it went through
    ``bot.blocks.text`` already."""
    return {"text": text, "blocks": [_section(text)]}


def refusal_message(refusal: str, after: str = "") -> Message:
    """A refusal from the domain (which may quote a name the member typed), shown as
    plain words, followed by the app's own ``after``."""
    return text_message(f"{inline(refusal)} {after}".strip())


def help_message(command: str, notice: str | None = None) -> Message:
    lines = [
        f"`{command} new [name]` generate a personal API token (shown once)",
        f"`{command} list` your active tokens, with Rotate and Revoke buttons",
        f"`{command} list @member` that member's active tokens, with Revoke buttons (admins)",
        f"`{command} revoke <name>` revoke one of your tokens, after you confirm",
        f"`{command} rotate <name>` replace a token; the old one works for a grace period",
        f"`{command} service request` ask for a token for a service user (approved by an admin)",
        f"`{command} service list` service users and their tokens, and who owns them "
        "(admins, and owners)",
        f"`{command} requests` pending service-token requests you made or may decide",
        f"`{command} report` seats, service users and tokens by state (admins)",
        f"`{command} audit [n]` the last n audit events, newest first (admins)",
        f"`{command} settings` caps, expiry, reminders, approvers and permissions (admins)",
        f"`{command} webhooks` endpoints told of token events as signed JSON (admins)",
        f"`{command} help` this message",
    ]
    blocks = [_section(notice)] if notice else []
    blocks += [_section("*Personal API tokens*\n" + "\n".join(lines))]
    blocks.append(
        _context("Tokens expire after a period without use. Each is shown once: keep it safe.")
    )
    return {"text": notice or "tokenbot help", "blocks": blocks}


def unknown_subcommand_message(command: str, text: str) -> Message:
    word = inline(text.split()[0], 40)
    return help_message(command, notice=f"I don't know `{word}`. Here is what I can do:")


def generate_modal(initial_name: str, private_metadata: str) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": NAME_INPUT,
        "max_length": NAME_MAX,
        "placeholder": _plain("e.g. ci-deploy"),
    }
    if initial_name:
        element["initial_value"] = initial_name[:NAME_MAX]
    return {
        "type": "modal",
        "callback_id": GENERATE_CALLBACK,
        "private_metadata": private_metadata,
        "title": _plain("Generate API token"),
        "submit": _plain("Generate"),
        "close": _plain("Cancel"),
        "blocks": [
            {
                "type": "input",
                "block_id": NAME_BLOCK,
                "label": _plain("Token name"),
                "hint": _plain(f"1 to {NAME_MAX} characters, unique among your active tokens."),
                "element": element,
            },
            _context("The token is shown to you once, in a message only you can see."),
        ],
    }


def new_token_message(issued: IssuedToken) -> Message:
    info = issued.info
    return {
        "text": f"Your new token “{_name(info)}” is ready. Copy it now: it won't be shown again.",
        "blocks": [
            _section(
                f":key: Your new token *{_name(info)}* is ready. "
                "Copy it now: it will not be shown again."
            ),
            _section(f"```{issued.secret}```"),
            _context(
                f"Expires if unused by {when(info.cutoff_at)}. Each use extends it. "
                "Only you can see this message, and Slack does not keep it."
            ),
        ],
    }


def revoke_button(
    info: TokenInfo, action_id: str = REVOKE_ACTION, value: str | None = None
) -> dict[str, Any]:
    """A Revoke button with its confirm dialog (R16); its value is the token's id unless
    ``value`` says more."""
    name = inline(info.name, CONFIRM_MAX // 2)
    return {
        "type": "button",
        "action_id": action_id,
        "text": _plain("Revoke"),
        "style": "danger",
        "value": value or str(info.id),
        "confirm": {
            "title": _plain("Revoke this token?"),
            "text": {
                "type": "mrkdwn",
                "text": f"*{name}* (`{info.hint}`) stops working at once. This cannot be undone.",
            },
            "confirm": _plain("Revoke"),
            "deny": _plain("Keep it"),
            "style": "danger",
        },
    }


def rotate_button(info: TokenInfo, action_id: str = ROTATE_ACTION) -> dict[str, Any]:
    """A Rotate button with its confirm dialog (R18)."""
    name = inline(info.name, CONFIRM_MAX // 2)
    return {
        "type": "button",
        "action_id": action_id,
        "text": _plain("Rotate"),
        "value": str(info.id),
        "confirm": {
            "title": _plain("Rotate this token?"),
            "text": {
                "type": "mrkdwn",
                "text": f"*{name}* (`{info.hint}`) gets a replacement, shown to you once. "
                "The old token works until the grace period ends.",
            },
            "confirm": _plain("Rotate"),
            "deny": _plain("Cancel"),
        },
    }


def token_buttons(
    info: TokenInfo, rotate: str = ROTATE_ACTION, revoke: str = REVOKE_ACTION
) -> dict[str, Any]:
    """A token's Rotate and Revoke buttons, each with its confirm dialog."""
    return {
        "type": "actions",
        "elements": [rotate_button(info, rotate), revoke_button(info, revoke)],
    }


def _token_line(info: TokenInfo) -> str:
    return (
        f"*{_name(info)}*  `{info.hint}`\n"
        f"Created {when(info.created_at)} · last used {when(info.last_used_at)} · "
        f"expires if unused by {when(info.cutoff_at)}"
    )


def token_entry(info: TokenInfo) -> list[dict[str, Any]]:
    """The blocks of one token in a list (``/token list``, the Home tab): its name, hint
    and times, and what can be done with it."""
    return [_section(_token_line(info)), token_buttons(info)]


def token_list_message(tokens: list[TokenInfo], cap: int, notice: str | None = None) -> Message:
    blocks = [_section(notice)] if notice else []
    if not tokens:
        blocks.append(_section("You have no active tokens. Generate one with `new`."))
        return {"text": notice or "You have no active tokens.", "blocks": blocks}
    blocks.append(_section(f"*Your active tokens* ({len(tokens)} of {cap})"))
    fit(
        blocks,
        [token_entry(t) for t in tokens],
        BLOCKS_MAX,
        lambda left: _context(f"… and {left} more, not shown here."),
    )
    count = f"{len(tokens)} active token{'' if len(tokens) == 1 else 's'}"
    return {"text": notice or f"You have {count}.", "blocks": blocks}


def member_token_list_message(
    member: str, tokens: list[TokenInfo], cap: int, notice: str | None = None
) -> Message:
    """``/token list @member`` for an admin: the member's active tokens, each with a
    Revoke button whose click says whose list to show again (R16)."""
    blocks = [_section(notice)] if notice else []
    if not tokens:
        blocks.append(_section(f"<@{member}> has no active tokens."))
        return {"text": notice or "No active tokens.", "blocks": blocks}
    blocks.append(_section(f"*Active tokens of <@{member}>* ({len(tokens)} of {cap})"))
    fit(
        blocks,
        [
            [_section(_token_line(t), revoke_button(t, MEMBER_REVOKE_ACTION, f"{t.id}:{member}"))]
            for t in tokens
        ],
        BLOCKS_MAX,
        lambda left: _context(f"… and {left} more, not shown here."),
    )
    count = f"{len(tokens)} active token{'' if len(tokens) == 1 else 's'}"
    return {"text": notice or count, "blocks": blocks}


def revoked_by_admin_message(info: TokenInfo, by: str, command: str) -> Message:
    """The DM to a member whose token an admin revoked (R16): who, and which token."""
    text = (
        f":no_entry: <@{by}> revoked your token *{_name(info)}* (`{info.hint}`). It no "
        f"longer works. If you still need one, generate a new token with `{command} new`."
    )
    return {
        "text": f"Your token “{_name(info)}” was revoked by an admin.",
        "blocks": [_section(text)],
    }


def cap_reached_message(cap: int, tokens: list[TokenInfo]) -> Message:
    # Above the cap once an admin has lowered it: more than one must go.
    over = len(tokens) - cap + 1
    notice = (
        f":no_entry: You have reached the limit of {cap} active tokens per member. "
        f"Revoke {'one' if over <= 1 else over} below to make room; nothing is removed for you."
    )
    return token_list_message(tokens, cap, notice)


def revoke_confirm_message(info: TokenInfo) -> Message:
    text = (
        f"Revoke *{_name(info)}* (`{info.hint}`)? Anything using it stops working "
        "at once. This cannot be undone."
    )
    return {
        "text": f"Revoke “{_name(info)}”?",
        "blocks": [
            _section(text),
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": REVOKE_ACTION,
                        "text": _plain("Revoke"),
                        "style": "danger",
                        "value": str(info.id),
                    },
                    {"type": "button", "action_id": CANCEL_ACTION, "text": _plain("Cancel")},
                ],
            },
        ],
    }


def revoked_notice(info: TokenInfo) -> str:
    return f":white_check_mark: Revoked *{_name(info)}* (`{info.hint}`). It no longer works."


def rotate_confirm_message(info: TokenInfo) -> Message:
    text = (
        f"Rotate *{_name(info)}* (`{info.hint}`)? You get a new token with the same name and "
        "permissions, shown once. The old one keeps working until the grace period ends: "
        "put the new one in its place before then."
    )
    return {
        "text": f"Rotate “{_name(info)}”?",
        "blocks": [
            _section(text),
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": ROTATE_ACTION,
                        "text": _plain("Rotate"),
                        "style": "primary",
                        "value": str(info.id),
                    },
                    {"type": "button", "action_id": CANCEL_ROTATE_ACTION, "text": _plain("Cancel")},
                ],
            },
        ],
    }


def _old_token_fate(rotation: Rotation) -> str:
    """What becomes of the token a rotation replaced, once the new one is shown."""
    old = rotation.old
    if rotation.grace <= timedelta(0):
        return f"The old token (`{old.hint}`) no longer works."
    until = (old.rotated_at or old.created_at) + rotation.grace
    return (
        f"The old token (`{old.hint}`) keeps working until {when(until)}, then stops: "
        "put the new one where it was before then."
    )


def _whose_rotated(rotation: Rotation) -> str:
    if rotation.service_user is None:
        return f"Your token *{_name(rotation.old)}*"
    return (
        f"The token *{_name(rotation.old)}* of the service user *{inline(rotation.service_user)}*"
    )


def rotated_token_message(rotation: Rotation) -> Message:
    """The new token of a rotation, shown once to whoever rotated it (R14, R18)."""
    info = rotation.issued.info
    return {
        "text": f"“{_name(info)}” was rotated. Copy the new token now: it won't be shown again.",
        "blocks": [
            _section(
                f":key: {_whose_rotated(rotation)} was rotated. Here is the new one: "
                "copy it now, it will not be shown again."
            ),
            _section(f"```{rotation.issued.secret}```"),
            _context(
                f"{_old_token_fate(rotation)} The new one expires if unused by "
                f"{when(info.cutoff_at)}. Only you can see this message, and Slack does not "
                "keep it."
            ),
        ],
    }


def rotated_notice(rotation: Rotation, delivered: bool) -> str:
    """What the screen clicked says once a rotation is done, or undone."""
    old = rotation.old
    if not delivered:
        return (
            f":warning: The new token for *{_name(old)}* could not be shown to you, so nothing "
            f"changed: `{old.hint}` works as before."
        )
    return (
        f":white_check_mark: Rotated *{_name(old)}*: the new token is shown to you once, in "
        f"the message below. {_old_token_fate(rotation)}"
    )


def _whose(info: TokenInfo, service_user: str | None) -> str:
    """How a notice names the token: the member's own, or their service user's (R12)."""
    if service_user is None:
        return f"Your token *{_name(info)}* (`{info.hint}`)"
    return f"The token *{_name(info)}* (`{info.hint}`) of the service user *{inline(service_user)}*"


def reminder_message(
    info: TokenInfo,
    days_before: int,
    allow_keep_alive: bool,
    command: str,
    service_user: str | None = None,
) -> Message:
    """The DM before the cutoff (R12): name, hint, last use, cutoff, and what to do. For
    a service token it goes to each of the service user's owners."""
    when_text = "tomorrow" if days_before == 1 else f"in {days_before} days"
    text = (
        f":warning: {_whose(info, service_user)} has not been used "
        f"and expires {when_text}, at {when(info.cutoff_at)}. "
        f"Last used: {when(info.last_used_at)}. Using it keeps it alive."
    )
    revoke = revoke_button(info, REVOKE_ACTION if service_user is None else SERVICE_REVOKE_ACTION)
    buttons: list[dict[str, Any]] = [{**revoke, "text": _plain("Revoke now")}]
    if allow_keep_alive:
        buttons.append(
            {
                "type": "button",
                "action_id": KEEP_ALIVE_ACTION,
                "text": _plain("Keep for another period"),
                "value": str(info.id),
            }
        )
    buttons.append(
        rotate_button(info, ROTATE_ACTION if service_user is None else SERVICE_ROTATE_ACTION)
    )
    listing = f"{command} list" if service_user is None else f"{command} service list"
    return {
        "text": f"The token “{_name(info)}” expires {when_text} if unused.",
        "blocks": [
            _section(text),
            {"type": "actions", "elements": buttons},
            _context(f"See all the tokens with `{listing}`."),
        ],
    }


def expired_message(info: TokenInfo, command: str, service_user: str | None = None) -> Message:
    """The DM when a token has expired (R13), with what to do next."""
    if service_user is None:
        next_step = f"generate a new token with `{command} new`"
    else:
        next_step = f"ask for a new token with `{command} service request` ({inline(service_user)})"
    text = (
        f"{_whose(info, service_user)} expired at {when(info.cutoff_at)} after a period "
        f"without use, and no longer works. If it is still needed, {next_step} and put it "
        "where the old one was."
    )
    return {"text": f"The token “{_name(info)}” has expired.", "blocks": [_section(text)]}


def kept_notice(info: TokenInfo) -> str:
    return (
        f":white_check_mark: Kept *{_name(info)}* (`{info.hint}`): it now expires if "
        f"unused by {when(info.cutoff_at)}."
    )
