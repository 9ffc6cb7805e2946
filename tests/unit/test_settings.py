"""The organization's settings: reading a submitted form (each rule, each field's
error), saving it in one transaction with an audit event per value changed, and the
modal that shows them (bot/blocks/settings.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.approvers import Standing
from bot.blocks import settings as blocks
from bot.config import Settings
from bot.listeners.payload import malformed
from bot.listeners.settings import settings_form
from bot.standin.client import untouched_state
from bot.standin.server import view_problems
from storage import audit, settings, tokens, usage
from storage.db import Database
from storage.errors import CapReached, InvalidFields
from storage.settings import (
    Change,
    OrgSettings,
    SettingsForm,
    StaleForm,
    check_settings,
    save_settings,
)
from tests.conftest import NOW, shown
from tests.unit.test_guards import FakeSlack

ORG, ADMIN, ALICE = "T0ORG", "U0ADMIN", "U0ALICE"
DEFAULTS = settings._defaults()


def typed(current: OrgSettings = DEFAULTS, **changes: Any) -> SettingsForm:
    """The form as the modal shows ``current``, with ``changes`` typed over it."""
    shown_values: dict[str, Any] = {
        "user_token_cap": str(current.user_token_cap),
        "service_token_cap": str(current.service_token_cap),
        "inactivity_days": str(current.inactivity_days),
        "reminder_days": ", ".join(map(str, current.reminder_days)),
        "allow_keep_alive": current.allow_keep_alive,
        "rotation_grace_hours": str(current.rotation_grace_hours),
        "request_ttl_days": str(current.request_ttl_days),
        "pending_request_cap": str(current.pending_request_cap),
        "approver_group": current.approver_group,
        "approvals_channel": current.approvals_channel,
        "scope_catalogue": settings.catalogue_text(current.scope_catalogue),
        "role_scopes": settings.role_scopes_text(current.role_scopes),
    }
    return SettingsForm(**{**shown_values, **changes})


def errors_of(form: SettingsForm, groups: list[str] | None = None) -> dict[str, str]:
    return check_settings(form, DEFAULTS, groups).errors


# -- reading a form ---------------------------------------------------------------------


def test_the_defaults_as_shown_read_back_as_the_defaults() -> None:
    checked = check_settings(typed(), DEFAULTS, None)
    assert checked.errors == {} and checked.settings == DEFAULTS


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("user_token_cap", 1, 1000),
        ("service_token_cap", 1, 10000),
        ("inactivity_days", 1, 3650),
        ("rotation_grace_hours", 0, 720),
        ("request_ttl_days", 1, 90),
        ("pending_request_cap", 1, 100),
    ],
)
def test_each_number_takes_its_range_and_nothing_else(name: str, low: int, high: int) -> None:
    days = {"reminder_days": ""}  # reminders depend on the period; none fit any period
    for good in (low, high):
        checked = check_settings(typed(**days, **{name: f" {good} "}), DEFAULTS, None)
        assert checked.settings is not None and getattr(checked.settings, name) == good
    for bad in (str(low - 1), str(high + 1), "", None, "ten", "2.5", "-3", "١٢", "1e3", "9" * 5000):
        errors = errors_of(typed(**days, **{name: bad}))
        assert errors == {name: f"Use a whole number from {low} to {high}."}


def test_reminders_are_distinct_whole_days_most_distant_first() -> None:
    checked = check_settings(typed(reminder_days="1, 14,3 ,"), DEFAULTS, None)
    assert checked.settings is not None and checked.settings.reminder_days == [14, 3, 1]
    none = check_settings(typed(reminder_days="  "), DEFAULTS, None).settings
    assert none is not None and none.reminder_days == []  # only the expiry notice


@pytest.mark.parametrize(
    ("typed_days", "period", "says"),
    [
        ("7, soon", "30", "such as 7, 1: “soon” is not one."),
        ("7 1", "30", "“7 1” is not one"),
        ("7; 1", "30", "“7; 1” is not one"),
        ("1.5", "30", "“1.5” is not one"),
        ("7, " + "1" * 5000, "30", "“1111"),
        ("-1", "30", "“-1” is not one"),
        ("3, 3", "30", "Give each day once: 3 is there twice."),
        ("6, 5, 4, 3, 2, 1", "30", "Use at most 5 reminders (there are 6)."),
        ("0", "30", "at least 1 day"),
        ("30", "30", "must come 1 to 29 days before the token expires (the period is 30 days)"),
        ("1", "1", "With a period of 1 day there is no room for a reminder"),
    ],
)
def test_a_malformed_reminder_list_is_answered_on_its_field(
    typed_days: str, period: str, says: str
) -> None:
    errors = errors_of(typed(reminder_days=typed_days, inactivity_days=period))
    assert set(errors) == {"reminder_days"} and says in errors["reminder_days"]


def test_reminders_are_checked_against_the_new_period_and_alone_when_it_is_bad() -> None:
    assert "1 to 4 days" in errors_of(typed(inactivity_days="5"))["reminder_days"]
    assert set(errors_of(typed(inactivity_days="0"))) == {"inactivity_days"}


def test_the_catalogue_is_one_permission_per_line() -> None:
    checked = check_settings(
        typed(
            scope_catalogue="\n api:read \n\ndeploy:prod\n",
            role_scopes="owner:\nadmin:\nmember:\nguest:",
        ),
        DEFAULTS,
        None,
    )
    assert checked.settings is not None
    assert checked.settings.scope_catalogue == ["api:read", "deploy:prod"]


@pytest.mark.parametrize(
    ("catalogue", "says"),
    [
        ("", "List at least one permission, one per line."),
        (" \n\t\n", "List at least one permission"),
        ("api read", "Line 1: a permission has no spaces"),
        ("ok\nbell\x07", "Line 2: a permission has no spaces and only printable characters."),
        ("a" * 76, "at most 75 characters (this one has 76)"),
        ("x\ny\nx", "Give each permission once: “x” is there twice."),
        ("\n".join(f"s{n}" for n in range(101)), "at most 100 permissions (there are 101)"),
        ("\n".join(f"{n:02d}" + "s" * 73 for n in range(45)), "fit in 3000 characters"),
    ],
)
def test_a_bad_catalogue_is_answered_on_its_field(catalogue: str, says: str) -> None:
    errors = errors_of(typed(scope_catalogue=catalogue))
    assert set(errors) == {"scope_catalogue"} and says in errors["scope_catalogue"]


def test_the_largest_catalogue_allowed_is_taken() -> None:
    most = "\n".join(f"{n:03d}" + "s" * 26 for n in range(100))  # 100 lines, 2999 characters
    roles = "owner:\nadmin:\nmember:\nguest:"
    assert errors_of(typed(scope_catalogue=most, role_scopes=roles)) == {}


def test_the_role_map_gives_each_role_its_permissions_once_in_order() -> None:
    checked = check_settings(
        typed(
            role_scopes="Guest:\nmember: api:write api:read api:write\n"
            "admin: api:read\nowner: api:admin"
        ),
        DEFAULTS,
        None,
    )
    assert checked.settings is not None
    assert checked.settings.role_scopes == {
        "owner": ["api:admin"],
        "admin": ["api:read"],
        "member": ["api:write", "api:read"],
        "guest": [],
    }


@pytest.mark.parametrize(
    ("roles", "says"),
    [
        ("owner api:read\nadmin:\nmember:\nguest:", "Line 1: write the role, a colon"),
        ("boss: api:read\nowner:\nadmin:\nmember:\nguest:", "“boss” is not one"),
        ("owner:\nowner:\nadmin:\nmember:\nguest:", "Give each role one line: owner has two."),
        ("owner:\nadmin:", "member, guest missing"),
        ("", "owner, admin, member, guest missing"),
        (
            "owner: deploy:prod api:read\nadmin:\nmember: x deploy:prod\nguest:",
            "Not in the permission catalogue: “deploy:prod”, “x”.",
        ),
        ("owner:\nadmin:\nmember:\nguest: api:admin", "“api:admin”"),
    ],
)
def test_a_bad_role_map_is_answered_on_its_field(roles: str, says: str) -> None:
    errors = errors_of(typed(role_scopes=roles))
    assert set(errors) == {"role_scopes"} and says in errors["role_scopes"]


def test_a_permission_a_role_has_already_may_stay_outside_the_catalogue() -> None:
    # The default map gives owners api:admin, which the default catalogue leaves out.
    assert "api:admin" not in DEFAULTS.scope_catalogue
    assert errors_of(typed(role_scopes="owner: api:admin\nadmin:\nmember:\nguest:")) == {}


def test_permissions_are_checked_only_against_a_catalogue_that_reads() -> None:
    assert set(errors_of(typed(scope_catalogue=""))) == {"scope_catalogue"}


def test_a_group_is_checked_against_slacks_only_when_it_changes() -> None:
    assert errors_of(typed(approver_group="@ops"), ["ops"]) == {}
    assert "no user group @ops" in errors_of(typed(approver_group="ops"), ["dev"])["approver_group"]
    slack_down = errors_of(typed(approver_group="ops"), None)["approver_group"]
    assert slack_down == "Slack could not list the user groups just now. Try again."
    kept = replace(DEFAULTS, approver_group="ops")
    assert check_settings(typed(kept), kept, None).errors == {}  # unchanged: no need to ask
    cleared = check_settings(typed(kept, approver_group=""), kept, None).settings
    assert cleared is not None and cleared.approver_group is None


@pytest.mark.parametrize("channel", ["U0ALICE", "D0ALICE", "c0lower", "C0 SPACE", "C" * 40])
def test_only_a_channel_id_is_taken_for_the_approvals_channel(channel: str) -> None:
    assert errors_of(typed(approvals_channel=channel)) == {
        "approvals_channel": "Pick a public or private channel."
    }
    assert errors_of(typed(approvals_channel="G0PRIVATE")) == {}


def test_every_field_at_fault_is_named_at_once() -> None:
    errors = errors_of(
        typed(user_token_cap="0", reminder_days="x", role_scopes="", approvals_channel="?")
    )
    assert set(errors) == {"user_token_cap", "reminder_days", "role_scopes", "approvals_channel"}


# -- saving -----------------------------------------------------------------------------


def test_saving_writes_the_changes_and_one_event_for_each(db: Database) -> None:
    changes = save_settings(
        db,
        ORG,
        ADMIN,
        typed(user_token_cap="2", allow_keep_alive=False, approvals_channel="C0APPROVE"),
        known_groups=None,
        seen=None,
        now=NOW,
    )
    assert changes == [
        Change("user_token_cap", 10, 2),
        Change("allow_keep_alive", True, False),
        Change("approvals_channel", None, "C0APPROVE"),
    ]
    now = settings.current_settings(db, ORG)
    assert (now.user_token_cap, now.allow_keep_alive, now.approvals_channel) == (
        2,
        False,
        "C0APPROVE",
    )
    assert settings.approval_routing(db, ORG) == (None, "C0APPROVE")
    events = audit.events(db, ORG)
    assert [(e.actor, e.action, e.subject) for e in events] == [
        (ADMIN, "setting.changed", "setting:user_token_cap"),
        (ADMIN, "setting.changed", "setting:allow_keep_alive"),
        (ADMIN, "setting.changed", "setting:approvals_channel"),
    ]
    assert events[0].detail == {"setting": "user_token_cap", "old": 10, "new": 2}
    assert audit.verify_chain(db, ORG)
    # The same form again changes nothing, and records nothing.
    assert save_settings(db, ORG, ADMIN, typed(now), known_groups=None, seen=None, now=NOW) == []
    assert len(audit.events(db, ORG)) == 3


def test_a_form_with_any_bad_value_changes_nothing(db: Database) -> None:
    with pytest.raises(InvalidFields) as refused:
        save_settings(
            db,
            ORG,
            ADMIN,
            typed(user_token_cap="5", reminder_days="x"),
            known_groups=None,
            seen=None,
            now=NOW,
        )
    assert set(refused.value.errors) == {"reminder_days"} and refused.value.field == "reminder_days"
    assert settings.current_settings(db, ORG) == DEFAULTS
    assert audit.events(db, ORG) == []


def test_a_form_opened_before_another_save_is_refused(db: Database) -> None:
    opened_on = settings.current_settings(db, ORG).version()
    save_settings(
        db, ORG, "U0OTHER", typed(user_token_cap="4"), known_groups=None, seen=opened_on, now=NOW
    )
    with pytest.raises(StaleForm, match="changed since you opened"):
        save_settings(
            db,
            ORG,
            ADMIN,
            typed(pending_request_cap="9"),
            known_groups=None,
            seen=opened_on,
            now=NOW,
        )
    assert settings.current_settings(db, ORG).pending_request_cap == 5


def test_a_new_role_map_drops_what_validation_caches_hold(db: Database) -> None:
    issued = shown(db, ORG, tokens.issue_user_token(db, ORG, ALICE, "ci", NOW))
    valid = usage.validate(db, issued.secret, NOW)
    assert valid is not None and valid.scopes == ["api:read", "api:write"]
    before = db.generation
    save_settings(db, ORG, ADMIN, typed(user_token_cap="9"), known_groups=None, seen=None, now=NOW)
    assert db.generation == before  # a cap changes nothing a token carries
    roles = "owner:\nadmin:\nmember: reports:read\nguest:"
    save_settings(db, ORG, ADMIN, typed(role_scopes=roles), known_groups=None, seen=None, now=NOW)
    assert db.generation > before
    valid = usage.validate(db, issued.secret, NOW)
    assert valid is not None and valid.scopes == ["reports:read"]


def test_lowering_the_cap_keeps_every_token_and_refuses_the_next(db: Database) -> None:
    issued = [
        shown(db, ORG, tokens.issue_user_token(db, ORG, ALICE, f"t{n}", NOW)) for n in range(3)
    ]
    save_settings(db, ORG, ADMIN, typed(user_token_cap="1"), known_groups=None, seen=None, now=NOW)
    assert all(usage.validate(db, i.secret, NOW) is not None for i in issued)
    with pytest.raises(CapReached) as full:
        tokens.issue_user_token(db, ORG, ALICE, "t4", NOW)
    assert full.value.cap == 1 and len(full.value.active) == 3
    assert str(full.value).endswith("the limit is 1 per member. Revoke 3 to make room.")


# -- the modal ----------------------------------------------------------------------------


def modal(
    current: OrgSettings = DEFAULTS, groups: dict[str, str] | None = None, **defaults: Any
) -> dict[str, Any]:
    return blocks.settings_modal(
        current,
        groups,
        default_group=defaults.get("group"),
        default_channel=defaults.get("channel"),
        private_metadata="{}",
    )


def inputs(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


def test_the_modal_has_a_field_for_each_setting_and_fits_slacks_limits() -> None:
    view = modal(groups={"ops": "Operations"})
    assert view["callback_id"] == blocks.SETTINGS_CALLBACK
    assert list(inputs(view)) == list(settings.SETTINGS)
    assert all(b["element"]["action_id"] == blocks.INPUT for b in inputs(view).values())
    assert view_problems(view) == []
    cap = inputs(view)["user_token_cap"]["element"]
    assert (cap["type"], cap["initial_value"], cap["min_value"], cap["max_value"]) == (
        "number_input",
        "10",
        "1",
        "1000",
    )


def test_the_approvers_are_picked_among_the_groups_or_typed_in_a_large_workspace() -> None:
    picked = inputs(
        modal(
            replace(DEFAULTS, approver_group="ops"),
            {"ops": "Operations", "dev": "Dev"},
            group="sec",
        )
    )
    element = picked["approver_group"]["element"]
    assert element["type"] == "static_select"
    assert [o["value"] for o in element["options"]] == [blocks.DEFAULT_GROUP, "dev", "ops"]
    assert element["options"][0]["text"]["text"] == "Default: @sec"
    assert element["initial_option"]["value"] == "ops"
    gone = inputs(modal(replace(DEFAULTS, approver_group="old"), {"ops": "Operations"}))
    assert gone["approver_group"]["element"]["initial_option"]["value"] == "old"  # still offered
    many = {f"g{n:03d}": f"G{n}" for n in range(blocks.GROUP_OPTIONS_MAX + 1)}
    for groups in (many, None):  # too many to offer, or Slack could not list them
        typed_in = inputs(modal(replace(DEFAULTS, approver_group="g001"), groups))["approver_group"]
        assert typed_in["element"]["type"] == "plain_text_input"
        assert typed_in["element"]["initial_value"] == "g001"
        assert "admins and owners" in typed_in["hint"]["text"]
    # 99 groups Slack lists, and the one set that it lists no more: 101 options with the
    # default, more than Slack offers, so the handle is typed instead.
    listed = {f"g{n:03d}": f"G{n}" for n in range(blocks.GROUP_OPTIONS_MAX)}
    gone_too = inputs(modal(replace(DEFAULTS, approver_group="old"), listed))["approver_group"]
    assert gone_too["element"]["type"] == "plain_text_input"
    assert gone_too["element"]["initial_value"] == "old"


def test_the_channel_can_be_returned_to_the_default_once_one_is_set() -> None:
    unset = inputs(modal(channel="C0SERVER"))
    assert "initial_conversation" not in unset["approvals_channel"]["element"]
    assert "Default: channel C0SERVER" in unset["approvals_channel"]["hint"]["text"]
    assert blocks.CHANNEL_DEFAULT_BLOCK not in unset
    set_ = inputs(modal(replace(DEFAULTS, approvals_channel="C0MINE")))
    assert set_["approvals_channel"]["element"]["initial_conversation"] == "C0MINE"
    assert "each approver by DM" in set_[blocks.CHANNEL_DEFAULT_BLOCK]["hint"]["text"]


def state_of(view: dict[str, Any], **chosen: dict[str, Any]) -> dict[str, Any]:
    """A submission of ``view`` untouched but for ``chosen`` (element states)."""
    values = {
        block: {blocks.INPUT: untouched_state(b["element"])} for block, b in inputs(view).items()
    }
    values.update({block: {blocks.INPUT: state} for block, state in chosen.items()})
    return {**view, "state": {"values": values}}


def test_an_untouched_submission_reads_as_the_values_shown() -> None:
    current = replace(
        DEFAULTS, approver_group="ops", approvals_channel="C0MINE", allow_keep_alive=False
    )
    view = modal(current, {"ops": "Operations"})
    form = settings_form(state_of(view))
    assert form == typed(current)
    assert check_settings(form, current, None).settings == current


def test_the_submission_reads_the_default_choices_as_none() -> None:
    view = modal(replace(DEFAULTS, approver_group="ops", approvals_channel="C0MINE"), {"ops": "O"})
    form = settings_form(
        state_of(
            view,
            approver_group={
                "type": "static_select",
                "selected_option": {"value": blocks.DEFAULT_GROUP},
            },
            approvals_channel_default={
                "type": "checkboxes",
                "selected_options": [{"value": "default"}],
            },
        )
    )
    assert (form.approver_group, form.approvals_channel) == (None, None)


def test_a_submission_of_the_wrong_shape_is_refused_before_any_listener() -> None:
    view = state_of(
        modal(), approvals_channel={"type": "conversations_select", "selected_conversation": 7}
    )
    assert malformed({"type": "view_submission", "user": {"id": ADMIN}, "view": view}) is not None
    view = state_of(modal(), approver_group={"type": "static_select", "selected_option": "ops"})
    assert malformed({"type": "view_submission", "user": {"id": ADMIN}, "view": view}) is not None


def test_the_saved_message_says_each_change_and_quotes_nothing_as_markup() -> None:
    message = blocks.settings_saved_message(
        [
            Change("user_token_cap", 10, 2),
            Change("reminder_days", [7, 1], []),
            Change("approvals_channel", None, "C0MINE"),
            Change("scope_catalogue", ["a"], ["<!channel>", "*bold*"]),
        ]
    )
    text = " ".join(b["text"]["text"] for b in message["blocks"])
    assert "Personal tokens per member: 10 → 2" in text
    assert "Reminders, in days before a token expires: 7, 1 → none" in text
    assert "Approvals channel: the default → <#C0MINE>" in text
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "*bold*" not in text
    assert blocks.settings_saved_message([])["text"] == "Nothing changed."


# -- who decides ------------------------------------------------------------------------


async def test_the_organizations_approver_group_overrides_the_servers() -> None:
    slack = FakeSlack({ALICE: {}}, {"ops": [ALICE], "sec": []})

    async def organizations_group() -> str | None:
        return "ops"

    client = cast(AsyncWebClient, slack)
    settings_ = Settings(approver_group="sec")
    assert await Standing(client, settings_, ALICE).refusal_to_decide() is not None
    assert await Standing(client, settings_, ALICE, organizations_group).refusal_to_decide() is None
