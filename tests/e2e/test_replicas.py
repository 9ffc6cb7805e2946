"""Validation results are cached per process; what invalidates a token reaches every
replica: the one that made the change at once, the others as soon as they hear of it
(PostgreSQL) or within a refresh (1 s). And three ``tokenbot serve`` processes on one
PostgreSQL database behave as one."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import cast

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa

from bot.deps import utcnow
from bot.standin.client import SlackClient, http_client
from bot.standin.harness import RESOURCE_SERVER, SIGNING_SECRET, Clock, Running, running_tokenbot
from bot.standin.server import Call, SlackStandin
from storage import tokenformat, tokens
from storage.db import Database
from storage.models import Member, Token
from tests.conftest import TEST_DATABASE_URL
from tests.e2e.conftest import ALICE, BOB
from tests.e2e.flows import eventually, eventually_async, generate, run_command
from tests.e2e.test_deploys import ORG, Server, introspect, tokenbot_serve
from tests.e2e.test_service_requests import GOOD, submit_request

GATEWAY = httpx.BasicAuth(*RESOURCE_SERVER)


async def active(env: Running, secret: str) -> bool:
    async with http_client(base_url=env.url, auth=GATEWAY) as http:
        response = await http.post("/api/v1/introspect", data={"token": secret})
    return bool(response.json()["active"])


async def test_a_revocation_in_slack_is_refused_at_once_by_the_same_process(
    env: Running,
) -> None:
    secret = await generate(env, ALICE, "ci")
    assert await active(env, secret)  # now cached
    listing = await run_command(env, "list", ALICE)
    mark = len(env.standin.calls)
    await env.slack.click(listing, "revoke_token", ALICE)
    await env.standin.wait_for("response_url", after=mark)
    assert not await active(env, secret)


async def test_another_replica_refuses_a_revoked_token_after_its_refresh(
    env: Running, database_url: str
) -> None:
    secret = await generate(env, ALICE, "ci")
    async with running_tokenbot(database_url, migrate=False) as replica:
        replica.standin.add_user(ALICE, "alice")
        assert await active(replica, secret)  # cached by the replica
        [token] = tokens.list_user_tokens(env.db, "T0TOKENBOT", ALICE, env.deps.clock()).tokens
        tokens.revoke_token(env.db, "T0TOKENBOT", ALICE, token.id, env.deps.clock())
        assert not await active(env, secret)  # where it was revoked: at once
        replica.db.refresh_generation()  # what the replica's scheduler does every second
        assert not await active(replica, secret)


async def test_a_use_seen_by_one_replica_keeps_the_token_valid_on_another(
    env: Running, database_url: str
) -> None:
    clock = env.deps.clock = Clock()
    secret = await generate(env, ALICE, "ci")
    async with running_tokenbot(database_url, clock=clock, migrate=False) as replica:
        replica.standin.add_user(ALICE, "alice")
        assert await active(replica, secret)  # cached there with a cutoff 30 days out
        clock.advance(timedelta(days=20))
        assert await active(env, secret)  # a use on the first replica: cutoff + 20 days
        clock.advance(timedelta(days=11))  # past the cutoff the replica had cached
        assert await active(replica, secret)


# -- three `tokenbot serve` processes on one PostgreSQL database ----------------------------

postgres_only = pytest.mark.skipif(
    not TEST_DATABASE_URL,
    reason="replicas share one PostgreSQL database (SQLite allows one writer process)",
)
CAROL, DAVE, ERIN, FRANK = "U0CAROL", "U0DAVE", "U0ERIN", "U0FRANK"
# What the revocation test holds a replica to: SPEC §7 asks 100 ms of PostgreSQL, which
# bench/replicas.py measures; this leaves room for a loaded test machine, and is still
# well under the 1 s poll that would otherwise be the bound.
REVOCATION_BOUND = 0.5


@dataclass
class Cluster:
    """Three replicas, the Slack stand-in they share, and a signed client for each."""

    database_url: str
    standin: SlackStandin
    logs: Path
    servers: list[Server]
    slacks: list[SlackClient]
    stack: contextlib.ExitStack

    def start(self, n: int) -> None:
        server = self.stack.enter_context(
            tokenbot_serve(
                self.database_url, self.standin, self.logs / f"replica-{n}.log", sweep_interval=5
            )
        )
        slack = SlackClient(server.url, SIGNING_SECRET, self.standin)
        if n < len(self.servers):  # in place of one that stopped
            self.servers[n], self.slacks[n] = server, slack
        else:
            self.servers.append(server)
            self.slacks.append(slack)

    async def all_up(self) -> None:
        """Every replica running and ready (one a test stopped is started again)."""
        for n, server in enumerate(self.servers):
            if server.process.poll() is not None:
                await self.slacks[n].aclose()
                self.start(n)
        await asyncio.gather(*(server.ready() for server in self.servers))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    if not TEST_DATABASE_URL:
        pytest.skip("replicas share one PostgreSQL database (SQLite allows one writer process)")
    standin = SlackStandin()
    standin.add_user(ALICE, "alice")
    standin.add_user(BOB, "bob", is_admin=True)
    standin.add_user(CAROL, "carol", is_admin=True)
    for user, name in ((DAVE, "dave"), (ERIN, "erin"), (FRANK, "frank")):
        standin.add_user(user, name)
    async with standin.running():
        with contextlib.ExitStack() as stack:
            logs = tmp_path_factory.mktemp("replicas")
            running = Cluster(module_database_url, standin, logs, [], [], stack)
            for n in range(3):
                running.start(n)
            try:
                await running.all_up()
                yield running
            finally:
                await asyncio.gather(*(slack.aclose() for slack in running.slacks))


async def open_modals(cluster: Cluster, user: str, count: int) -> list[str]:
    """``/token new`` ``count`` times, round-robin over the replicas: the views' ids."""
    views = []
    for n in range(count):
        mark = len(cluster.standin.calls)
        answer = await cluster.slacks[n % 3].command("/token", "new", user)
        assert answer.status_code == 200
        opened = await cluster.standin.wait_for("views.open", after=mark, timeout=10)
        views.append(str(opened.result["view"]["id"]))
    return views


async def submit(cluster: Cluster, n: int, view: str, user: str, name: str) -> bool:
    """Submit a Generate modal to replica ``n``: whether it was accepted (a refusal is an
    answer with errors; a replica that is stopping may not answer at all)."""
    try:
        answer = await cluster.slacks[n % 3].submit_view(view, user, {"token_name": {"name": name}})
    except httpx.TransportError:
        return False
    return answer.status_code == 200 and answer.content == b""


def shown_secrets(cluster: Cluster, after: int) -> set[str]:
    """The user tokens shown to anyone since call ``after``."""
    return {
        str(secret)
        for call in cluster.standin.calls[after:]
        if call.method in ("response_url", "chat.postEphemeral")
        for secret in tokenformat.TOKEN_PATTERN.findall(call.text_content())
    }


def tokens_of(database_url: str, user: str) -> list[Token]:
    db = Database(database_url)
    try:
        with db.read() as session:
            query = (
                sa.select(Token)
                .join(Member, Member.id == Token.member_id)  # type: ignore[arg-type]
                .where(Member.slack_user_id == user)
            )
            return list(session.execute(query).scalars())
    finally:
        db.dispose()


@postgres_only
@pytest.mark.asyncio(loop_scope="module")
async def test_24_generates_across_three_replicas_leave_exactly_10_active_tokens(
    cluster: Cluster,
) -> None:
    await cluster.all_up()
    views = await open_modals(cluster, ALICE, 24)
    mark = len(cluster.standin.calls)
    accepted = await asyncio.gather(
        *(submit(cluster, n, view, ALICE, f"race-{n}") for n, view in enumerate(views))
    )
    assert accepted.count(True) == 10
    shown = await cluster.standin.wait_for_count(
        "response_url", 10, lambda c: "tbu_" in c.text_content(), after=mark, timeout=15
    )
    assert len(shown) == 10
    held = tokens_of(cluster.database_url, ALICE)
    assert len(held) == 10 and all(t.state == "active" for t in held)


def sweeps_done(server: Server) -> int:
    """How many passes of the sweep the replica has finished (its scheduler's log)."""
    lines = server.log.read_text(errors="replace").splitlines()
    return sum('"sweep_and_deliver' in line and "executed successfully" in line for line in lines)


@postgres_only
@pytest.mark.asyncio(loop_scope="module")
async def test_each_reminder_stage_goes_out_once_with_every_replica_sweeping(
    cluster: Cluster,
) -> None:
    await cluster.all_up()
    db = Database(cluster.database_url)
    now = utcnow()
    try:
        # Unused for 23 days (the 7-day reminder is due), and for 29 days (the 1-day one).
        for name, idle in (("week", timedelta(days=23, hours=1)), ("day", timedelta(days=29))):
            issued = tokens.issue_user_token(db, ORG, DAVE, name, now - idle)
            tokens.mark_delivered(db, ORG, issued.info.id, now - idle, "test")
    finally:
        db.dispose()
    swept = [sweeps_done(server) for server in cluster.servers]

    def reminders() -> list[Call]:
        return [
            c
            for c in cluster.standin.calls
            if c.method == "chat.postMessage" and c.args.get("channel") == "D0DAVE"
        ]

    await cluster.standin.wait_for_count(
        "chat.postMessage", 2, lambda c: c.args.get("channel") == "D0DAVE", timeout=15
    )
    # Then every replica sweeps twice more: nothing is sent again.
    await eventually(
        lambda: [
            sweeps_done(server) - before
            for server, before in zip(cluster.servers, swept, strict=True)
        ],
        lambda done: min(done) >= 2,
        timeout=20,
    )
    sent = reminders()
    assert len(sent) == 2
    texts = sorted(c.text_content() for c in sent)
    assert any("*week*" in t and "in 7 days" in t for t in texts), texts
    assert any("*day*" in t for t in texts), texts


@postgres_only
@pytest.mark.asyncio(loop_scope="module")
async def test_approvals_clicked_at_once_on_different_replicas_give_one_token(
    cluster: Cluster,
) -> None:
    await cluster.all_up()
    standin, slacks = cluster.standin, cluster.slacks
    mark = len(standin.calls)
    answer = await submit_request(cluster_env(cluster, 1), GOOD, ["api:write"])  # by Alice
    assert answer.status_code == 200 and answer.content == b"", answer.text
    copies = await standin.wait_for_count(
        "chat.postMessage",
        2,
        lambda c: (
            c.args.get("channel") in ("D0BOB", "D0CAROL")
            and GOOD["name"]["value"] in c.text_content()
        ),
        after=mark,
    )
    bobs = next(c for c in copies if c.args["channel"] == "D0BOB")
    carols = next(c for c in copies if c.args["channel"] == "D0CAROL")
    mark = len(standin.calls)
    clicks = await asyncio.gather(
        slacks[0].click(bobs, "approve_request", BOB),
        slacks[1].click(carols, "approve_request", CAROL),
        slacks[2].click(bobs, "approve_request", BOB),
    )
    assert all(click.status_code == 200 for click in clicks)
    await standin.wait_for("response_url", lambda c: "tbs_" in c.text_content(), after=mark)
    await standin.wait_for_count(
        "chat.postEphemeral", 2, lambda c: "already" in c.text_content(), after=mark, timeout=10
    )
    db = Database(cluster.database_url)
    try:
        with db.read() as session:
            minted = session.execute(
                sa.select(sa.func.count()).where(Token.kind == "service")  # type: ignore[arg-type]
            ).scalar_one()
    finally:
        db.dispose()
    assert minted == 1
    carrying = [c for c in standin.calls[mark:] if "tbs_" in c.text_content()]
    assert len(carrying) == 1  # shown once, to the requester


async def introspected(url: str, secret: str) -> bool:
    return bool((await introspect(url, secret))["active"])


async def generated_on(cluster: Cluster, n: int, user: str, name: str) -> str:
    """A token generated through replica ``n``, once it is valid."""
    [view] = await open_modals(cluster, user, 1)
    mark = len(cluster.standin.calls)
    assert await submit(cluster, n, view, user, name)
    shown = await cluster.standin.wait_for(
        "response_url", lambda c: "tbu_" in c.text_content(), after=mark
    )
    [secret] = tokenformat.TOKEN_PATTERN.findall(shown.text_content())
    await eventually_async(lambda: introspected(cluster.servers[n].url, secret), bool)
    return str(secret)


async def seconds_until_refused(url: str, secret: str, since: float) -> float:
    """Ask the replica at ``url`` until it refuses ``secret``: the seconds since ``since``."""
    while await introspected(url, secret):
        if time.monotonic() - since > 2:
            raise AssertionError(f"{url} still accepts a token revoked 2 s ago")
    return time.monotonic() - since


@postgres_only
@pytest.mark.asyncio(loop_scope="module")
async def test_a_revocation_on_one_replica_is_refused_by_the_others_within_the_bound(
    cluster: Cluster,
) -> None:
    await cluster.all_up()
    standin = cluster.standin
    took: list[float] = []
    for round_ in range(6):
        here = round_ % 3
        others = [cluster.servers[n].url for n in range(3) if n != here]
        secret = await generated_on(cluster, here, FRANK, f"revoked-{round_}")
        for url in others:
            assert await introspected(url, secret)  # now cached there
        listing = await run_command(cluster_env(cluster, here), "list", FRANK)
        mark = len(standin.calls)
        answer = await cluster.slacks[here].click(listing, "revoke_token", FRANK)
        assert answer.status_code == 200
        began = time.monotonic()

        refusals = (seconds_until_refused(url, secret, began) for url in others)
        took.append(max(await asyncio.gather(*refusals)))
        await standin.wait_for("response_url", after=mark)  # the list redrawn
    print(
        f"revocation refused by the other replicas after {statistics.median(took) * 1000:.1f} ms"
        f" (median), {max(took) * 1000:.1f} ms (worst) of {len(took)}"
    )
    assert max(took) < REVOCATION_BOUND, took


@dataclass
class ReplicaEnv:
    """What tests.e2e.flows needs of a running app: its stand-in and a client to it."""

    standin: SlackStandin
    slack: SlackClient


def cluster_env(cluster: Cluster, n: int) -> Running:
    return cast(Running, ReplicaEnv(cluster.standin, cluster.slacks[n]))


@postgres_only
@pytest.mark.asyncio(loop_scope="module")
async def test_a_replica_stopped_mid_burst_loses_no_token_and_leaves_none_valid_unseen(
    cluster: Cluster,
) -> None:
    await cluster.all_up()
    standin = cluster.standin
    views = await open_modals(cluster, ERIN, 9)
    mark = len(standin.calls)
    held = standin.hold("response_url")  # deliveries reach Slack, which is slow to answer
    try:
        first = await asyncio.gather(
            *(submit(cluster, n, view, ERIN, f"burst-{n}") for n, view in enumerate(views[:6]))
        )
        assert all(first)
        await standin.wait_for_count(
            "response_url", 6, lambda c: "tbu_" in c.text_content(), after=mark, timeout=15
        )
        stopping = cluster.servers[2]
        stopping.process.send_signal(signal.SIGTERM)  # a deploy, with deliveries in flight
        second = await asyncio.gather(
            *(
                submit(cluster, n, view, ERIN, f"burst-{n}")
                for n, view in enumerate(views[6:], start=6)
            )
        )
    finally:
        held.set()
    accepted = first.count(True) + second.count(True)
    assert second[0] and second[1]  # the replicas still running took theirs
    assert await asyncio.to_thread(stopping.process.wait, timeout=30) == 0, stopping.log.read_text()
    await standin.wait_for_count(
        "response_url", accepted, lambda c: "tbu_" in c.text_content(), after=mark, timeout=15
    )
    shown = {tokenformat.digest(s) for s in shown_secrets(cluster, mark)}
    theirs = tokens_of(cluster.database_url, ERIN)
    assert len(theirs) == accepted  # every accepted request made one token...
    for token in theirs:  # ...which was shown, or is revoked: none is valid unseen
        if token.state == "active" and token.delivered_at is not None:
            assert token.digest in shown, token.name
        else:
            assert token.state == "revoked", (token.name, token.state)
    assert sum(t.state == "active" and t.delivered_at is not None for t in theirs) >= 8
