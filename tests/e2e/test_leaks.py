"""Leak response (R19): a token pasted in a message the app can see is revoked at once,
its owners are told by DM with a link to the message, and whoever pasted it is asked to
delete it. Nothing anyone is sent, nor any log line or audit event, shows the token."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from bot.jobs import sweep_and_deliver
from bot.standin.harness import Running, running_tokenbot
from bot.standin.server import BOT_USER_ID, Call
from storage import audit, leaks, tokenformat, tokens
from storage.models import SlackEvent
from storage.tokenformat import TokenKind
from tests.conftest import FIXTURES
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import eventually, generate, run_command
from tests.e2e.test_service_users import approved, introspect

ORG = "T0TOKENBOT"
GENERAL = "C0GENERAL"
_ts = itertools.count(1)


def new_ts() -> str:
    return f"1700000000.{next(_ts):06d}"


def message(text: str, user: str, channel: str = GENERAL, channel_type: str = "channel") -> dict:
    """A new message as Slack's Events API delivers it (the event of Bolt's own fixture),
    posted by ``user`` in ``channel`` of our workspace."""
    event = json.loads((FIXTURES / "message__channel__bolt_python_fixture.json").read_text())[
        "event"
    ]
    ts = new_ts()
    event.update(text=text, user=user, team=ORG, channel=channel, channel_type=channel_type, ts=ts)
    event["event_ts"] = ts
    event["blocks"][0]["elements"][0]["elements"][0]["text"] = text
    return event


def edited(text: str, user: str, before: str = "see the README") -> dict:
    """A ``message_changed`` event (Bolt's fixture): ``user``'s message now reads ``text``."""
    event = json.loads((FIXTURES / "message_changed__bolt_python_fixture.json").read_text())[
        "event"
    ]
    posted, now = new_ts(), new_ts()
    for key, words in (("message", text), ("previous_message", before)):
        event[key].update(text=words, user=user, team=ORG)
        event[key]["blocks"][0]["elements"][0]["elements"][0]["text"] = words
    event["message"]["ts"] = event["previous_message"]["ts"] = posted
    event["message"]["edited"] = {"user": user, "ts": now}
    event.update(channel=GENERAL, ts=now, event_ts=now)
    return event


_event_ids = itertools.count(1)


async def send(env: Running, event: dict, event_id: str | None = None, retry: int | None = None):
    response = await env.slack.event(
        event, event_id=event_id or f"EvLEAK{next(_event_ids)}", retry_num=retry
    )
    assert response.status_code == 200, response.text
    return response


def dms(env: Running, channel: str, after: int = 0) -> list[Call]:
    return [
        c
        for c in env.standin.calls[after:]
        if c.method == "chat.postMessage" and c.args.get("channel") == channel
    ]


def leaked_events(env: Running) -> list[audit.AuditEvent]:
    return [e for e in audit.events(env.db, ORG) if e.action == "token.leaked"]


def handled(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The leak listener's word on each message it looked up tokens for."""
    return [r.getMessage() for r in caplog.records if r.name == "bot.listeners.leaks"]


async def test_a_pasted_token_is_revoked_at_once_its_owner_dmed_once_and_the_poster_told(
    env: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = await generate(env, ALICE, "ci-deploy")
    assert (await introspect(env, secret))["active"] is True
    mark = len(env.standin.calls)
    event = message(f"here, use mine: {secret}", BOB)
    await send(env, event)
    note = await env.standin.wait_for("chat.postEphemeral", after=mark)
    assert (note.args["channel"], note.args["user"]) == (GENERAL, BOB)
    assert tokenformat.hint(secret) in note.text_content()
    assert "delete your message" in note.text_content()
    dm = await env.standin.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    text = dm.text_content()
    permalink = f"https://demo.slack.invalid/archives/{GENERAL}/p{event['ts'].replace('.', '')}"
    assert f"<{permalink}|a message>" in text and f"<#{GENERAL}>" in text
    assert "*ci-deploy*" in text and tokenformat.hint(secret) in text
    assert "by <@U0BOB>" in text and "/token new" in text
    assert await introspect(env, secret) == {"active": False}
    [leak] = leaked_events(env)
    assert leak.actor == BOB
    assert (leak.detail["channel"], leak.detail["ts"]) == (GENERAL, event["ts"])
    assert leak.detail["hint"] == tokenformat.hint(secret) and leak.detail["reason"] == "leaked"
    assert audit.verify_chain(env.db, ORG)
    # Sent once: the sweep after it finds nothing owed.
    await sweep_and_deliver(env.deps, env.slack_app_client)
    assert len(dms(env, "D0ALICE", mark)) == 1
    assert "ci-deploy" not in (await run_command(env, "list", ALICE)).text_content()
    # The token itself is in nothing the app sent, logged or recorded.
    sent = [c for c in env.standin.calls[mark:] if c.method != "auth.test"]
    assert sent and all(secret not in c.text_content() for c in sent)
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert handled(caplog) and secret not in logged
    assert secret not in "\n".join(audit.export_jsonl(env.db, ORG))


async def test_an_edited_message_that_now_shows_a_token_counts(env: Running) -> None:
    secret = await generate(env, ALICE, "laptop")
    mark = len(env.standin.calls)
    event = edited(f"oops, it is `{secret}`", ALICE)
    await send(env, event)
    note = await env.standin.wait_for("chat.postEphemeral", after=mark)
    assert note.args["user"] == ALICE
    dm = await env.standin.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    # The link is to the message as it was posted, not to the edit.
    posted = event["message"]["ts"].replace(".", "")
    assert f"/archives/{GENERAL}/p{posted}|" in dm.text_content()
    assert await introspect(env, secret) == {"active": False}
    assert [e.actor for e in leaked_events(env)] == [ALICE]


async def test_a_pasted_service_token_is_revoked_and_its_owners_are_told(env: Running) -> None:
    secret = await approved(env)  # ci-deployer, owned by Alice
    mark = len(env.standin.calls)
    await send(env, message(f"CI_TOKEN={secret}", BOB))
    dm = await env.standin.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    text = dm.text_content()
    assert "of the service user *ci-deployer*" in text and "/token service request" in text
    assert tokenformat.hint(secret) in text and secret not in text
    note = await env.standin.wait_for("chat.postEphemeral", after=mark)
    assert note.args["user"] == BOB
    assert await introspect(env, secret) == {"active": False}
    assert [(e.actor, e.detail["kind"]) for e in leaked_events(env)] == [(BOB, "service")]


async def test_when_slack_gives_no_permalink_the_dm_names_the_channel(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    env.standin.fail_next("chat.getPermalink", error="message_not_found")
    mark = len(env.standin.calls)
    await send(env, message(secret, ALICE))
    dm = await env.standin.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    assert f"pasted in a message in <#{GENERAL}>" in dm.text_content()
    assert "archives" not in dm.text_content()


async def test_in_the_apps_dm_the_poster_gets_an_ordinary_message(env: Running) -> None:
    secret = await generate(env, ALICE, "ci")
    mark = len(env.standin.calls)
    await send(env, message(f"is this right? {secret}", ALICE, "D0ALICE", "im"))
    notes = await env.standin.wait_for_count(
        "chat.postMessage", 2, lambda c: c.args.get("channel") == "D0ALICE", after=mark
    )
    texts = [c.text_content() for c in notes]
    assert any("your message above" in t for t in texts)  # the note, where she pasted it
    assert any("in a direct message with the app" in t for t in texts)  # the owner's DM
    assert not env.standin.calls_to("chat.postEphemeral")
    assert await introspect(env, secret) == {"active": False}


async def test_a_lookalike_with_a_bad_checksum_is_never_looked_up_and_changes_nothing(
    env: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = await generate(env, ALICE, "ci")
    asked: list[list[str]] = []
    revoke = leaks.revoke_leaked

    def spy(db: Any, org: str, secrets: list[str], *rest: Any) -> Any:
        asked.append(list(secrets))
        return revoke(db, org, secrets, *rest)

    monkeypatch.setattr(leaks, "revoke_leaked", spy)
    lookalike = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert tokenformat.TOKEN_PATTERN.fullmatch(lookalike)  # the shape, not the checksum
    mark = len(env.standin.calls)
    await send(env, message(f"a test string: {lookalike}", BOB), event_id="EvLOOKALIKE")
    # A later message with a real token, to wait on; the look-alike in it is skipped too.
    await send(env, message(f"{lookalike} and {secret}", BOB), event_id="EvREAL")
    await env.standin.wait_for("chat.postMessage", after=mark)
    assert asked == [[secret]]
    assert len(env.standin.calls_to("chat.postEphemeral")) == 1
    assert [e.actor for e in leaked_events(env)] == [BOB]
    with env.db.read() as session:  # the look-alike's event was not even recorded
        seen = session.execute(sa.select(SlackEvent.event_id)).scalars().all()
    assert "EvLOOKALIKE" not in seen and "EvREAL" in seen


async def test_a_revoked_foreign_or_unknown_token_pasted_is_ignored_quietly(
    env: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    revoked = await generate(env, ALICE, "old")
    [info] = tokens.list_user_tokens(env.db, ORG, ALICE, env.deps.clock()).tokens
    tokens.revoke_token(env.db, ORG, ALICE, info.id, env.deps.clock())
    other = tokens.issue_user_token(env.db, "T0OTHER", ALICE, "elsewhere", env.deps.clock())
    tokens.mark_delivered(env.db, "T0OTHER", other.info.id, env.deps.clock(), "test")
    unknown = tokenformat.mint(TokenKind.USER)
    before = audit.events(env.db, ORG)
    mark = len(env.standin.calls)
    for text in (revoked, other.secret, unknown):
        await send(env, message(f"token: {text}", BOB))
    await eventually(lambda: handled(caplog), lambda words: len(words) == 3)
    assert all(w.endswith("shows 1 token(s); 0 revoked now") for w in handled(caplog))
    assert [c.method for c in env.standin.calls[mark:] if c.method != "auth.test"] == []
    assert audit.events(env.db, ORG) == before
    assert tokens.list_user_tokens(env.db, "T0OTHER", ALICE, env.deps.clock()).tokens


async def test_a_repeated_delivery_of_the_message_has_no_second_effect(
    env: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = await generate(env, ALICE, "first")
    second = await generate(env, ALICE, "second")
    mark = len(env.standin.calls)
    event = message(first, BOB)
    await send(env, event, event_id="EvONCE")
    await env.standin.wait_for("chat.postMessage", after=mark)
    await send(env, event, event_id="EvONCE", retry=1)  # Slack sends it again
    await send(env, message(second, BOB))  # a later message to wait on
    await env.standin.wait_for_count("chat.postMessage", 2, after=mark)
    await eventually(lambda: handled(caplog), lambda words: len(words) >= 2)
    assert len(handled(caplog)) == 2  # the repeat never reached the listener
    assert len(env.standin.calls_to("chat.postEphemeral")) == 2
    assert [e.detail["name"] for e in leaked_events(env)] == ["first", "second"]


async def test_two_replicas_seeing_the_same_message_revoke_once_and_dm_once(
    env: Running, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    secret = await generate(env, ALICE, "ci")
    async with running_tokenbot(database_url, migrate=False) as replica:
        replica.standin.add_user(ALICE, "alice")
        event = message(f"deploy with {secret}", BOB)
        # Slack sends each replica's copy under an event id of its own, at once.
        await asyncio.gather(
            send(env, copy.deepcopy(event), event_id="EvREPLICA1"),
            send(replica, copy.deepcopy(event), event_id="EvREPLICA2"),
        )
        await eventually(lambda: handled(caplog), lambda words: len(words) == 2)
        assert sorted(w.rsplit(";", 1)[1] for w in handled(caplog)) == [
            " 0 revoked now",
            " 1 revoked now",
        ]

        def owner_dms() -> list[Call]:
            calls = env.standin.calls + replica.standin.calls
            return [
                c
                for c in calls
                if c.method == "chat.postMessage" and c.args["channel"] == "D0ALICE"
            ]

        # The replica that revoked sends the DM just after its note to the poster.
        await eventually(owner_dms, lambda found: len(found) > 0)
        calls = env.standin.calls + replica.standin.calls
    assert len(leaked_events(env)) == 1
    assert len([c for c in calls if c.method == "chat.postEphemeral"]) == 1
    assert len(owner_dms()) == 1
    await sweep_and_deliver(env.deps, env.slack_app_client)  # nothing left owed
    assert len(dms(env, "D0ALICE")) + len(dms(replica, "D0ALICE")) == 1


async def test_the_apps_own_messages_and_other_bots_are_not_read(env: Running) -> None:
    own, bots, person = [await generate(env, ALICE, name) for name in ("own", "bot", "person")]
    mine = message(f"your token {own}", BOT_USER_ID)
    mine["bot_id"] = "B0BOT"  # as Slack marks the app's own messages
    other = json.loads((FIXTURES / "message__bot_message__bolt_python_fixture.json").read_text())
    other = other["event"] | {"text": f"deploy {bots}", "channel": GENERAL, "team": ORG}
    mark = len(env.standin.calls)
    await send(env, mine)
    await send(env, other)
    await send(env, message(person, BOB))  # a person's message, to wait on
    await env.standin.wait_for("chat.postMessage", after=mark)
    assert [e.detail["name"] for e in leaked_events(env)] == ["person"]
    assert (await introspect(env, own))["active"] is True
    assert (await introspect(env, bots))["active"] is True
