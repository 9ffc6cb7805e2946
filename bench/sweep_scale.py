"""The sweep's cost follows the due tokens, not all tokens (SPEC §7: 1,000,000 tokens of
which 1% are due, in ≤ 30 s and ≤ 300 MB, Slack posting excluded).

For each size it fills a fresh database with that many active tokens (spread over
members of one organization, 10 each), of which 1% are due: half past their cutoff, half
at their 7-day reminder. Then it runs one sweep in a child process and reports its wall
time and the child's peak memory (RSS), then a second sweep with nothing left to do.
With --repeat N it sweeps the same database N times, putting the due tokens back as
they were (and vacuuming) between runs: the timings are noisy on a shared machine, and
filling a million tokens takes minutes.

    .venv/bin/python bench/sweep_scale.py [--sizes 100000 1000000] [--database-url URL]
                                          [--repeat N]

With --database-url (PostgreSQL), that database's tables are emptied first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from storage.db import Database
from storage.migrate import upgrade
from storage.models import GENESIS_DIGEST, Member, Token
from storage.orgs import lock_org

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ORG = "T0BENCH"


def fill(url: str, size: int) -> None:
    """``size`` active tokens, 1% due: the first half of those expired, the rest at the
    7-day reminder; everything else far from both."""
    db = Database(url)
    upgrade(db)
    tables = ("outbox", "auditevent", "token", "member", "slackevent", "organization")
    # On PostgreSQL, DELETE would check foreign keys row by row, over the dead rows of
    # the previous fill: minutes.
    emptying = (
        [f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"]
        if db.dialect == "postgresql"
        else [f"DELETE FROM {table}" for table in tables]
    )
    with db.engine.begin() as conn:
        for statement in emptying:
            conn.execute(sa.text(statement))
    with db.write() as session:
        org_id = lock_org(session, ORG, NOW).id
    members = max(1, size // 10)
    due = size // 100
    with db.engine.begin() as conn:
        rows = [
            {
                "org_id": org_id,
                "slack_user_id": f"U{n:07d}",
                "created_at": NOW,
                "role": "member",
                "deleted": False,
                "groups": [],
            }
            for n in range(members)
        ]
        conn.execute(sa.insert(Member.__table__), rows)  # type: ignore[attr-defined]
        first_member = conn.execute(sa.select(sa.func.min(Member.id))).scalar_one()
    token_table = Token.__table__  # type: ignore[attr-defined]
    batch: list[dict[str, object]] = []
    with db.engine.begin() as conn:
        for n in range(size):
            if n < due // 2:
                cutoff = NOW - timedelta(hours=1)  # past its cutoff
            elif n < due:
                cutoff = NOW + timedelta(days=6)  # inside the 7-day reminder window
            else:
                cutoff = NOW + timedelta(days=8 + n % 20)  # not due
            batch.append(
                {
                    "org_id": org_id,
                    "kind": "user",
                    "member_id": first_member + n // 10,
                    "name": f"t{n % 10}",
                    "name_key": f"t{n % 10}",
                    "hint": "tbu_…abcd",
                    "digest": f"{n:064x}",
                    "created_at": cutoff - timedelta(days=30),
                    "created_by_id": first_member + n // 10,
                    "last_used_at": None,
                    "delivered_at": cutoff - timedelta(days=30),
                    "cutoff_at": cutoff,
                    "next_notice_at": cutoff - timedelta(days=7),
                    "state": "active",
                }
            )
            if len(batch) == 20_000:
                conn.execute(sa.insert(token_table), batch)
                batch.clear()
        if batch:
            conn.execute(sa.insert(token_table), batch)
    with db.engine.begin() as conn:  # what autovacuum would do after such a load
        conn.execute(sa.text("ANALYZE"))
    db.dispose()


def put_back(url: str, size: int) -> None:
    """The due tokens as ``fill`` left them, nothing queued or recorded, statistics fresh."""
    db = Database(url)
    token_table = Token.__table__  # type: ignore[attr-defined]
    with db.engine.begin() as conn:
        for table in ("outbox", "auditevent"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(
            sa.text("UPDATE organization SET audit_head = :genesis"), {"genesis": GENESIS_DIGEST}
        )
        first = conn.execute(sa.select(sa.func.min(token_table.c.id))).scalar_one()
        due = conn.execute(
            sa.select(token_table.c.id, token_table.c.cutoff_at).where(
                token_table.c.id < first + size // 100
            )
        ).all()
        conn.execute(
            sa.update(token_table)
            .where(token_table.c.id == sa.bindparam("token"))
            .values(
                state="active",
                state_reason=None,
                state_changed_at=None,
                next_notice_at=sa.bindparam("next_notice"),
            ),
            [{"token": t.id, "next_notice": t.cutoff_at - timedelta(days=7)} for t in due],
        )
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE" if db.dialect == "postgresql" else "ANALYZE"))
    db.dispose()


def sweep_in_child(url: str) -> dict[str, float]:
    code = (
        "import json, resource, time, sys\n"
        "from datetime import datetime\n"
        "from storage.db import Database\n"
        "from storage import sweep\n"
        "db = Database(sys.argv[1]); now = datetime.fromisoformat(sys.argv[2])\n"
        "t = time.perf_counter(); r = sweep.sweep(db, now)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'expired': len(r.expired),\n"
        "  'reminded': len(r.reminded),\n"
        "  'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, url, NOW.isoformat()],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--database-url")
    parser.add_argument("--repeat", type=int, default=1, help="sweeps of each filled database")
    args = parser.parse_args()
    print(
        f"sweep scale, {os.cpu_count()} cores, "
        f"{(args.database_url or 'sqlite').split(':')[0]}; 1% of tokens due"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            url = args.database_url or f"sqlite:///{Path(tmp) / f'sweep-{size}.db'}"
            started = time.perf_counter()
            fill(url, size)
            filled = time.perf_counter() - started
            for run in range(args.repeat):
                if run:
                    put_back(url, size)
                first = sweep_in_child(url)
                second = sweep_in_child(url)
                print(
                    f"{size:>9,} tokens (filled in {filled:5.1f} s): "
                    f"sweep {first['seconds']:6.2f} s, "
                    f"peak {first['peak_mb']:5.0f} MB, {first['expired']:,.0f} expired + "
                    f"{first['reminded']:,.0f} reminders queued | nothing due: "
                    f"{second['seconds']:5.2f} s, peak {second['peak_mb']:4.0f} MB",
                    flush=True,
                )


if __name__ == "__main__":
    main()
