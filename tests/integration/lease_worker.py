"""Processes for the job-lease tests.

``race``: open a lease store, wait at a barrier with the other racers, then acquire and claim;
put what it won on a queue (a spawn-context target, so it lives in an importable module).

``python -m tests.integration.lease_worker PG_URL STORE_DB HOLDER TTL``: a scheduler on a meter
whose leases are in PostgreSQL, running two jobs that write each run they make into the table
``runs`` of that database (created by the test before the workers start: three concurrent
``CREATE TABLE IF NOT EXISTS`` can collide in PostgreSQL's catalog): ``tick`` (``Every``
0.2 s) and ``slot`` (one run per 1-second period, claimed): what the kill -9 test watches.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tsmeter.domain.periods import Calendar
from tsmeter.domain.validation import to_ns
from tsmeter.ports import JobLeases

SECOND_NS = 1_000_000_000
RUNS_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    job text NOT NULL,
    period bigint,
    holder text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def open_leases(kind: str, target: str, name: str = "scheduler") -> JobLeases:
    """A lease store of ``kind`` ("sqlite": a file path, "postgres": a URL)."""
    if kind == "sqlite":
        from tsmeter.adapters.sqlite.leases import SQLiteLeases

        return SQLiteLeases(target, name=name)
    from tsmeter.adapters.postgres.database import StateDatabase
    from tsmeter.adapters.postgres.leases import PostgresLeases

    return PostgresLeases(StateDatabase(target, max_size=2), name=name)


def race(
    kind: str,
    target: str,
    lease: str,
    holder: str,
    periods: int,
    barrier: Any,
    results: Any,
) -> None:
    """Acquire ``lease`` as ``holder`` and claim periods 0..periods-1 of job "j" after the
    barrier; report (holder, acquired, [claimed periods])."""
    leases = open_leases(kind, target, lease)
    barrier.wait(timeout=60)
    acquired = leases.acquire(holder, 60.0)
    claimed = [p for p in range(periods) if leases.claim_run("j", p, holder)]
    results.put((holder, acquired, claimed))


@dataclass(frozen=True)
class EverySecond:
    """A period schedule of 1-second periods (aligned on the epoch), firing at each start."""

    @property
    def misfire_grace_time(self) -> int | None:
        return None

    def describe(self) -> str:
        return "every second, one run per second"

    def next_run(self, calendar: Calendar, after: datetime) -> datetime | None:
        return None

    def trigger(self, calendar: Calendar) -> BaseTrigger:
        start = datetime.fromtimestamp(int(time.time()) + 1, UTC)
        return IntervalTrigger(seconds=1, start_date=start, timezone=UTC)

    def period_of(self, calendar: Calendar, at: datetime) -> int:
        ns = to_ns(at.astimezone(UTC))
        return ns - ns % SECOND_NS


def main(url: str, store_db: str, holder: str, ttl: float) -> None:
    """Run the scheduler until SIGTERM (or SIGKILL)."""
    import tsmeter
    from tsmeter.adapters.postgres.database import StateDatabase
    from tsmeter.adapters.postgres.leases import PostgresLeases
    from tsmeter.jobs.registry import Every, Job
    from tsmeter.jobs.scheduler import JobScheduler
    from tsmeter.ports import Capabilities

    conn = psycopg.connect(url, autocommit=True)

    def record(job: str, period: int | None) -> dict[str, int]:
        conn.execute(
            "INSERT INTO runs (job, period, holder) VALUES (%s, %s, %s)", (job, period, holder)
        )
        return {"runs": 1}

    def slot(meter: Any) -> dict[str, int]:
        return record("slot", EverySecond().period_of(meter.calendar, datetime.now(UTC)))

    leases = PostgresLeases(StateDatabase(url, max_size=2))
    base = tsmeter.connect(f"sqlite:///{store_db}")
    meter = tsmeter.Meter(base.store, base.catalog, capabilities=Capabilities(leases=leases))
    jobs = [
        Job("tick", lambda m: record("tick", None), Every(timedelta(seconds=0.2))),
        Job("slot", slot, EverySecond()),
    ]
    scheduler = JobScheduler(meter, jobs, lease_ttl=ttl, holder=holder)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    scheduler.start()
    print("started", flush=True)
    while not stopping:
        time.sleep(0.05)
    scheduler.stop(timeout=10)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
