"""Once fleet-wide, on a real PostgreSQL: processes that each have their own StateDatabase
(as hosts do) open the same alert, claim the same deliveries and evaluate the same threshold
at the same moment (a barrier), and every alert, delivery and claim happens exactly once."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.notify_servers import smtp_server, webhook_server
from tsmeter.adapters.postgres.catalog import PostgresCatalog
from tsmeter.adapters.postgres.database import StateDatabase
from tsmeter.adapters.postgres.deliveries import PostgresDeliveryLog
from tsmeter.adapters.sqlite import SQLiteStore
from tsmeter.domain import AlertStatus, UsageAlert
from tsmeter.domain.deliveries import Channel, DeliveryStatus
from tsmeter.integrations.notify import Notifier, NotifySettings, delivery_id
from tsmeter.metering.meter import Meter
from tsmeter.ports import Capabilities, DeliveryRow

pytestmark = pytest.mark.postgres

PROCESSES = 3
ROUNDS = 20
WINDOW = 1_764_547_200_000_000_000  # 2025-12-01T00:00:00Z in ns
TARGETS = (("email", "ops@acme.test"), ("email", "billing@acme.test"),
           ("webhook", "https://hooks.acme.test/t?k=1"))  # fmt: skip
HOUR = 3_600_000_000_000


def subject(n: int) -> str:
    """The subject of round ``n``: hostile text, so the lock key and the SQL see data."""
    return f"org '{n}', \"x\"=\\y 🚀"


def alert_for(n: int) -> tuple[UsageAlert, list[DeliveryRow]]:
    """A fresh exceeded alert for round ``n``'s key, and its deliveries (one per target)."""
    alert = UsageAlert(
        threshold_id="thr-1", metric_key="api_calls", subject_type="org", subject_id=subject(n),
        level="exceeded", period_start=datetime(2025, 12, 1, tzinfo=UTC),
        period_end=datetime(2026, 1, 1, tzinfo=UTC), actual_value=110, threshold_value=100,
        percentage=110.0, created_at=datetime.now(UTC),
    )  # fmt: skip
    rows = [
        DeliveryRow(id=delivery_id(alert.id, "threshold.exceeded", channel, target),
                    alert_id=alert.id, event="threshold.exceeded", channel=channel,
                    target=target, metric_key="api_calls", subject_type="org",
                    subject_id=alert.subject_id, payload="{}")
        for channel, target in TARGETS
    ]  # fmt: skip
    return alert, rows


# -- what each child process does (spawned: module-level functions) ----------------------
def open_alerts_worker(url: str, rounds: list[int], barrier: Any, results: Any) -> None:
    """For each round: wait for the others, then try to open that round's alert; put the
    list of (round, alert id, opened) on ``results``."""
    db = StateDatabase(url, max_size=2)
    catalog = PostgresCatalog(db)
    outcomes = []
    try:
        for n in rounds:
            alert, deliveries = alert_for(n)
            barrier.wait(timeout=60)
            outcomes.append((n, alert.id, catalog.open_alert(alert, WINDOW, deliveries)))
    finally:
        catalog.close()
        db.close()
    results.put(outcomes)


def claim_worker(url: str, barrier: Any, results: Any) -> None:
    """Claim due deliveries a few at a time until none is left, finishing each as
    delivered; put the ids this process claimed on ``results``."""
    db = StateDatabase(url, max_size=2)
    queue = PostgresDeliveryLog(db)
    mine: list[str] = []
    try:
        barrier.wait(timeout=60)
        while True:
            batch = queue.claim_due(time.time_ns(), time.time_ns(), HOUR, 7,
                                    [Channel.EMAIL, Channel.WEBHOOK])  # fmt: skip
            if not batch:
                break
            for claimed in batch:
                mine.append(claimed.id)
                queue.finish(claimed.id, DeliveryStatus.DELIVERED, time.time_ns())
            time.sleep(0.002)  # let the others in between claims
    finally:
        queue.close()
        db.close()
    results.put(mine)


def monitor_worker(
    url: str, usage: str, ports: tuple[int, str], barrier: Any, results: Any
) -> None:
    """One host: a Meter on the shared usage file and the PostgreSQL catalog; evaluate the
    thresholds when the others do, then run a delivery pass when the others do."""
    db = StateDatabase(url, max_size=2)
    queue = PostgresDeliveryLog(db)
    store = SQLiteStore(usage)
    caps = Capabilities(state_path=usage, deliveries=queue)
    meter = Meter(store, PostgresCatalog(db), timezone="UTC", capabilities=caps)
    smtp_port, _ = ports
    settings = NotifySettings(smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_security="none",
                              smtp_from="alerts@tsmeter.test", webhook_secret="s",
                              smtp_timeout=5.0, webhook_timeout=5.0)  # fmt: skip
    try:
        barrier.wait(timeout=60)
        evaluated = meter.evaluate_thresholds(now=datetime(2026, 3, 10, 12, tzinfo=UTC))
        with Notifier.for_meter(meter, settings, worker=False, attach=False) as notifier:
            barrier.wait(timeout=60)
            sent = notifier.deliver_pending()
        results.put((evaluated.exceeded, evaluated.approaching, sent.delivered, sent.failed))
    finally:
        meter.close()
        queue.close()
        db.close()


def run_all(target: Any, args: tuple[Any, ...], count: int = PROCESSES) -> list[Any]:
    """Run ``count`` spawned processes of ``target(*args, barrier, results)``; their results."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(count)]
    for p in procs:
        p.start()
    try:
        found = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * count
    return found


def drain(results: list[Any]) -> list[Any]:
    """Flatten the lists the workers put."""
    return [item for part in results for item in part]


def rows(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """What ``sql`` returns, read on a separate connection."""
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


# -- the tests -----------------------------------------------------------------------------
def test_processes_open_each_alert_and_queue_its_deliveries_once(pg_url: str) -> None:
    """20 rounds of 3 processes opening the same key at once: one wins each round, one alert
    per key, its deliveries once; then, with half the alerts resolved by hand and half by a
    monitor, another race opens exactly the latter again and the former never."""
    StateDatabase(pg_url).close()  # the schema, before the race
    outcomes = drain(run_all(open_alerts_worker, (pg_url, list(range(ROUNDS)))))
    assert len(outcomes) == ROUNDS * PROCESSES
    winners = {n: alert_id for n, alert_id, opened in outcomes if opened}
    assert Counter(n for n, _, opened in outcomes if opened) == Counter(range(ROUNDS))
    stored = rows(pg_url, "SELECT subject_id, id, status FROM alerts")
    assert sorted(stored) == sorted((subject(n), winners[n], "PENDING") for n in winners)
    queued = rows(pg_url, "SELECT alert_id, channel, target, status FROM notify_deliveries")
    assert sorted(queued) == sorted(
        (winners[n], channel, target, "pending") for n in winners for channel, target in TARGETS
    )

    db = StateDatabase(pg_url)
    catalog = PostgresCatalog(db)
    at = datetime.now(UTC)
    for n, alert_id in winners.items():
        catalog.set_alert_status(alert_id, AlertStatus.RESOLVED, at, automatic=n % 2 == 1)
    catalog.close()
    db.close()
    again = drain(run_all(open_alerts_worker, (pg_url, list(range(ROUNDS)))))
    assert len(again) == ROUNDS * PROCESSES
    reopened = Counter(n for n, _, opened in again if opened)
    assert reopened == Counter(n for n in range(ROUNDS) if n % 2 == 1)
    open_now = rows(pg_url, "SELECT subject_id FROM alerts WHERE status <> 'RESOLVED'")
    assert sorted(s for (s,) in open_now) == sorted(subject(n) for n in range(1, ROUNDS, 2))
    per_alert = rows(pg_url, "SELECT alert_id, count(*) FROM notify_deliveries GROUP BY 1")
    assert len(per_alert) == ROUNDS + ROUNDS // 2
    assert {count for _, count in per_alert} == {len(TARGETS)}


def test_processes_claim_each_delivery_once(pg_url: str) -> None:
    """300 due deliveries, 3 processes claiming 7 at a time at once: each is claimed by
    exactly one process and attempted once; the work was shared."""
    db = StateDatabase(pg_url)
    queue = PostgresDeliveryLog(db)
    now = time.time_ns()
    queue.enqueue([
        DeliveryRow(id=f"d{i:03d}", alert_id=f"a{i}", event="threshold.exceeded",
                    channel=Channel.WEBHOOK if i % 3 else Channel.EMAIL,
                    target=f"https://h.test/{i}", metric_key="api_calls", subject_type="org",
                    subject_id="acme", payload="{}")
        for i in range(300)
    ], now - 1_000)  # fmt: skip
    queue.close()
    db.close()
    claimed = run_all(claim_worker, (pg_url,))
    every = drain(claimed)
    assert len(every) == 300 and set(every) == {f"d{i:03d}" for i in range(300)}
    assert sum(1 for part in claimed if part) >= 2, [len(p) for p in claimed]
    done = rows(pg_url, "SELECT status, attempts, count(*) FROM notify_deliveries GROUP BY 1, 2")
    assert done == [("delivered", 1, 300)]


def test_three_monitors_one_crossing_one_alert_one_message_per_target(
    pg_url: str, tmp_path: Path
) -> None:
    """Three hosts (Meters on one PostgreSQL catalog and one usage file) evaluate a crossed
    threshold at once, then run delivery passes at once: one alert, one delivery per target,
    and the real SMTP server and webhook receiver each get exactly one message per target."""
    usage = str(tmp_path / "usage.db")
    with smtp_server() as smtp, webhook_server() as hook:
        db = StateDatabase(pg_url)
        setup = Meter(SQLiteStore(usage), PostgresCatalog(db), timezone="UTC",
                      capabilities=Capabilities(state_path=usage,
                                                deliveries=PostgresDeliveryLog(db)))  # fmt: skip
        setup.define_metric("api_calls", aggregation_type="COUNT", reset_period="MONTHLY")
        emails = ["ops@acme.test", "billing@acme.test"]
        setup.create_threshold("api_calls", "org", 100, "acme", notify_emails=emails,
                               notify_webhook=hook.url)  # fmt: skip
        start = datetime(2026, 3, 2, tzinfo=UTC)
        setup.record_batch([
            {"id": f"r{i}", "metricKey": "api_calls", "subjectType": "org", "subjectId": "acme",
             "timestamp": start + timedelta(minutes=i)}
            for i in range(120)
        ])  # fmt: skip
        setup.close()
        db.close()
        outcomes = run_all(monitor_worker, (pg_url, usage, (smtp.port, hook.url)))
        assert sum(o[0] for o in outcomes) == 1 and sum(o[1] for o in outcomes) == 0
        assert sum(o[2] for o in outcomes) == 3 and sum(o[3] for o in outcomes) == 0
        received = smtp.wait_for(2, timeout=1)
        hits = hook.wait_for(1, timeout=1)
        time.sleep(0.2)  # anything sent twice would have arrived by now
        assert sorted(r.rcpt_tos[0] for r in smtp.received) == sorted(emails)
        assert len(received) == 2 and len(hits) == len(hook.hits) == 1
    alerts = rows(pg_url, "SELECT id, level, subject_id FROM alerts")
    assert [(level, sid) for _, level, sid in alerts] == [("exceeded", "acme")]
    queued = rows(pg_url, "SELECT alert_id, channel, target, status, attempts"
                          " FROM notify_deliveries ORDER BY channel, target")  # fmt: skip
    assert queued == [
        (alerts[0][0], "email", "billing@acme.test", "delivered", 1),
        (alerts[0][0], "email", "ops@acme.test", "delivered", 1),
        (alerts[0][0], "webhook", hook.url, "delivered", 1),
    ]
