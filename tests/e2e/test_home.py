"""The App Home tab: the member's tokens with cutoffs, Generate and Revoke buttons, their
pending requests, the approvers' queue and an admin's figures, published when opened and
again after a change that alters it."""

from __future__ import annotations

import json

from bot.standin.harness import Running
from bot.standin.server import Call
from storage import approvals, audit, tokenformat, tokens
from tests.conftest import FIXTURES
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import generate, settled, until_valid
from tests.e2e.test_service_requests import CAROL, GUEST, admins, requested

ORG = "T0TOKENBOT"


async def open_home(env: Running, user: str, tab: str = "home") -> None:
    """Slack's own app_home_opened envelope, addressed to ``user`` in our workspace."""
    fixture = json.loads(
        (FIXTURES / "app_home_opened__envelope_with_view__slack_go_fixture.json").read_text()
    )
    event = {**fixture["event"], "user": user, "tab": tab}
    response = await env.slack.event(event, event_id=f"Ev{len(env.standin.calls)}")
    assert response.status_code == 200


async def home_view_id(env: Running, user: str) -> str:
    """Open the Home tab and return the id of the view the app published."""
    mark = len(env.standin.calls)
    await open_home(env, user)
    published = await env.standin.wait_for("views.publish", after=mark)
    return str(published.result["view"]["id"])


async def test_opening_home_publishes_the_members_tokens(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    mark = len(env.standin.calls)
    await open_home(env, ALICE)
    published = await env.standin.wait_for("views.publish", after=mark)
    assert published.args["user_id"] == ALICE
    view = published.view
    content = json.dumps(view)
    assert view["type"] == "home"
    assert "*ci*" in content and "expires if unused by" in content and secret not in content


async def test_the_messages_tab_publishes_nothing(env: Running) -> None:
    mark = len(env.standin.calls)
    await open_home(env, ALICE, tab="messages")
    await open_home(env, ALICE)  # a later event that does publish, to wait on
    await env.standin.wait_for("views.publish", after=mark)
    assert len(env.standin.calls_to("views.publish")) == 1


async def test_revoke_on_home_revokes_and_refreshes_home(env: Running) -> None:
    await generate(env, ALICE, "ci")
    view_id = await home_view_id(env, ALICE)
    mark = len(env.standin.calls)
    await env.slack.click_in_view(view_id, "revoke_token", ALICE)
    refreshed = await env.standin.wait_for(
        "views.publish", lambda c: "Revoked" in c.text_content(), after=mark
    )
    assert "Revoked *ci*" in refreshed.text_content()
    assert tokens.list_user_tokens(env.db, ORG, ALICE, env.deps.clock()).tokens == []


async def test_generate_from_home_delivers_the_token_in_the_dm_ephemerally(env: Running) -> None:
    view_id = await home_view_id(env, ALICE)
    mark = len(env.standin.calls)
    await env.slack.click_in_view(view_id, "open_generate", ALICE)
    opened = await env.standin.wait_for("views.open", after=mark)
    await env.slack.submit_view(opened.result["view"]["id"], ALICE, {"token_name": {"name": "x"}})
    shown = await env.standin.wait_for("chat.postEphemeral", after=mark)
    assert shown.args["channel"].startswith("D") and shown.args["user"] == ALICE
    secrets = tokenformat.TOKEN_PATTERN.findall(shown.text_content())
    assert len(secrets) == 1 and tokenformat.has_valid_checksum(secrets[0])


async def test_generate_from_home_at_the_cap_explains_on_home(env: Running) -> None:
    for n in range(10):
        await generate(env, ALICE, f"t{n}")
    view_id = await home_view_id(env, ALICE)
    mark = len(env.standin.calls)
    await env.slack.click_in_view(view_id, "open_generate", ALICE)
    refreshed = await env.standin.wait_for("views.publish", after=mark)
    assert "the limit is 10" in refreshed.text_content()
    assert not [c for c in env.standin.calls[mark:] if c.method == "views.open"]


def home_of(env: Running, user: str) -> Call:
    """The latest Home tab published for ``user``."""
    return [c for c in env.standin.calls_to("views.publish") if c.args["user_id"] == user][-1]


async def homes_opened(env: Running) -> None:
    """Alice, Bob and Carol (both admins, approvers) each have the Home tab open."""
    admins(env)
    for user in (ALICE, BOB, CAROL):
        await home_view_id(env, user)


async def test_a_tab_never_opened_is_not_published_after_a_change(env: Running) -> None:
    await generate(env, ALICE, "ci")
    await requested(env)
    await settled(env)
    assert env.standin.calls_to("views.publish") == []


async def test_a_new_token_is_on_the_members_home_tab_without_opening_it_again(
    env: Running,
) -> None:
    await home_view_id(env, ALICE)  # opened once, before
    secret = await generate(env, ALICE, "ci")
    published = home_of(env, ALICE)
    assert "*ci*" in published.text_content() and secret not in published.text_content()


async def test_the_requester_sees_their_pending_request_and_cancels_it_on_home(
    env: Running,
) -> None:
    await homes_opened(env)
    await requested(env)
    view = home_of(env, ALICE)  # published again by the request
    assert "*Your pending requests*" in view.text_content()
    mark = len(env.standin.calls)
    await env.slack.click_in_view(view.result["view"]["id"], "cancel_request", ALICE)
    refreshed = await env.standin.wait_for(
        "views.publish", lambda c: c.args["user_id"] == ALICE, after=mark
    )
    assert "Cancelled your request for *ci-deployer*" in refreshed.text_content()
    assert "*Your pending requests*" not in refreshed.text_content()
    assert approvals.pending_requests(env.db, ORG) == []
    await settled(env)
    # The approvers' queues no longer show it.
    for approver in (BOB, CAROL):
        assert "Waiting for your decision" not in home_of(env, approver).text_content()


async def test_an_approver_decides_from_the_queue_on_home(env: Running) -> None:
    await homes_opened(env)
    await requested(env)
    queue = home_of(env, BOB)
    assert "*Waiting for your decision*" in queue.text_content()
    assert "ci-deployer" in queue.text_content()
    mark = len(env.standin.calls)
    await env.slack.click_in_view(queue.result["view"]["id"], "approve_request", BOB)
    shown = await env.standin.wait_for(
        "response_url", lambda c: "tbs_" in c.text_content(), after=mark
    )
    await until_valid(env, tokenformat.TOKEN_PATTERN.findall(shown.text_content())[0])
    await settled(env)
    assert "Waiting for your decision" not in home_of(env, BOB).text_content()
    assert "Waiting for your decision" not in home_of(env, CAROL).text_content()
    [event] = [e for e in audit.events(env.db, ORG) if e.action == "approval.approved"]
    assert event.actor == BOB


async def test_someone_who_may_not_decide_is_refused_on_home_and_nothing_changes(
    env: Running,
) -> None:
    await homes_opened(env)
    await requested(env)
    queue = home_of(env, BOB)
    mark = len(env.standin.calls)
    await env.slack.click_in_view(queue.result["view"]["id"], "approve_request", GUEST)
    refused = await env.standin.wait_for(
        "views.publish", lambda c: c.args["user_id"] == GUEST, after=mark
    )
    assert "Guests cannot decide on requests." in refused.text_content()
    assert [r.name for r in approvals.pending_requests(env.db, ORG)] == ["ci-deployer"]


async def test_an_admin_sees_the_organizations_figures_and_a_member_does_not(
    env: Running,
) -> None:
    env.standin.users[BOB]["is_admin"] = True
    await generate(env, ALICE, "ci")
    mark = len(env.standin.calls)
    await open_home(env, BOB)
    admin = await env.standin.wait_for("views.publish", after=mark)
    assert "*Your organization*" in admin.text_content()
    assert "*Seats* (members holding an active personal token): 1" in admin.text_content()
    mark = len(env.standin.calls)
    await open_home(env, ALICE)
    member = await env.standin.wait_for("views.publish", after=mark)
    assert "Seats" not in member.text_content()
