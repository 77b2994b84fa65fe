"""A fleet: three host processes with distinct writer names sharing one PostgreSQL state store
and one real influxd, each recording through its own default outbox.

A metric defined on one host is used by all; 30,000 records, of which 10 % are retried through
another host with another timestamp, give exact totals (an independent Decimal sum); a
threshold crossed while all three monitors evaluate at once opens one alert and sends one
email (a real SMTP server) and one webhook; ``kill -9`` of the scheduler holding the job lease
moves the jobs to another host."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from tests.influx_server import InfluxServer
from tests.notify_servers import smtp_server, webhook_server

HOSTS = 3
RECORDS = 30_000
DAY = datetime(2026, 11, 10, tzinfo=UTC)
EVALUATE_AT = DAY + timedelta(hours=23, minutes=30)
LIMIT = 1_000.0  # org-1's daily api_calls limit (it uses far more)


def quantity(i: int) -> float:
    """Quantities whose float sums are exact (quarters), so Decimal can check them."""
    return (i % 97) + 0.25 * (i % 4)


def record(i: int, *, retried: bool = False) -> dict[str, Any]:
    """Record ``i`` of the day; a retry carries the same id at another time."""
    at = DAY + timedelta(seconds=i * 2.5) + (timedelta(minutes=37) if retried else timedelta())
    return {"id": f"fleet-{i:05d}", "metricKey": "api_calls", "subjectType": "org",
            "subjectId": f"org-{i % 50}", "quantity": quantity(i), "timestamp": at}  # fmt: skip


def host(k: int, url: str, home: str, env: dict[str, str], step: Any, results: Any) -> None:
    """One host of the fleet (a child process): each barrier wait is one step of the test."""
    os.environ.update(env)
    os.environ["XDG_DATA_HOME"] = home  # this host's own outbox
    import tsmeter
    from tsmeter.integrations.notify import Notifier

    try:
        with tsmeter.connect(url.replace("writer=W", f"writer=host{k}"), mirror=False) as meter:
            if k == 0:
                meter.define_metric("api_calls", aggregation_type="SUM")
            step.wait(timeout=120)  # the metric is defined, once, for all
            mine = [record(i) for i in range(RECORDS) if i % HOSTS == k]
            for at in range(0, len(mine), 1_000):
                meter.record_batch(mine[at : at + 1_000])
            assert meter.flush(120)
            step.wait(timeout=120)  # every original is stored
            # 10 % retried through the next host, at another time
            retries = [record(i, retried=True) for i in range(RECORDS)
                       if i % 10 == 0 and (i + 1) % HOSTS == k]  # fmt: skip
            meter.record_batch(retries)
            assert meter.flush(120)
            step.wait(timeout=120)  # every retry went through
            if k == 0:
                meter.create_threshold(
                    "api_calls", "org", LIMIT, "org-1", period_type="DAILY",
                    notify_emails=["ops@acme.test"], notify_webhook=env["HOOK"],
                )  # fmt: skip
            step.wait(timeout=120)  # the threshold exists for all
            result = meter.evaluate_thresholds(now=EVALUATE_AT)
            step.wait(timeout=120)  # all three evaluated
            notifier = Notifier.for_meter(meter, worker=False)
            try:
                counts = notifier.deliver_pending()
            finally:
                notifier.close()
            total = sum(Decimal(str(s.total_quantity)) for s in meter.get_usage_summaries(
                "api_calls", "DAILY", start=DAY, end=DAY + timedelta(days=1)))  # fmt: skip
            results.put((k, "ok", result.exceeded, counts.delivered, str(total)))
    except BaseException as exc:  # reported to the parent, which fails the test
        step.abort()
        results.put((k, f"{type(exc).__name__}: {exc}", 0, 0, "0"))


def test_three_hosts_meter_like_one(
    influx_db: tuple[InfluxServer, str], pg_url: str, tmp_path: Path
) -> None:
    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=W&state={pg_url}"
    expected = sum(Decimal(str(quantity(i))) for i in range(RECORDS))
    ctx = multiprocessing.get_context("spawn")
    step, results = ctx.Barrier(HOSTS), ctx.Queue()
    with smtp_server() as smtp, webhook_server() as hook:
        env = {"TSMETER_SMTP_HOST": "127.0.0.1", "TSMETER_SMTP_PORT": str(smtp.port),
               "TSMETER_SMTP_SECURITY": "none", "TSMETER_SMTP_FROM": "alerts@tsmeter.test",
               "HOOK": hook.url}  # fmt: skip
        procs = [ctx.Process(target=host, args=(k, url, str(tmp_path / f"host{k}"), env, step,
                                                results)) for k in range(HOSTS)]  # fmt: skip
        for proc in procs:
            proc.start()
        outcomes = sorted(results.get(timeout=300) for _ in procs)
        for proc in procs:
            proc.join(timeout=60)
        assert [o[1] for o in outcomes] == ["ok"] * HOSTS, outcomes
        mails = smtp.wait_for(1)
        hits = hook.wait_for(1)
        # whoever delivered, nothing more arrives
        assert len(smtp.wait_for(2, timeout=1.0)) == 1 and len(hook.wait_for(2, timeout=1.0)) == 1
    # exact totals, seen alike by every host and by InfluxDB itself
    assert {Decimal(o[4]) for o in outcomes} == {expected}
    stored = server.series('SELECT count("units"), sum("units") FROM "usage"', db)[0]
    assert stored["count"] == RECORDS
    assert Decimal(stored["sum"]).scaleb(-6) == expected  # integer units of precision 6
    # one alert, one email, one webhook, whichever monitors saw the crossing
    assert sum(o[2] for o in outcomes) == 1
    assert sum(o[3] for o in outcomes) == 2
    assert [m.rcpt_tos for m in mails] == [["ops@acme.test"]] and len(hits) == 1
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM metrics").fetchone() == (1,)


def test_kill_9_of_the_lease_holder_moves_the_jobs_to_another_host(
    influx_db: tuple[InfluxServer, str], pg_url: str, tmp_path: Path
) -> None:
    """Two ``tsmeter scheduler run`` processes on the fleet's store: one runs the jobs; after
    ``kill -9`` of it, the other runs them within the lease's ttl plus a third of it."""
    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=W&state={pg_url}"
    root = Path(__file__).resolve().parents[2]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
    logs = [tmp_path / f"scheduler{k}.log" for k in range(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tsmeter",
                "--store",
                url.replace("writer=W", f"writer=s{k}"),
                "scheduler",
                "run",
                "--job",
                "evaluate-thresholds",
                "--evaluate-every",
                "1s",
                "--lease-ttl",
                "2s",
            ],
            cwd=root,
            env={**environ, "PYTHONPATH": str(root), "XDG_DATA_HOME": str(tmp_path / f"s{k}")},
            stdout=subprocess.DEVNULL,
            stderr=logs[k].open("wb"),
        )
        for k in range(2)
    ]

    def runs(k: int) -> int:
        return logs[k].read_text(errors="replace").count("job=evaluate-thresholds ok")

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and runs(0) + runs(1) < 3:
            time.sleep(0.1)
        counts = [runs(0), runs(1)]
        assert sum(counts) >= 3, [log.read_text() for log in logs]
        assert min(counts) == 0, counts  # one holder runs the jobs, the other waits
        holder = counts.index(max(counts))
        other = 1 - holder
        procs[holder].send_signal(signal.SIGKILL)
        procs[holder].wait(timeout=10)
        killed = time.monotonic()
        while time.monotonic() < killed + 10 and runs(other) == 0:
            time.sleep(0.05)
        taken = time.monotonic() - killed
        assert runs(other) >= 1, logs[other].read_text()
        assert taken <= 2.0 + 2.0 / 3 + 1.5  # ttl + ttl/3, plus a job run and slack
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
