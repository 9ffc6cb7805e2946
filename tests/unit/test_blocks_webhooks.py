"""What ``/token webhooks`` shows: the endpoints with their Remove buttons and confirm
dialogs, the Add endpoint modal, and the one message with a new endpoint's secret; all
within Slack's limits however long and strange the URLs are."""

from __future__ import annotations

from datetime import timedelta

from bot.blocks import webhooks as blocks
from bot.blocks.text import code
from storage.webhook_events import EVENT_TYPES
from storage.webhooks import MAX_ENDPOINTS, EndpointInfo, NewEndpoint
from tests.conftest import NOW
from tests.unit.blocks_data import USER, block_text, buttons, fits_a_message, fits_a_view

STRANGE = "https://hooks.example.com/" + "&<>`*_~" * 282  # 2,000 characters
SECRET = "whsec_" + "f" * 64


def endpoint(n: int = 1, url: str = STRANGE, **changes: object) -> EndpointInfo:
    values: dict[str, object] = {
        "id": n,
        "url": url,
        "events": list(EVENT_TYPES),
        "created_at": NOW,
        "created_by": USER,
        "last_status": None,
        "last_attempt_at": None,
    }
    values.update(changes)
    return EndpointInfo(**values)  # type: ignore[arg-type]


def test_a_full_list_of_the_longest_urls_fits_with_a_remove_button_each() -> None:
    full = [endpoint(n) for n in range(1, MAX_ENDPOINTS + 1)]
    message = blocks.webhook_list_message(full, notice="Removed one.")
    fits_a_message(message)
    removes = [b for b in buttons(message) if b["action_id"] == blocks.REMOVE_ACTION]
    assert [b["value"] for b in removes] == [str(n) for n in range(1, MAX_ENDPOINTS + 1)]
    assert all(len(b["confirm"]["text"]["text"]) <= 300 for b in removes)
    assert not [b for b in buttons(message) if b["action_id"] == blocks.ADD_ACTION]
    assert "The limit is 10" in block_text(message["blocks"][-2])


def test_a_url_reads_as_typed_in_code_with_nothing_of_it_parsed() -> None:
    shown = code("https://x.example/a_b*c?d=<e>&f`g", 3000)
    assert shown == "`https://x.example/a_b*c?d=&lt;e&gt;&amp;f\u02cbg`"
    assert code("https://x.example/\n<!channel>", 3000) == "`https://x.example/ &lt;!channel&gt;`"
    assert len(code(STRANGE, 300)) <= 300 and code(STRANGE, 300).endswith("…`")


def test_each_line_says_who_added_it_which_events_and_the_last_delivery() -> None:
    some = endpoint(url="https://a.example/", events=["token.revoked", "token.expired"])
    sent = endpoint(
        2,
        url="https://b.example/",
        last_status="HTTP 503",
        last_attempt_at=NOW + timedelta(hours=1),
    )
    message = blocks.webhook_list_message([some, sent])
    first, second = (block_text(b) for b in message["blocks"][1:3])
    assert "`https://a.example/`" in first and f"<@{USER}>" in first
    assert "token.revoked, token.expired" in first and "no delivery yet" in first
    assert "every event" in second and "last delivery: HTTP 503" in second
    assert block_text(message["blocks"][0]) == "*Webhook endpoints* (2 of 10)"
    [add] = [b for b in buttons(message) if b["action_id"] == blocks.ADD_ACTION]
    assert add["text"]["text"] == "Add endpoint"
    assert message["text"] == "2 webhook endpoints"


def test_an_empty_list_offers_to_add_one() -> None:
    message = blocks.webhook_list_message([])
    assert "No webhook endpoints yet" in block_text(message["blocks"][0])
    assert [b["action_id"] for b in buttons(message)] == [blocks.ADD_ACTION]


def test_the_modal_asks_for_the_url_and_offers_every_event_ticked() -> None:
    view = blocks.add_endpoint_modal("{}" * 1400)
    fits_a_view(view)
    url, events = (b for b in view["blocks"] if b["type"] == "input")
    assert (url["block_id"], url["element"]["max_length"]) == ("url", 2000)
    assert events["block_id"] == "events" and events["optional"] is True
    offered = [o["value"] for o in events["element"]["options"]]
    assert (
        offered == list(EVENT_TYPES) == [o["value"] for o in events["element"]["initial_options"]]
    )


def test_the_secret_is_shown_only_in_the_message_of_the_endpoint_just_added() -> None:
    new = NewEndpoint(endpoint(), SECRET, [endpoint(n) for n in range(1, MAX_ENDPOINTS + 1)])
    message = blocks.endpoint_added_message(new, new.endpoints)
    fits_a_message(message)
    said = [block_text(b) for b in message["blocks"] if b["type"] in ("section", "context")]
    assert [s for s in said if SECRET in s] == [f"```{SECRET}```"]
    assert SECRET not in message["text"]
    assert "won't be shown again" in message["text"]
    listing = blocks.webhook_list_message(new.endpoints)
    assert SECRET not in str(listing) and SECRET not in str(blocks.add_endpoint_modal("{}"))
    assert SECRET not in blocks.removed_notice(new.info)
