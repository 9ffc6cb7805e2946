"""The owners of a service user: the buttons that change them on ``/token service list``,
the modals that choose whom to add or remove, the admins' Take over, and what each says
once done."""

from __future__ import annotations

from typing import Any

from bot.blocks.text import CONFIRM_MAX, inline
from bot.blocks.tokens import Message, _plain, _section, text_message

ADD_OWNER_ACTION = "add_service_owner"
REMOVE_OWNER_ACTION = "remove_service_owner"
TAKE_OVER_ACTION = "take_over_service_user"
ADD_OWNER_CALLBACK = "add_service_owner"
REMOVE_OWNER_CALLBACK = "remove_service_owner"
OWNER_CALLBACKS = (ADD_OWNER_CALLBACK, REMOVE_OWNER_CALLBACK)
OWNER_BLOCK = "owner"  # storage.services.OWNER_FIELD: refusals about the member chosen
OWNER_INPUT = "member"
NAME_SHOWN, OWNERS_SHOWN = 120, 30


def owner_buttons(service_id: int) -> dict[str, Any]:
    """Add owner and Remove owner, under a service user on the list; each opens a modal."""
    return {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": action_id,
                "text": _plain(label),
                "value": str(service_id),
            }
            for action_id, label in (
                (ADD_OWNER_ACTION, "Add owner"),
                (REMOVE_OWNER_ACTION, "Remove owner"),
            )
        ],
    }


def _mentions(owners: list[str]) -> str:
    shown = ", ".join(f"<@{o}>" for o in owners[:OWNERS_SHOWN]) or "none active"
    if len(owners) > OWNERS_SHOWN:
        shown += f" and {len(owners) - OWNERS_SHOWN} more"
    return shown


def owner_modal(
    name: str, owners: list[str], *, adding: bool, private_metadata: str
) -> dict[str, Any]:
    """Choose the member to make an owner of the service user ``name``, or to remove
    from its owners. Its current active owners are listed."""
    service = f"*{inline(name, NAME_SHOWN)}*"
    if adding:
        intro = f"The owners of {service} see it, revoke its tokens and are reminded of them."
    else:
        intro = f"A service user keeps at least one owner: {service} cannot lose its last one."
    return {
        "type": "modal",
        "callback_id": ADD_OWNER_CALLBACK if adding else REMOVE_OWNER_CALLBACK,
        "private_metadata": private_metadata,
        "title": _plain("Add owner" if adding else "Remove owner"),
        "submit": _plain("Add" if adding else "Remove"),
        "close": _plain("Cancel"),
        "blocks": [
            _section(f"{intro}\nOwners now: {_mentions(owners)}"),
            {
                "type": "input",
                "block_id": OWNER_BLOCK,
                "label": _plain("New owner" if adding else "Owner to remove"),
                "element": {
                    "type": "users_select",
                    "action_id": OWNER_INPUT,
                    "placeholder": _plain("Choose a member"),
                },
            },
        ],
    }


def owners_changed_notice(name: str, member: str, *, added: bool) -> str:
    service = f"*{inline(name, NAME_SHOWN)}*"
    if added:
        return f":white_check_mark: <@{member}> now owns {service}."
    return f":white_check_mark: <@{member}> no longer owns {service}."


def take_over_button(name: str) -> dict[str, Any]:
    """Take over, on the admins' report of a service user left with no owner (R17)."""
    shown = inline(name, CONFIRM_MAX // 3)
    return {
        "type": "button",
        "action_id": TAKE_OVER_ACTION,
        "text": _plain("Take over"),
        "value": name,
        "confirm": {
            "title": _plain("Take over this service user?"),
            "text": {
                "type": "mrkdwn",
                "text": f"You become the owner of *{shown}*: you are reminded of its tokens "
                "and can add other owners.",
                "verbatim": True,
            },
            "confirm": _plain("Take over"),
            "deny": _plain("Back"),
        },
    }


def taken_over_message(name: str, command: str) -> Message:
    return text_message(
        f":white_check_mark: You now own *{inline(name, NAME_SHOWN)}*: its reminders come to "
        f"you, and you can add owners with `{command} service list`."
    )
