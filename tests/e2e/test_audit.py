"""`/token audit [n]` for admins (R27): the last events, newest first, paged with Older
and Newer; refused to everyone else, buttons included."""

from __future__ import annotations

import re

from bot.standin.harness import Running
from bot.standin.server import Call
from storage import audit, tokens
from tests.conftest import shown
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import generate, run_command

ORG = "T0TOKENBOT"
ONLY_ADMINS = "Only workspace admins and owners can see the audit log."
LINE = re.compile(r"^<!date\^\d+\^[^|]*\|[^>]*> · ")


def make_admin(env: Running) -> None:
    env.standin.users[BOB]["is_admin"] = True


def seven_events(env: Running) -> list[int]:
    """Alice's tokens t0, t1, t2 issued and delivered, and t0 revoked: 7 events, their
    ids oldest first."""
    now = env.deps.clock()
    issued = [
        shown(env.db, ORG, tokens.issue_user_token(env.db, ORG, ALICE, f"t{n}", now), now)
        for n in range(3)
    ]
    tokens.revoke_token(env.db, ORG, ALICE, issued[0].info.id, now)
    return [e.id for e in audit.events(env.db, ORG) if e.id is not None]


def lines(message: Call) -> list[str]:
    """The event lines of an audit page, in order."""
    found = []
    for block in message.blocks:
        if block["type"] == "section":
            found += [line for line in block["text"]["text"].splitlines() if LINE.match(line)]
    return found


def page_buttons(message: Call) -> dict[str, str]:
    return {
        e["text"]["text"]: e["value"]
        for b in message.blocks
        if b["type"] == "actions"
        for e in b["elements"]
    }


async def test_the_last_events_newest_first_say_who_did_what_to_what(env: Running) -> None:
    make_admin(env)
    await generate(env, ALICE, "ci-deploy")
    page = await run_command(env, "audit", BOB)
    assert page.method == "ack" and page.args["response_type"] == "ephemeral"
    text = page.text_content()
    assert "*Audit log*, newest first: events 1 to 2 of 2" in text
    delivered, issued = lines(page)
    token = tokens.find_user_token(env.db, ORG, ALICE, "ci-deploy", env.deps.clock())
    assert delivered.endswith(
        f"· system delivered *ci-deploy* (`{token.hint}`) to its owner · `token:{token.id}`"
    )
    assert issued.endswith(
        f"· <@{ALICE}> issued user token *ci-deploy* (`{token.hint}`) · `token:{token.id}`"
    )
    assert page_buttons(page) == {}  # one page holds it all


async def test_older_and_newer_page_through_the_log(env: Running) -> None:
    make_admin(env)
    ids = seven_events(env)
    first = await run_command(env, "audit 3", BOB)
    assert "events 1 to 3 of 7" in first.text_content()
    assert "revoked *t0*" in lines(first)[0] and len(lines(first)) == 3
    assert page_buttons(first) == {"Older": f"3:{ids[4]}"}
    mark = len(env.standin.calls)
    await env.slack.click(first, "audit_older", BOB)
    second = await env.standin.wait_for("response_url", after=mark)
    assert second.args["replace_original"] is True
    assert "events 4 to 6 of 7" in second.text_content()
    assert page_buttons(second) == {"Newer": f"3:{ids[3]}", "Older": f"3:{ids[1]}"}
    mark = len(env.standin.calls)
    await env.slack.click(second, "audit_older", BOB)
    third = await env.standin.wait_for("response_url", after=mark)
    assert "events 7 to 7 of 7" in third.text_content() and len(lines(third)) == 1
    assert "issued user token *t0*" in lines(third)[0]
    assert page_buttons(third) == {"Newer": f"3:{ids[0]}"}
    mark = len(env.standin.calls)
    await env.slack.click(third, "audit_newer", BOB)
    back = await env.standin.wait_for("response_url", after=mark)
    assert lines(back) == lines(second)


async def test_a_page_stays_put_while_new_events_arrive(env: Running) -> None:
    make_admin(env)
    ids = seven_events(env)
    first = await run_command(env, "audit 3", BOB)
    await generate(env, ALICE, "later")  # two more events, newer than the page
    mark = len(env.standin.calls)
    await env.slack.click(first, "audit_older", BOB)
    second = await env.standin.wait_for("response_url", after=mark)
    assert "events 6 to 8 of 9" in second.text_content()
    assert page_buttons(second)["Older"] == f"3:{ids[1]}"


async def test_a_member_who_is_not_an_admin_is_refused_the_log_and_its_buttons(
    env: Running,
) -> None:
    make_admin(env)
    seven_events(env)
    refused = await run_command(env, "audit", ALICE)
    assert ONLY_ADMINS in refused.text_content() and lines(refused) == []
    page = await run_command(env, "audit 3", BOB)
    mark = len(env.standin.calls)
    await env.slack.click(page, "audit_older", ALICE)  # a forged click
    answer = await env.standin.wait_for("response_url", after=mark)
    assert ONLY_ADMINS in answer.text_content() and lines(answer) == []


async def test_a_count_that_is_not_1_to_100_gets_a_clear_answer(env: Running) -> None:
    make_admin(env)
    seven_events(env)
    for text in ("audit 0", "audit 101", "audit lots", "audit -3", "audit 2 3"):
        answer = await run_command(env, text, BOB)
        said = answer.text_content()
        assert "Say how many events to show, from 1 to 100: `/token audit 50`" in said, text
        assert lines(answer) == []
    assert len(lines(await run_command(env, "audit 100", BOB))) == 7


async def test_a_tampered_page_button_is_answered_plainly(env: Running) -> None:
    make_admin(env)
    seven_events(env)
    page = await run_command(env, "audit 3", BOB)
    blocks = page.blocks
    blocks[-1]["elements"][0]["value"] = "500:1"
    page.args["blocks"] = blocks
    mark = len(env.standin.calls)
    await env.slack.click(page, "audit_older", BOB)
    answer = await env.standin.wait_for("response_url", after=mark)
    assert "out of date" in answer.text_content() and lines(answer) == []


async def test_100_events_of_the_longest_names_fit_in_one_message_escaped(env: Running) -> None:
    """The stand-in refuses what Slack refuses (the env fixture checks nothing was)."""
    make_admin(env)
    now = env.deps.clock()
    for n in range(50):
        name = f"<!here>*{n:02d}" + "&" * 54  # 64 characters, most escaping to 5
        shown(env.db, ORG, tokens.issue_user_token(env.db, ORG, f"U0M{n:02d}", name, now), now)
    page = await run_command(env, "audit 100", BOB)
    assert len(lines(page)) == 100 and len(page.blocks) <= 50
    text = page.text_content()
    assert "<!here>" not in text and "&lt;!here&gt;" in text
    assert all(len(b["text"]["text"]) <= 3000 for b in page.blocks if b["type"] == "section")
