"""How a webhook delivery is signed and when it is retried: Slack's signing scheme, so
slack_sdk's own verifier accepts it; an endpoint's Retry-After within bounds."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk.signature import SignatureVerifier

from bot import webhooks

SECRET = "whsec_" + "ab" * 32
BODY = webhooks.body_of({"id": "evt_1", "type": "token.created", "data": {"name": "ci ✓"}})


def test_the_signature_is_slacks_scheme_over_the_exact_body() -> None:
    timestamp = str(int(time.time()))
    signature = webhooks.signature(SECRET, timestamp, BODY)
    verifier = SignatureVerifier(SECRET)
    assert signature == verifier.generate_signature(timestamp=timestamp, body=BODY)
    assert verifier.is_valid(BODY, timestamp, signature)
    assert not verifier.is_valid(BODY + b" ", timestamp, signature)
    assert not SignatureVerifier("whsec_other").is_valid(BODY, timestamp, signature)


def test_the_body_is_compact_utf8_json() -> None:
    expected = '{"id":"evt_1","type":"token.created","data":{"name":"ci ✓"}}'
    assert expected.encode() == BODY


def test_the_headers_carry_the_key_the_time_and_the_signature_never_the_secret() -> None:
    headers = webhooks.signed_headers(SECRET, "evt_1", BODY, "1700000000")
    assert headers == {
        "Content-Type": "application/json",
        "User-Agent": "tokenbot",
        "Idempotency-Key": "evt_1",
        "X-Tokenbot-Request-Timestamp": "1700000000",
        "X-Tokenbot-Signature": webhooks.signature(SECRET, "1700000000", BODY),
    }
    assert SECRET not in str(headers)


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "wait"),
    [
        ("120", timedelta(seconds=120)),
        (" 5 ", timedelta(seconds=5)),
        ("0", timedelta(seconds=1)),  # never at once again: at least a second
        ("999999999", timedelta(days=1)),  # never longer than a day
        ("Sat, 28 Nov 2026 12:10:00 GMT", timedelta(minutes=10)),
        ("Sat, 28 Nov 2026 11:00:00 GMT", timedelta(seconds=1)),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1" * 50, None),
    ],
)
def test_retry_after_is_read_within_bounds(value: str | None, wait: timedelta | None) -> None:
    assert webhooks._retry_after(value, NOW) == wait
