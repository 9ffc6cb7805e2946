"""Scheduled work (APScheduler 3): the sweep with its deliveries, and a daily
reconciliation of members with Slack. The sweep itself lives in ``storage.sweep``."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from slack_sdk.web.async_client import AsyncWebClient

from bot import webhooks
from bot.deps import Deps, workspace_of
from bot.installs import client_for
from bot.members import profile_from_slack
from bot.notify import deliver, queue_digests, update_request_copies
from bot.profiles import apply_profile, fetch_groups
from bot.sender import failure_reason
from storage import approvals, events, slack_tables, sweep

log = logging.getLogger(__name__)
WEBHOOK_INTERVAL = 5  # seconds between deliveries of webhook events


async def sweep_and_deliver(deps: Deps, client: AsyncWebClient) -> sweep.SweepReport:
    """One pass: expire, queue reminders, then send what is due (and retry what failed);
    counted and timed in the metrics, failed or not."""
    started = time.perf_counter()
    outcome = "failed"
    try:
        report = await _sweep_and_deliver(deps, client)
        outcome = "ok"
        return report
    finally:
        deps.metrics.sweeps.labels(outcome).inc()
        deps.metrics.sweep_seconds.observe(time.perf_counter() - started)


async def _sweep_and_deliver(deps: Deps, client: AsyncWebClient) -> sweep.SweepReport:
    now = deps.clock()
    report = await deps.call(sweep.sweep, deps.db, now)
    for request in await deps.call(approvals.expire_requests, deps.db, now):
        if (speaker := await client_for(deps, client, request.org)) is not None:
            await update_request_copies(deps, speaker, request)
    await queue_digests(deps, client)
    sent = await deliver(deps, client)
    await deps.call(events.forget_old_events, deps.db, now)
    await deps.call(slack_tables.forget_expired_states, deps.db, now)
    if report.expired or report.reminded or report.undelivered or report.rotated or sent:
        log.info(
            "sweep: %d expired, %d revoked as not delivered, %d revoked as rotated, "
            "%d reminders queued, %d messages sent",
            len(report.expired),
            len(report.undelivered),
            len(report.rotated),
            len(report.reminded),
            sent,
        )
    return report


async def reconcile_members(deps: Deps, client: AsyncWebClient) -> int:
    """Bring every member's profile in line with ``users.list``: catches deactivations
    whose events never arrived (R17), and their groups, fetched once for all (without
    them the profiles are stored but not counted as fresh). Each organization served is
    read with its own bot token. Returns how many members were deactivated."""
    if deps.installs is None:
        return await _reconcile(deps, client, await workspace_of(client))
    deactivated = 0
    for org, speaker in await deps.installs.served(client):
        try:
            deactivated += await _reconcile(deps, speaker, org)
        except Exception as error:  # one organization out of reach stops no other
            log.warning("reconciliation of %s failed (%s)", org, failure_reason(error))
    return deactivated


async def _reconcile(deps: Deps, client: AsyncWebClient, org: str) -> int:
    groups = await fetch_groups(deps, client, org)
    deactivated = 0
    async for page in await client.users_list(limit=200):
        for user in page.get("members") or []:
            if user.get("is_bot") or user.get("id") == "USLACKBOT":
                continue
            theirs = None if groups is None else groups.get(str(user.get("id")), [])
            profile = profile_from_slack(user, theirs)
            synced = await apply_profile(deps, client, org, profile, deps.clock(), add_groups=False)
            deactivated += synced.newly_deactivated
    if deactivated:
        log.info("reconciliation: %d member(s) found deactivated", deactivated)
    return deactivated


def build_scheduler(deps: Deps, client: AsyncWebClient) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone=UTC)
    soon = datetime.now(UTC) + timedelta(seconds=5)
    common = {"args": [deps, client], "max_instances": 1, "coalesce": True}
    scheduler.add_job(
        sweep_and_deliver,
        "interval",
        seconds=deps.settings.sweep_interval,
        next_run_time=soon,
        id="sweep",
        **common,
    )
    scheduler.add_job(
        reconcile_members, "interval", hours=24, next_run_time=soon, id="reconcile", **common
    )
    # Webhook events go out within seconds, not at the next sweep.
    scheduler.add_job(
        deliver,
        "interval",
        seconds=WEBHOOK_INTERVAL,
        next_run_time=soon,
        id="webhooks",
        kwargs={"kinds": webhooks.KINDS},
        **common,
    )
    # Revocations made by other replicas reach this one's validation cache within 1 s,
    # whether or not storage.db.InvalidationListener has heard of them sooner.
    scheduler.add_job(
        deps.call,
        "interval",
        seconds=1,
        args=[deps.db.refresh_generation],
        id="generation",
        max_instances=1,
        coalesce=True,
    )
    return scheduler
