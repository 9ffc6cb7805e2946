"""`tokenbot demo` runs every step against the stand-in and exits 0."""

from __future__ import annotations

from tests.conftest import Tokenbot


def test_demo_walks_through_every_step_and_exits_zero(tokenbot: Tokenbot) -> None:
    result = tokenbot("demo")
    assert result.code == 0, result.stdout[-2000:] + result.stderr[-2000:]
    transcript = result.stdout
    for line in (
        "1. Help",
        "the modal shows, under the name: ⚠ Use at most 64 characters",
        "Your new token *ci-deploy* is ready",
        "Revoked *ci-deploy*",
        "limit of 10 active tokens",
        '"active": true',
        "expires in 7 days",
        "nothing is sent twice",
        'tokenbot answers: {"active": false}',
        "expired at",
        "revokes laptop: owner deactivated",
        "You cannot decide on your own request.",
        "was denied by @bob:\n  │ > ask for a narrower scope first",  # the reason, quoted
        "Approved by @",  # bob or carol: whoever was first
        '"token_type": "service", "sub": "release-bot"',
        "Your token *deploy-key* was rotated",
        "the sweep revoked the old token (reason: rotated)",
        "was revoked: it was pasted in a message in #general by",  # the owner's DM
        "Please delete your message.",  # the note to whoever pasted it
        "carol types > /token settings",
        "Personal tokens per member: 10 → 2",
        "alice's three tokens still work",
        "limit of 2 active tokens",
        "All steps behaved as expected.",
    ):
        assert line in transcript
    assert "UNEXPECTED" not in transcript
