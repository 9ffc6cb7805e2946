"""Who owns a service user: its owners and admins add and remove owners from `/token
service list`, keeping at least one; admins take over one whose owners have all left."""

from __future__ import annotations

from typing import Any

from bot.standin.harness import Running
from bot.standin.server import Call
from storage import audit, services
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import run_command
from tests.e2e.test_members import deliver, envelope
from tests.e2e.test_service_requests import CAROL
from tests.e2e.test_service_users import NOBODY, approved, buttons

ORG = "T0TOKENBOT"


def owners(env: Running) -> list[str]:
    [service] = services.list_service_users(env.db, ORG, ALICE, admin=True, now=env.deps.clock())
    return service.owners


def owner_events(env: Running) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (e.action, e.actor, e.detail)
        for e in audit.events(env.db, ORG)
        if e.action.startswith("service_user.")
    ]


async def open_owner_modal(env: Running, listing: Call, action: str, user: str) -> Call:
    mark = len(env.standin.calls)
    await env.slack.click(listing, action, user)
    return await env.standin.wait_for("views.open", after=mark)


async def choose(env: Running, modal: Call, user: str, member: str):
    """Submit the owners' modal as ``user``, having chosen ``member``."""
    chosen = {"owner": {"member": {"type": "users_select", "selected_user": member}}}
    return await env.slack.submit_view(modal.result["view"]["id"], user, chosen)


async def test_an_owner_adds_an_owner_who_then_sees_the_service_user(env: Running) -> None:
    await approved(env)
    listing = await run_command(env, "service list", ALICE)
    modal = await open_owner_modal(env, listing, "add_service_owner", ALICE)
    view = modal.view
    assert view["callback_id"] == "add_service_owner" and "*ci-deployer*" in modal.text_content()
    assert "Owners now: <@U0ALICE>" in modal.text_content()
    mark = len(env.standin.calls)
    response = await choose(env, modal, ALICE, NOBODY)
    assert response.status_code == 200 and response.content == b""
    redrawn = await env.standin.wait_for("response_url", after=mark)
    assert redrawn.args["replace_original"] is True
    text = redrawn.text_content()
    assert f"<@{NOBODY}> now owns *ci-deployer*" in text
    assert f"owners: <@{ALICE}>, <@{NOBODY}>" in text
    assert owners(env) == [ALICE, NOBODY]
    theirs = await run_command(env, "service list", NOBODY)
    assert "*Your service users* (1)" in theirs.text_content()
    assert owner_events(env) == [
        ("service_user.owner_added", ALICE, {"service_user": "ci-deployer", "owner": NOBODY})
    ]


async def test_an_owner_removes_another_owner(env: Running) -> None:
    await approved(env)
    services.add_owner(env.db, ORG, ALICE, service_id(env), env.deps.clock(), member=NOBODY)
    listing = await run_command(env, "service list", ALICE)
    modal = await open_owner_modal(env, listing, "remove_service_owner", ALICE)
    assert modal.view["callback_id"] == "remove_service_owner"
    assert f"Owners now: <@{ALICE}>, <@{NOBODY}>" in modal.text_content()
    mark = len(env.standin.calls)
    await choose(env, modal, ALICE, NOBODY)
    redrawn = await env.standin.wait_for("response_url", after=mark)
    assert f"<@{NOBODY}> no longer owns *ci-deployer*" in redrawn.text_content()
    assert owners(env) == [ALICE]
    assert owner_events(env)[-1] == (
        "service_user.owner_removed",
        ALICE,
        {"service_user": "ci-deployer", "owner": NOBODY},
    )
    gone = await run_command(env, "service list", NOBODY)
    assert "You own no service users" in gone.text_content()


def service_id(env: Running) -> int:
    [service] = services.list_service_users(env.db, ORG, ALICE, admin=True, now=env.deps.clock())
    return service.id


async def test_removing_the_last_owner_is_refused_on_the_form_and_nothing_changes(
    env: Running,
) -> None:
    await approved(env)
    listing = await run_command(env, "service list", ALICE)
    modal = await open_owner_modal(env, listing, "remove_service_owner", ALICE)
    response = await choose(env, modal, ALICE, ALICE)
    assert response.json() == {
        "response_action": "errors",
        "errors": {
            "owner": "That member is the only owner of ci-deployer, and a service user keeps "
            "at least one: add another owner first."
        },
    }
    assert owners(env) == [ALICE] and owner_events(env) == []


async def test_adding_an_owner_twice_or_removing_a_non_owner_is_said_on_the_form(
    env: Running,
) -> None:
    await approved(env)
    listing = await run_command(env, "service list", ALICE)
    add = await open_owner_modal(env, listing, "add_service_owner", ALICE)
    again = await choose(env, add, ALICE, ALICE)
    assert again.json()["errors"] == {"owner": "That member already owns ci-deployer."}
    remove = await open_owner_modal(env, listing, "remove_service_owner", ALICE)
    stranger = await choose(env, remove, ALICE, NOBODY)
    assert stranger.json()["errors"] == {"owner": "That member does not own ci-deployer."}
    assert owners(env) == [ALICE] and owner_events(env) == []


async def test_someone_neither_owner_nor_admin_is_refused_and_nothing_changes(
    env: Running,
) -> None:
    await approved(env)
    listing = await run_command(env, "service list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "add_service_owner", NOBODY)  # a forged click
    refused = await env.standin.wait_for("response_url", after=mark)
    assert "You can change the owners only of service users you own." in refused.text_content()
    assert "ci-deployer" not in refused.text_content()  # their own list, which is empty
    assert not [c for c in env.standin.calls[mark:] if c.method == "views.open"]
    # The modal Alice opened, submitted by someone else: refused on the form.
    modal = await open_owner_modal(env, listing, "add_service_owner", ALICE)
    forged = await choose(env, modal, NOBODY, NOBODY)
    assert forged.json()["errors"] == {
        "owner": "You can change the owners only of service users you own."
    }
    assert owners(env) == [ALICE] and owner_events(env) == []


async def test_an_admin_changes_the_owners_of_a_service_user_they_do_not_own(
    env: Running,
) -> None:
    await approved(env)
    listing = await run_command(env, "service list", CAROL)  # an admin: every service user
    modal = await open_owner_modal(env, listing, "add_service_owner", CAROL)
    mark = len(env.standin.calls)
    await choose(env, modal, CAROL, NOBODY)
    redrawn = await env.standin.wait_for("response_url", after=mark)
    assert "*All service users* (1)" in redrawn.text_content()
    assert owners(env) == [ALICE, NOBODY]
    assert owner_events(env)[0][:2] == ("service_user.owner_added", CAROL)


async def alice_leaves(env: Running) -> list[Call]:
    """Alice, ci-deployer's only owner, is deactivated: the reports Bob and Carol get."""
    await approved(env)
    mark = len(env.standin.calls)
    gone = envelope("user_change__deleted_true__envelope__DERIVED.json", ALICE, "x")
    await deliver(env, gone, "EvALICEGONE")
    return [
        await env.standin.wait_for(
            "chat.postMessage", lambda c, ch=ch: c.args.get("channel") == ch, after=mark
        )
        for ch in ("D0BOB", "D0CAROL")
    ]


async def test_an_admin_takes_over_a_service_user_from_the_report(env: Running) -> None:
    to_bob, to_carol = await alice_leaves(env)
    assert buttons(to_bob) == ["Take over"] and owners(env) == []
    mark = len(env.standin.calls)
    await env.slack.click(to_bob, "take_over_service_user", BOB)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert answer.args["response_type"] == "ephemeral"
    assert "You now own *ci-deployer*" in answer.text_content()
    assert owners(env) == [BOB]
    assert owner_events(env) == [("service_user.taken_over", BOB, {"service_user": "ci-deployer"})]
    mine = await run_command(env, "service list", BOB)
    assert f"owners: <@{BOB}>" in mine.text_content()
    # Carol's copy of the report, clicked later: nothing left to take over.
    mark = len(env.standin.calls)
    await env.slack.click(to_carol, "take_over_service_user", CAROL)
    late = await env.standin.wait_for("response_url", after=mark)
    assert "ci-deployer has an active owner now" in late.text_content()
    assert owners(env) == [BOB] and len(owner_events(env)) == 1


async def test_someone_not_an_admin_cannot_take_over_and_nothing_changes(env: Running) -> None:
    to_bob, _ = await alice_leaves(env)
    mark = len(env.standin.calls)
    await env.slack.click(to_bob, "take_over_service_user", NOBODY)  # a forged click
    refused = await env.standin.wait_for("response_url", after=mark)
    assert "Only workspace admins and owners can take over a service user." in (
        refused.text_content()
    )
    assert owners(env) == [] and owner_events(env) == []


async def test_only_an_active_person_of_the_workspace_can_be_made_an_owner(env: Running) -> None:
    await approved(env)
    env.standin.add_user("U0ROBOT", "robot")
    env.standin.users["U0ROBOT"]["is_bot"] = True
    env.standin.add_user("U0VISITOR", "visitor", is_restricted=True)
    listing = await run_command(env, "service list", ALICE)
    modal = await open_owner_modal(env, listing, "add_service_owner", ALICE)
    # A forged choice, not a user id; a user Slack does not know; a bot; a guest.
    for member in ("UFAKE>|x", "U0NOSUCHONE", "U0ROBOT", "U0VISITOR"):
        response = await choose(env, modal, ALICE, member)
        errors = response.json()["errors"]
        assert list(errors) == ["owner"], (member, errors)
    assert owners(env) == [ALICE]
    assert owner_events(env) == []
