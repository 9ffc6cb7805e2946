"""`tokenbot sweep` and the scheduler wiring."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from bot.config import Settings
from bot.deps import Deps
from bot.jobs import build_scheduler
from storage import outbox, tokens
from storage.db import Database
from storage.models import NoticeKind
from tests.conftest import NOW, CliRun, Tokenbot, shown


def run_sweep(tokenbot: Tokenbot, database_url: str, *args: str) -> CliRun:
    return tokenbot("sweep", *args, env={"TOKENBOT_DATABASE_URL": database_url})


def test_sweep_dry_run_says_what_it_would_do_and_does_nothing(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    shown(db, "T0ORG", tokens.issue_user_token(db, "T0ORG", "U0ALICE", "ci", NOW))
    ten_days_ago = NOW - timedelta(days=10)
    old = tokens.issue_user_token(db, "T0ORG", "U0ALICE", "old", ten_days_ago)
    shown(db, "T0ORG", old, ten_days_ago)
    at = (NOW + timedelta(days=23)).isoformat()
    result = run_sweep(tokenbot, database_url, "--now", at, "--dry-run")
    assert result.code == 0, result.stderr
    assert "1 token(s) would be expired, 1 reminder(s) would be queued" in result.stdout
    assert "expired  T0ORG  old" in result.stdout and "reminder T0ORG  ci" in result.stdout
    assert outbox.pending_count(db) == 0


def test_sweep_queues_and_says_who_will_send_without_a_bot_token(
    db: Database, database_url: str, tokenbot: Tokenbot
) -> None:
    shown(db, "T0ORG", tokens.issue_user_token(db, "T0ORG", "U0ALICE", "ci", NOW))
    result = run_sweep(tokenbot, database_url, "--now", (NOW + timedelta(days=23)).isoformat())
    assert result.code == 0, result.stderr
    assert "1 reminder(s) were queued" in result.stdout
    assert "1 message(s) wait to be sent" in result.stdout
    assert outbox.pending_count(db) == 1
    again = run_sweep(tokenbot, database_url, "--now", (NOW + timedelta(days=23)).isoformat())
    assert "0 reminder(s) were queued" in again.stdout


def test_sweep_refuses_a_time_that_is_not_iso_8601(database_url: str, tokenbot: Tokenbot) -> None:
    result = run_sweep(tokenbot, database_url, "--now", "next tuesday")
    assert result.code == 2 and "not an ISO 8601 time" in result.stderr


def test_the_scheduler_runs_the_sweep_at_the_configured_interval(db: Database) -> None:
    settings = Settings(database_url="sqlite://", sweep_interval=42)
    scheduler = build_scheduler(Deps(settings=settings, db=db), client=None)  # type: ignore[arg-type]
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"sweep", "reconcile", "generation", "webhooks"}
    assert jobs["generation"].trigger.interval == timedelta(seconds=1)
    assert jobs["webhooks"].trigger.interval == timedelta(seconds=5)
    assert jobs["webhooks"].kwargs == {"kinds": (NoticeKind.WEBHOOK,)}
    assert jobs["sweep"].trigger.interval == timedelta(seconds=42)
    assert jobs["reconcile"].trigger.interval == timedelta(days=1)
    assert jobs["sweep"].max_instances == 1


def test_the_sweep_forgets_oauth_states_whose_time_ran_out(db: Database) -> None:
    from storage.slack_tables import OAUTH_STATES, forget_expired_states

    naive_now = NOW.replace(tzinfo=None)  # as slack_sdk writes them
    with db.write() as session:
        session.execute(
            OAUTH_STATES.insert(),
            [
                {"state": "begun-long-ago", "expire_at": naive_now - timedelta(minutes=1)},
                {"state": "begun-just-now", "expire_at": naive_now + timedelta(minutes=9)},
            ],
        )
    assert forget_expired_states(db, NOW) == 1
    with db.read() as session:
        left = session.execute(sa.select(OAUTH_STATES.c.state)).scalars().all()
    assert left == ["begun-just-now"]
