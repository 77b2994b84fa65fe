"""Two hosts' monitors on one PostgreSQL state evaluate a ``*`` threshold over 200 subjects at
the same moment (a barrier): each subject gets one alert and one delivery per target, and when
usage falls back each alert is resolved once, whichever host does it."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tsmeter.adapters.postgres.catalog import PostgresCatalog
from tsmeter.adapters.postgres.database import StateDatabase
from tsmeter.adapters.postgres.deliveries import PostgresDeliveryLog
from tsmeter.adapters.sqlite import SQLiteStore
from tsmeter.metering.meter import Meter
from tsmeter.ports import Capabilities

pytestmark = pytest.mark.postgres

HOSTS = 2
SUBJECTS = 200
START = datetime(2026, 3, 2, tzinfo=UTC)
HOOK = "https://hooks.acme.test/usage"


def host_meter(url: str, usage: str) -> tuple[Meter, StateDatabase]:
    """One host's Meter: the shared usage file, the PostgreSQL catalog and delivery queue."""
    db = StateDatabase(url, max_size=2)
    caps = Capabilities(state_path=usage, deliveries=PostgresDeliveryLog(db))
    return Meter(SQLiteStore(usage), PostgresCatalog(db), timezone="UTC", capabilities=caps), db


def evaluate_worker(url: str, usage: str, now: datetime, barrier: Any, results: Any) -> None:
    """One host: evaluate the thresholds when the other host does; put what it did."""
    meter, db = host_meter(url, usage)
    try:
        barrier.wait(timeout=60)
        done = meter.evaluate_thresholds(now=now)
        results.put((done.exceeded, done.approaching, done.resolved, done.failed))
    finally:
        meter.close()
        db.close()


def run_hosts(url: str, usage: str, now: datetime) -> list[tuple[int, int, int, int]]:
    """Evaluate on ``HOSTS`` spawned processes at once; what each did."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(HOSTS), ctx.Queue()
    procs = [ctx.Process(target=evaluate_worker, args=(url, usage, now, barrier, results))
             for _ in range(HOSTS)]  # fmt: skip
    for p in procs:
        p.start()
    try:
        found = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * HOSTS
    return found


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """What ``sql`` returns, read on a separate connection."""
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_two_monitors_one_alert_per_subject(pg_url: str, tmp_path: Path) -> None:
    """200 crossing subjects, two monitors at once: 200 alerts, one per subject, 200 webhook
    deliveries, and the hosts' counts add up to 200; again with nothing new: nothing; after
    corrections: 200 resolutions, each queued once."""
    usage = str(tmp_path / "usage.db")
    setup, db = host_meter(pg_url, usage)
    setup.define_metric("api_calls", aggregation_type="COUNT", reset_period="MONTHLY")
    setup.create_threshold("api_calls", "org", 3, notify_webhook=HOOK)
    subjects = [f"org-{i:03d} 'x'" for i in range(SUBJECTS)]
    setup.record_batch([
        {"id": f"r{i}-{k}", "metricKey": "api_calls", "subjectType": "org", "subjectId": s,
         "timestamp": START + timedelta(seconds=i * 5 + k)}
        for i, s in enumerate(subjects) for k in range(4)
    ])  # fmt: skip
    setup.close()
    db.close()

    first = run_hosts(pg_url, usage, datetime(2026, 3, 10, tzinfo=UTC))
    assert sum(r[0] for r in first) == SUBJECTS and all(r[1:] == (0, 0, 0) for r in first)
    alerts = rows(pg_url, "SELECT subject_id, level, status FROM alerts")
    assert sorted(alerts) == [(s, "exceeded", "PENDING") for s in subjects]
    queued = rows(pg_url, "SELECT alert_id, event, target FROM notify_deliveries")
    assert len(queued) == len(set(queued)) == SUBJECTS
    assert Counter(e for _, e, _ in queued) == {"threshold.exceeded": SUBJECTS}

    again = run_hosts(pg_url, usage, datetime(2026, 3, 11, tzinfo=UTC))
    assert again == [(0, 0, 0, 0)] * HOSTS
    assert len(rows(pg_url, "SELECT id FROM alerts")) == SUBJECTS

    # a COUNT metric cannot fall within its window: the next window starts with no alerts,
    # so a raised limit is how usage falls back under it here
    setup, db = host_meter(pg_url, usage)
    threshold = setup.list_thresholds()[0]
    setup.update_threshold(threshold.id, threshold=10)
    setup.close()
    db.close()
    fixed = run_hosts(pg_url, usage, datetime(2026, 3, 12, tzinfo=UTC))
    assert sum(r[2] for r in fixed) == SUBJECTS and all(r[:2] == (0, 0) for r in fixed)
    assert rows(pg_url, "SELECT DISTINCT status FROM alerts") == [("RESOLVED",)]
    resolved = rows(pg_url, "SELECT alert_id FROM notify_deliveries"
                            " WHERE event = 'threshold.resolved'")  # fmt: skip
    assert len(resolved) == len(set(resolved)) == SUBJECTS
