"""``tokenbot demo``: the main flows against the Slack stand-in, as a readable transcript."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from bot.jobs import sweep_and_deliver
from bot.standin.harness import RESOURCE_SERVER, Clock, Running, running_tokenbot
from bot.standin.render import render_blocks, render_view
from bot.standin.server import Call
from storage import audit, tokenformat, usage

ALICE = "U0ALICE"
BOB = "U0BOB"
CAROL = "U0CAROL"


class UnexpectedStep(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise UnexpectedStep(what)


class Demo:
    def __init__(self, env: Running, clock: Clock) -> None:
        self.env = env
        self.clock = clock
        self.standin = env.standin
        self.standin.add_user(ALICE, "alice")
        self.standin.groups = {"platform": [ALICE]}
        self.slack = env.slack

    @staticmethod
    def step(title: str) -> None:
        print(f"\n── {title} " + "─" * max(0, 70 - len(title)))

    def show(self, call: Call, heading: str) -> None:
        print(f"  {heading}")
        text = render_blocks(call.blocks, indent="  │ ")
        for user_id, user in self.standin.users.items():  # mentions, as Slack shows them
            text = text.replace(f"@{user_id}", f"@{user['name']}")
        text = text.replace("#C0GENERAL", "#general")
        print(text)

    async def command(self, text: str, user: str = ALICE) -> Call:
        """Type ``/token text`` as ``user`` and return what the app answered (a message or
        a modal)."""
        print(f"  {self.standin.users[user]['name']} types > /token {text}")
        mark = len(self.standin.calls)
        response = await self.slack.command("/token", text, user)
        expect(response.status_code == 200, f"/token {text} was acknowledged")
        if response.content:  # answered in the acknowledgement itself
            call = Call("ack", response.json())
            self.show(call, "tokenbot (only visible to you):")
            return call
        call = await self.standin.wait_for("views.open", after=mark)
        print("  tokenbot opens a modal:")
        print(render_view(call.view))
        return call

    async def submit(self, view_id: str, name: str) -> dict[str, Any]:
        shown = name if len(name) <= 20 else f"{name[:8]}… ({len(name)} characters)"
        print(f"  alice types the name {shown!r} and clicks [Generate]")
        response = await self.slack.submit_view(view_id, ALICE, {"token_name": {"name": name}})
        expect(response.status_code == 200, "the modal submission was acknowledged")
        return response.json() if response.content else {}

    async def run(self) -> None:
        self.step("1. Help")
        help_call = await self.command("help")
        expect("new" in help_call.text_content(), "help lists `new`")

        self.step("2. Generate a token: a bad name first, then a good one")
        modal = await self.command("new")
        expect(modal.method == "views.open", "`new` opens the Generate modal")
        view_id = modal.result["view"]["id"]
        answer = await self.submit(view_id, "x" * 65)
        error = answer.get("errors", {}).get("token_name", "")
        expect(
            answer.get("response_action") == "errors" and "64" in error,
            "a 65-character name is refused inline",
        )
        print(f"  the modal shows, under the name: ⚠ {error}")
        mark = len(self.standin.calls)
        answer = await self.submit(view_id, "ci-deploy")
        expect(answer == {}, "a valid name closes the modal")
        shown = await self.standin.wait_for("response_url", after=mark)
        self.show(shown, "tokenbot (only visible to you):")
        secrets = tokenformat.TOKEN_PATTERN.findall(shown.text_content())
        expect(
            len(secrets) == 1 and tokenformat.has_valid_checksum(secrets[0]),
            "the new token is shown once, with a valid checksum",
        )
        expect(shown.args.get("response_type") == "ephemeral", "the token message is ephemeral")
        await self.until_valid(secrets[0])

        self.step("3. List tokens")
        listing = await self.command("list")
        expect(
            "ci-deploy" in listing.text_content() and secrets[0] not in listing.text_content(),
            "the list shows the token by name and hint, never the secret",
        )

        self.step("4. Revoke, after confirming")
        confirm = await self.command("revoke ci-deploy")
        expect("cannot be undone" in confirm.text_content(), "revoke asks for confirmation")
        print("  alice clicks [Revoke]")
        mark = len(self.standin.calls)
        await self.slack.click(confirm, "revoke_token", ALICE)
        done = await self.standin.wait_for("response_url", after=mark)
        self.show(done, "tokenbot replaces the message:")
        expect("Revoked" in done.text_content(), "the token is revoked")

        self.step("5. The cap: ten tokens, then an eleventh")
        scripts = [await self.generate_quietly(ALICE, f"script-{n}") for n in range(1, 11)]
        print("  alice generates script-1 … script-10: 10 active tokens")
        refused = await self.command("new one-too-many")
        expect(
            refused.method == "ack" and "limit of 10" in refused.text_content(),
            "the 11th token is refused, naming the cap",
        )

        await self.token_life(scripts[0])
        await self.deactivation()
        await self.service_token()
        await self.rotation()
        await self.leak()
        await self.settings()
        print("\nAll steps behaved as expected.")

    async def generate_quietly(self, user: str, name: str) -> str:
        """Generate a token through the modal without printing; return the secret."""
        mark = len(self.standin.calls)
        await self.slack.command("/token", f"new {name}", user)
        opened = await self.standin.wait_for("views.open", after=mark)
        await self.slack.submit_view(
            opened.result["view"]["id"], user, {"token_name": {"name": name}}
        )
        shown = await self.standin.wait_for("response_url", after=mark)
        return await self.until_valid(
            str(tokenformat.TOKEN_PATTERN.findall(shown.text_content())[0])
        )

    async def until_valid(self, secret: str) -> str:
        """A token is valid once tokenbot has recorded its delivery, just after Slack
        took the message."""
        for _ in range(100):
            if usage.validate(self.env.db, secret, self.clock()) is not None:
                return secret
            await asyncio.sleep(0.05)
        raise UnexpectedStep("the token shown became valid")

    async def introspect(self, secret: str, *, quiet: bool = False) -> dict[str, Any]:
        """Ask as the resource server "gateway" would, with its HTTP Basic credentials."""
        auth = httpx.BasicAuth(*RESOURCE_SERVER)
        async with httpx.AsyncClient(base_url=self.env.url, auth=auth) as http:
            response = await http.post("/api/v1/introspect", data={"token": secret})
        expect(response.status_code == 200, "the resource server is answered")
        answer: dict[str, Any] = response.json()
        if not quiet:
            print(
                f"  the API {RESOURCE_SERVER[0]!r} asks: POST /api/v1/introspect "
                f"token={secret[:4]}…{secret[-4:]}"
            )
            print("  tokenbot answers: " + json.dumps(answer))
        return answer

    async def sweep(self) -> None:
        await sweep_and_deliver(self.env.deps, self.env.slack_app_client)

    async def token_life(self, secret: str) -> None:
        self.step("6. An API asks tokenbot about a token (RFC 7662 introspection)")
        answer = await self.introspect(secret)
        expect(
            answer.get("active") is True
            and answer.get("scope") == "api:read api:write"
            and answer.get("groups") == ["platform"],
            "a valid token, with its scopes",
        )
        print("  (that answer was a use: the token now expires 30 days from now)")

        self.step("7. 23 days pass without a use: the 7-day reminder")
        self.clock.advance(timedelta(days=23))
        print(f"  the clock moves to {self.clock():%Y-%m-%d %H:%M} UTC; the sweep runs")
        mark = len(self.standin.calls)
        await self.sweep()
        reminders = [c for c in self.standin.calls[mark:] if c.method == "chat.postMessage"]
        about = [c for c in reminders if "*script-1*" in c.text_content()]
        expect(
            len(reminders) == 10 and len(about) == 1 and "in 7 days" in about[0].text_content(),
            "one 7-day reminder by DM for each of the ten unused tokens",
        )
        self.show(about[0], "alice gets a DM from tokenbot (and one for each other token):")
        mark = len(self.standin.calls)
        await self.sweep()
        expect(
            not [c for c in self.standin.calls[mark:] if c.method == "chat.postMessage"],
            "a second sweep sends nothing again",
        )
        print("  the sweep runs again: nothing is sent twice")

        self.step("8. Past the cutoff: invalid at once, and the owner is told")
        self.clock.advance(timedelta(days=7, seconds=1))
        print(f"  the clock moves to {self.clock():%Y-%m-%d %H:%M} UTC, before any sweep")
        expect(await self.introspect(secret) == {"active": False}, "the token is inactive")
        mark = len(self.standin.calls)
        await self.sweep()
        told = [
            c
            for c in self.standin.calls[mark:]
            if c.method == "chat.postMessage"
            and "*script-1*" in c.text_content()
            and "expired" in c.text_content()
        ]
        expect(len(told) == 1, "the owner is told once that script-1 expired")
        self.show(told[0], "the sweep runs; alice gets a DM:")

    async def deactivation(self) -> None:
        self.step("9. Bob leaves the company: his tokens die with his account")
        self.standin.add_user(BOB, "bob")
        secret = await self.generate_quietly(BOB, "laptop")
        print("  bob has a token, laptop; an admin deactivates bob in Slack")
        self.standin.users[BOB]["deleted"] = True
        response = await self.slack.event(
            {
                "type": "user_change",
                "user": self.standin.users[BOB],
                "event_ts": f"{time.time():.6f}",
            },
            event_id="EvDEMO-DEACTIVATE",
        )
        expect(response.status_code == 200, "Slack's user_change event is acknowledged")
        for _ in range(100):  # the event is handled just after its acknowledgement
            revoked = [
                e
                for e in audit.events(self.env.db, self.slack.team_id)
                if e.action == "token.revoked" and e.detail.get("name") == "laptop"
            ]
            if revoked:
                break
            await asyncio.sleep(0.05)
        expect(
            bool(revoked) and revoked[0].detail["reason"] == "owner deactivated",
            "bob's token is revoked, reason: owner deactivated",
        )
        print("  tokenbot gets Slack's user_change event and revokes laptop: owner deactivated")
        answer = await self.introspect(secret)
        expect(answer == {"active": False}, "bob's token no longer works")

    async def request_service_token(self, name: str) -> list[Call]:
        """Alice asks for a service token; return the copies the approvers got."""
        print(f"  alice types > /token service request, and asks for {name} (api:write)")
        mark = len(self.standin.calls)
        await self.slack.command("/token", "service request", ALICE)
        opened = await self.standin.wait_for("views.open", after=mark)
        values = {
            "name": {"value": name},
            "purpose": {"value": "deploys from CI"},
            "justification": {"value": "the release pipeline needs it"},
        }
        payload = json.loads(
            parse_qs(self.slack.view_submission_body(opened.result["view"]["id"], ALICE, values))[
                "payload"
            ][0]
        )
        payload["view"]["state"]["values"]["scopes"] = {
            "value": {"type": "checkboxes", "selected_options": [{"value": "api:write"}]}
        }
        await self.slack.interact(payload)
        told = await self.standin.wait_for(
            "response_url", lambda c: "went to" in c.text_content(), after=mark
        )
        self.show(told, "tokenbot (only visible to alice):")
        return [c for c in self.standin.calls[mark:] if c.method == "chat.postMessage"]

    async def service_token(self) -> None:
        self.step("10. A service token, approved in Slack")
        self.standin.users[BOB]["deleted"] = False
        self.standin.users[BOB]["is_admin"] = True
        self.standin.add_user(CAROL, "carol", is_admin=True)
        self.standin.users[ALICE]["is_admin"] = True
        copies = await self.request_service_token("ci-deployer")
        expect(len(copies) == 2, "the request goes to each of the two other admins by DM")
        self.show(copies[0], "bob (and carol) get a DM:")
        mark = len(self.standin.calls)
        print("  alice, an admin too, clicks [Approve] on her own request")
        await self.slack.click(copies[0], "approve_request", ALICE)
        refusal = await self.standin.wait_for("chat.postEphemeral", after=mark)
        expect("your own request" in refusal.text_content(), "self-approval is refused")
        print(f"  tokenbot (only visible to alice): {refusal.args.get('text')}")
        print("  bob clicks [Deny] and gives a reason")
        mark = len(self.standin.calls)
        await self.slack.click(copies[0], "deny_request", BOB)
        opened = await self.standin.wait_for("views.open", after=mark)
        await self.slack.submit_view(
            opened.result["view"]["id"],
            BOB,
            {"reason": {"value": "ask for a narrower scope first"}},
        )
        told = await self.standin.wait_for(
            "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
        )
        self.show(told, "alice gets a DM:")
        copies = await self.request_service_token("release-bot")
        print("  bob and carol click [Approve] at the same moment, on their own copies")
        mark = len(self.standin.calls)
        await asyncio.gather(
            self.slack.click(copies[0], "approve_request", BOB),
            self.slack.click(copies[1], "approve_request", CAROL),
        )
        shown = await self.standin.wait_for(
            "response_url", lambda c: "tbs_" in c.text_content(), after=mark
        )
        await self.standin.wait_for("chat.postEphemeral", after=mark)
        updates = await self.standin.wait_for_count("chat.update", 2, after=mark)
        issued = [
            e
            for e in audit.events(self.env.db, self.slack.team_id)
            if e.action == "token.issued" and e.detail.get("service_user")
        ]
        expect(len(issued) == 1 and len(updates) == 2, "one token; both copies updated")
        self.show(updates[0], "both copies of the request now read:")
        self.show(shown, "alice sees, once:")
        secret = await self.until_valid(tokenformat.TOKEN_PATTERN.findall(shown.text_content())[0])
        answer = await self.introspect(secret)
        expect(
            answer.get("token_type") == "service"
            and answer.get("sub") == "release-bot"
            and answer.get("scope") == "api:write",
            "the service token introspects as the service user, with its permissions",
        )
        self.step("11. Service users and their tokens, for their owners and admins")
        listing = await self.command("service list")
        expect(
            "release-bot" in listing.text_content()
            and tokenformat.hint(secret) in listing.text_content()
            and secret not in listing.text_content(),
            "alice's service users are listed with the token's hint, never the token",
        )

    async def rotation(self) -> None:
        self.step("12. Rotate a token: the old one works on for a grace period")
        old = await self.generate_quietly(ALICE, "deploy-key")
        print("  alice has a token, deploy-key, that a deploy script uses")
        confirm = await self.command("rotate deploy-key")
        expect("grace period" in confirm.text_content(), "rotate asks for confirmation")
        print("  alice clicks [Rotate]")
        mark = len(self.standin.calls)
        await self.slack.click(confirm, "rotate_token", ALICE)
        shown = await self.standin.wait_for(
            "response_url", lambda c: "tbu_" in c.text_content(), after=mark
        )
        self.show(shown, "tokenbot (only visible to you):")
        secrets = tokenformat.TOKEN_PATTERN.findall(shown.text_content())
        expect(len(secrets) == 1 and secrets[0] != old, "a new token is shown once")
        new = await self.until_valid(secrets[0])
        grace_end = self.clock() + timedelta(hours=24)
        answer = await self.introspect(old)
        expect(
            answer.get("active") is True and answer.get("exp") == int(grace_end.timestamp()),
            "the old token still works, until the end of the grace period (its exp)",
        )
        print("  (the old token's exp is the end of the 24-hour grace period; a use moves it not)")
        self.clock.advance(timedelta(hours=24, seconds=1))
        print(f"  the clock moves to {self.clock():%Y-%m-%d %H:%M} UTC; the sweep runs")
        await self.sweep()
        expect(await self.introspect(old) == {"active": False}, "the old token is refused")
        fresh = await self.introspect(new, quiet=True)
        expect(fresh.get("active") is True, "the new token works")
        revoked = [
            e
            for e in audit.events(self.env.db, self.slack.team_id)
            if e.action == "token.revoked" and e.detail.get("hint") == tokenformat.hint(old)
        ]
        expect(
            len(revoked) == 1 and revoked[0].detail["reason"] == "rotated",
            "the sweep revoked the old token, reason: rotated",
        )
        print("  the sweep revoked the old token (reason: rotated); the new one works")

    async def leak(self) -> None:
        self.step("13. A token pasted in a channel is revoked on sight")
        secret = await self.generate_quietly(ALICE, "notebook")
        print("  alice has a token, notebook, and pastes it in #general by mistake:")
        print(f"  │ alice: try this one: {secret[:4]}…{secret[-4:]}  (the whole token)")
        mark = len(self.standin.calls)
        response = await self.slack.event(
            {
                "type": "message",
                "channel": "C0GENERAL",
                "channel_type": "channel",
                "user": ALICE,
                "text": f"try this one: {secret}",
                "ts": f"{time.time():.6f}",
                "event_ts": f"{time.time():.6f}",
            },
            event_id="EvDEMO-LEAK",
        )
        expect(response.status_code == 200, "Slack's message event is acknowledged")
        note = await self.standin.wait_for("chat.postEphemeral", after=mark)
        self.show(note, "tokenbot, in #general (only visible to alice):")
        told = await self.standin.wait_for(
            "chat.postMessage", lambda c: c.args.get("channel") == "D0ALICE", after=mark
        )
        self.show(told, "alice, the token's owner, gets a DM:")
        sent = [c for c in self.standin.calls[mark:] if c.method != "auth.test"]
        expect(
            "delete your message" in note.text_content()
            and "archives/C0GENERAL" in told.text_content()
            and all(secret not in c.text_content() for c in sent),
            "the note and the DM name the token by its hint, never the token itself",
        )
        answer = await self.introspect(secret)
        expect(answer == {"active": False}, "the pasted token no longer works")

    async def settings(self) -> None:
        self.step("14. An admin lowers the cap in the settings: nothing is evicted")
        secrets = [await self.generate_quietly(ALICE, f"tool-{n}") for n in (1, 2, 3)]
        print("  alice generates tool-1, tool-2 and tool-3: 3 active tokens")
        modal = await self.command("settings", CAROL)
        expect(modal.method == "views.open", "`settings` opens the settings modal for an admin")
        view_id = modal.result["view"]["id"]
        form = self.slack.initial_state(view_id)
        form["user_token_cap"]["value"]["value"] = "2"
        print("  carol changes Personal tokens per member to 2 and clicks [Save]")
        mark = len(self.standin.calls)
        response = await self.slack.submit_view(view_id, CAROL, form)
        expect(response.status_code == 200 and not response.content, "the settings are saved")
        told = await self.standin.wait_for("response_url", after=mark)
        self.show(told, "tokenbot (only visible to carol):")
        changed = [
            e.detail
            for e in audit.events(self.env.db, self.slack.team_id)
            if e.action == "setting.changed"
        ]
        expect(
            changed == [{"setting": "user_token_cap", "old": 10, "new": 2}],
            "one audit event records the change, with the old and new value",
        )
        answers = [await self.introspect(secret, quiet=True) for secret in secrets]
        expect(all(a.get("active") for a in answers), "alice's three tokens all still work")
        print("  alice's three tokens still work: lowering the cap revokes none")
        refused = await self.command("new tool-4")
        expect(
            refused.method == "ack" and "limit of 2" in refused.text_content(),
            "alice's next token is refused with the new cap",
        )


async def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="tokenbot-demo-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        print("tokenbot demo: the real server on loopback, a temporary database, and a")
        print("stand-in for Slack. Alice is a member of the workspace.")
        clock = Clock()
        async with running_tokenbot(url, clock=clock) as env:
            try:
                await Demo(env, clock).run()
            except (UnexpectedStep, TimeoutError) as error:
                print(f"\nUNEXPECTED: {error or 'no answer from tokenbot in time'}")
                return 1
    return 0
