"""``tokenbot demo``: the main flows against the Slack stand-in, as a readable transcript."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bot.standin.harness import running_tokenbot
from bot.standin.render import render_blocks, render_view
from bot.standin.server import Call
from storage import tokenformat

ALICE = "U0ALICE"


class UnexpectedStep(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise UnexpectedStep(what)


class Demo:
    def __init__(self, env: Any) -> None:
        self.env = env
        self.standin = env.standin
        self.slack = env.slack

    @staticmethod
    def step(title: str) -> None:
        print(f"\n── {title} " + "─" * max(0, 70 - len(title)))

    @staticmethod
    def show(call: Call, heading: str) -> None:
        print(f"  {heading}")
        print(render_blocks(call.blocks, indent="  │ "))

    async def command(self, text: str) -> Call:
        """Type ``/token text`` and return what the app answered (a message or a modal)."""
        print(f"  alice types > /token {text}")
        mark = len(self.standin.calls)
        response = await self.slack.command("/token", text, ALICE)
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
        for n in range(1, 11):
            mark = len(self.standin.calls)
            await self.slack.command("/token", f"new script-{n}", ALICE)
            opened = await self.standin.wait_for("views.open", after=mark)
            await self.slack.submit_view(
                opened.result["view"]["id"], ALICE, {"token_name": {"name": f"script-{n}"}}
            )
            await self.standin.wait_for("response_url", after=mark)
        print("  alice generates script-1 … script-10: 10 active tokens")
        refused = await self.command("new one-too-many")
        expect(
            refused.method == "ack" and "limit of 10" in refused.text_content(),
            "the 11th token is refused, naming the cap",
        )

        print("\nAll steps behaved as expected.")


async def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="tokenbot-demo-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        print("tokenbot demo: the real server on loopback, a temporary database, and a")
        print("stand-in for Slack. Alice is a member of the workspace.")
        async with running_tokenbot(url) as env:
            try:
                await Demo(env).run()
            except (UnexpectedStep, TimeoutError) as error:
                print(f"\nUNEXPECTED: {error or 'no answer from tokenbot in time'}")
                return 1
    return 0
