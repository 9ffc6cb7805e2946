"""The largest messages tokenbot builds stay inside Slack's Block Kit limits: beyond them
Slack refuses the whole message (invalid_blocks)."""

from datetime import timedelta

from bot.blocks import service as blocks
from storage.approvals import RequestInfo
from storage.services import ServiceUserInfo
from storage.tokens import TokenInfo
from tests.conftest import NOW


def within_slack_limits(message: dict) -> None:
    assert len(message["blocks"]) <= 50
    for block in message["blocks"]:
        text = block.get("text", {}).get("text", "")
        assert len(text) <= 3000, text[:80]
        elements = [*block.get("elements", []), block.get("accessory") or {}]
        for element in elements:
            if element.get("type") == "button":
                assert len(element["text"]["text"]) <= 75
        if block["type"] == "actions":
            assert len(block["elements"]) <= 25


def token(n: int) -> TokenInfo:
    return TokenInfo(
        id=n,
        kind="service",
        name=f"{'x' * 60}-{n}",
        hint="tbs_…abcd",
        created_at=NOW,
        last_used_at=NOW,
        cutoff_at=NOW + timedelta(days=30),
        state="active",
    )


def test_the_service_list_of_a_large_organization_fits_in_one_message() -> None:
    services = [
        ServiceUserInfo(
            id=n,
            name=f"service-{n:03d}",
            purpose="p" * 500,
            scopes=[f"scope:{'s' * 60}-{m}" for m in range(80)],
            owners=[f"U{m:010d}" for m in range(40)],
            tokens=[token(n * 100 + t) for t in range(20 if n == 0 else n % 3)],
        )
        for n in range(60)
    ]
    message = blocks.service_list_message(services, True, "/token", notice="n" * 300)
    within_slack_limits(message)
    text = "\n".join(
        b.get("text", {}).get("text", "")
        + "".join(e.get("text", "") for e in b.get("elements", []))
        for b in message["blocks"]
    )
    assert "service-000" in text and "more service users that do not fit" in text
    assert sum(1 for b in message["blocks"] if "accessory" in b) >= 20  # all of the first's


def test_a_long_digest_and_a_long_orphan_report_fit() -> None:
    request = RequestInfo(
        id=1,
        org="T0",
        requester="U0ALICE",
        service_user_id=None,
        name="n" * 40,
        purpose="p" * 500,
        scopes=["api:read", "api:write", "reports:read", "billing:read"],
        justification="j" * 1000,
        state="pending",
        decided_by=None,
        decided_at=None,
        reason=None,
        created_at=NOW,
        expires_at=NOW + timedelta(days=7),
    )
    within_slack_limits(blocks.digest_message([request] * 100, "/token"))
    within_slack_limits(blocks.orphaned_message("U0ALICE", ["s" * 40] * 200, "/token"))
    within_slack_limits(blocks.approval_request_message(request))
