"""`tokenbot audit verify` and `tokenbot audit export` (R27): the chain of every
organization checked, the first bad event named; the log exported as JSON lines that
can be checked outside tokenbot, as the README says."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from storage import audit, tokens
from storage.db import Database
from storage.models import AuditEvent
from tests.conftest import NOW, CliRun, Tokenbot, shown

ORG, OTHER = "T0ORG", "T0OTHER"
ALICE = "U0ALICE"
EVENT = AuditEvent.__table__  # type: ignore[attr-defined]
CONTENT = ("at", "actor", "action", "subject", "detail", "prev_digest", "digest")


def history(db: Database) -> None:
    """In ORG: "ci" issued, delivered and revoked, "cd" issued and delivered, a day
    apart (5 events); in OTHER: one token issued and delivered (2 events)."""
    ci = shown(db, ORG, tokens.issue_user_token(db, ORG, ALICE, "ci", NOW))
    tokens.revoke_token(db, ORG, ALICE, ci.info.id, NOW + timedelta(days=1))
    day2 = NOW + timedelta(days=2)
    shown(db, ORG, tokens.issue_user_token(db, ORG, ALICE, "cd", day2), day2)
    shown(db, OTHER, tokens.issue_user_token(db, OTHER, ALICE, "theirs", NOW))


def ids(db: Database, org: str) -> list[int]:
    return [e.id for e in audit.events(db, org) if e.id is not None]


def run(tokenbot: Tokenbot, database_url: str, *args: str) -> CliRun:
    return tokenbot("audit", *args, env={"TOKENBOT_DATABASE_URL": database_url})


def tamper(db: Database, statement: sa.Executable) -> None:
    with db.write() as session:
        session.execute(statement)


def test_verify_says_each_organizations_chain_holds_and_exits_zero(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    history(db)
    result = run(tokenbot, database_url, "verify")
    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "T0ORG: 5 event(s), chain intact",
        "T0OTHER: 2 event(s), chain intact",
    ]


def test_verify_names_an_edited_event_and_exits_non_zero(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    history(db)
    edited = ids(db, ORG)[2]  # the revocation, made to look like someone else's
    tamper(db, sa.update(EVENT).where(EVENT.c.id == edited).values(actor="U0MALLORY"))
    result = run(tokenbot, database_url, "verify")
    assert result.code == 1
    assert result.stdout.splitlines() == [
        f"T0ORG: chain broken (5 event(s)): event {edited} (token.revoked, position 3) was "
        "changed: its digest does not match its content",
        "T0OTHER: 2 event(s), chain intact",
    ]


def test_verify_names_the_event_after_a_deleted_one(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    history(db)
    gone, after = ids(db, ORG)[2:4]
    tamper(db, sa.delete(EVENT).where(EVENT.c.id == gone))
    result = run(tokenbot, database_url, "verify")
    assert result.code == 1
    assert result.stdout.splitlines()[0] == (
        f"T0ORG: chain broken (4 event(s)): event {after} (token.issued, position 3) "
        "follows an event that was deleted"
    )


def test_verify_names_the_last_event_left_when_the_newest_were_deleted(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    history(db)
    *_, last_left, gone = ids(db, ORG)
    tamper(db, sa.delete(EVENT).where(EVENT.c.id == gone))
    result = run(tokenbot, database_url, "verify")
    assert result.code == 1
    assert result.stdout.splitlines()[0] == (
        f"T0ORG: chain broken (4 event(s)): the events after event {last_left} "
        "(token.issued, position 4), the last one left, were deleted"
    )


def swap(db: Database, first: int, second: int) -> None:
    """Two events trade places: each row takes the other's whole content and digests."""
    with db.write() as session:
        rows = {
            row.id: {c: getattr(row, c) for c in CONTENT}
            for row in session.execute(sa.select(EVENT).where(EVENT.c.id.in_([first, second])))
        }
        session.execute(sa.update(EVENT).where(EVENT.c.id == first).values(**rows[second]))
        session.execute(sa.update(EVENT).where(EVENT.c.id == second).values(**rows[first]))


def test_verify_names_an_event_swapped_with_the_one_before_it(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    history(db)
    first, second = ids(db, ORG)[1:3]
    swap(db, first, second)  # the revocation now comes before the delivery
    result = run(tokenbot, database_url, "verify")
    assert result.code == 1
    assert result.stdout.splitlines()[0] == (
        f"T0ORG: chain broken (5 event(s)): event {first} (token.revoked, position 2) is out "
        "of order: it was chained after another event (swapped or moved)"
    )
    assert not audit.verify_chain(db, ORG) and audit.verify_chain(db, OTHER)


def test_verify_of_an_empty_database_says_so(database_url: str, tokenbot: Tokenbot) -> None:
    result = run(tokenbot, database_url, "verify")
    assert result.code == 0
    assert result.stdout == "no organization has an audit log yet\n"


def exported(result: CliRun) -> list[dict[str, Any]]:
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def chain_holds(lines: list[dict[str, Any]], start: str = "0" * 64) -> bool:
    """The check the README describes, done as someone outside tokenbot would."""
    prev = start
    for line in lines:
        content = {k: line[k] for k in ("at", "actor", "action", "subject", "detail")}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256((line["prev_digest"] + canonical).encode("utf-8")).hexdigest()
        if line["prev_digest"] != prev or digest != line["digest"]:
            return False
        prev = digest
    return True


def test_export_gives_every_event_with_its_digests_and_the_chain_checks_outside(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    history(db)
    lines = exported(run(tokenbot, database_url, "export"))
    assert [(line["org"], line["action"]) for line in lines] == [
        (ORG, "token.issued"),
        (ORG, "token.delivered"),
        (ORG, "token.revoked"),
        (ORG, "token.issued"),
        (ORG, "token.delivered"),
        (OTHER, "token.issued"),
        (OTHER, "token.delivered"),
    ]
    assert set(lines[0]) == {"id", "org", *CONTENT}
    assert lines[0]["id"] == ids(db, ORG)[0] and lines[0]["actor"] == ALICE
    assert lines[2]["detail"] == {
        "name": "ci",
        "hint": lines[0]["detail"]["hint"],
        "kind": "user",
        "reason": "revoked by owner",
    }
    assert chain_holds([line for line in lines if line["org"] == ORG])
    assert chain_holds([line for line in lines if line["org"] == OTHER])
    # What an outside check catches: the same export, one event edited.
    lines[2]["actor"] = "U0MALLORY"
    assert not chain_holds([line for line in lines if line["org"] == ORG])


def test_export_filters_by_organization_and_time(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    history(db)
    other = exported(run(tokenbot, database_url, "export", "--org", OTHER))
    assert {line["org"] for line in other} == {OTHER} and len(other) == 2
    day = NOW + timedelta(days=1)
    since = exported(
        run(tokenbot, database_url, "export", "--org", ORG, "--since", day.isoformat())
    )
    assert [line["action"] for line in since] == [
        "token.revoked",
        "token.issued",
        "token.delivered",
    ]
    # A filtered export checks from its first event's prev_digest on.
    assert chain_holds(since, start=since[0]["prev_digest"])
    until = exported(
        run(tokenbot, database_url, "export", "--org", ORG, "--until", day.isoformat())
    )
    assert [line["action"] for line in until] == ["token.issued", "token.delivered"]
    between = exported(
        run(
            tokenbot,
            database_url,
            "export",
            "--since",
            day.isoformat(),
            "--until",
            (day + timedelta(days=1)).isoformat(),
        )
    )
    assert [(line["org"], line["action"]) for line in between] == [(ORG, "token.revoked")]


def test_export_refuses_an_unknown_organization_or_time(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    history(db)
    unknown = run(tokenbot, database_url, "export", "--org", "T0NOBODY")
    assert unknown.code == 2 and "no organization 'T0NOBODY'" in unknown.stderr
    assert unknown.stdout == ""
    bad = run(tokenbot, database_url, "export", "--since", "last week")
    assert bad.code == 2 and "not an ISO 8601 time" in bad.stderr
