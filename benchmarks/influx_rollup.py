"""HOURLY roll-ups on a local influxd: the full aggregate against the bare group-by, then
incremental runs.

    .venv/bin/python benchmarks/influx_rollup.py [--records 1000000] [--subjects 1000]

Starts its own influxd 1.x on 127.0.0.1 (Debian's ``influxdb`` package) in a temporary
directory, records ``--records`` records (client UUIDv4 ids, ``--subjects`` subjects, two
metrics, random times over 30 days) through ``influxdb://`` without the outbox, and then
measures, in this order:

* the bare InfluxQL ``GROUP BY time(1h)``: the sum of every UTC hour over the same points,
  in one query whose JSON answer is decoded (the better of two runs), the baseline of the
  target; and, for what it tells of the server, the aggregates a summary holds (count, sum,
  min, max, the greatest ``tsn``, last) grouped by hour *and series*, once;
* ``aggregate("HOURLY")`` the first time: every hour of the month, summaries written;
* the same again with nothing new;
* one late record (a time in the middle of the month), then ``aggregate("HOURLY")``;
* one late record sent by another writer whose clock is 4 minutes behind (its change-log
  entry is stamped 4 minutes before the entries already read), then ``aggregate("HOURLY")``.

Targets (issue 21, item 5): the full aggregate within 3x of the bare group-by, one late
record <= 0.2 s, and each incremental run recomputing only the periods it must (0, 1, 1).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tsmeter
from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb import store as influx_store

START = datetime(2026, 10, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
BARE = 'SELECT sum("units") FROM "usage" WHERE time >= $lo AND time < $hi GROUP BY time(1h)'
PER_SERIES = (
    'SELECT count("units"), sum("units"), min("units"), max("units"),'
    ' max("tsn"), last("units") FROM "usage" WHERE time >= $lo AND time < $hi'
    ' GROUP BY time(1h), "metric", "subject_type", "subject_id", "org" fill(none)'
)


def make_records(n: int, subjects: int) -> list[dict[str, object]]:
    """``n`` records of two metrics by ``subjects`` organisations at random times over the
    month, with random (UUIDv4) ids as a client may send."""
    rng = random.Random(21)
    span_us = int(SPAN.total_seconds() * 1_000_000)
    return [
        {
            "id": str(uuid.uuid4()),
            "metricKey": "api_calls" if i % 3 else "tokens",
            "subjectType": "org",
            "subjectId": f"org-{i % subjects}",
            "quantity": float(i % 17 + 1),
            "timestamp": START + timedelta(microseconds=rng.randrange(span_us)),
        }
        for i in range(n)
    ]


@contextmanager
def clock_behind(seconds: float) -> Iterator[None]:
    """Make the InfluxDB store's clock (the stamp of its change-log entries) run behind."""
    real = influx_store.time
    lag = int(seconds * 1e9)
    fake = types.SimpleNamespace(
        **{k: getattr(real, k) for k in dir(real) if not k.startswith("__")}
    )
    fake.time_ns = lambda: real.time_ns() - lag
    influx_store.time = fake  # type: ignore[assignment]
    try:
        yield
    finally:
        influx_store.time = real


def timed(fn: Any) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=1_000)
    args = parser.parse_args()
    records = make_records(args.records, args.subjects)
    lo = int(START.timestamp()) * 10**9
    hi = lo + int(SPAN.total_seconds()) * 10**9
    with tempfile.TemporaryDirectory() as tmp, InfluxServer() as server:
        server.start()
        server.create_database("rollup")
        url = (f"influxdb://127.0.0.1:{server.port}/rollup?state={tmp}/state.db&timeout=900"
               "&writer=")  # fmt: skip
        with tsmeter.connect(url + "bench", outbox=False) as meter:
            meter.define_metric("api_calls", aggregation_type="COUNT")
            meter.define_metric("tokens", aggregation_type="SUM")
            ingest, _ = timed(lambda: meter.record_batch(records))
            bare = min(
                timed(lambda: server.query(BARE, "rollup", {"lo": lo, "hi": hi}, timeout=900))[0]
                for _ in range(2)
            )
            per_series, _ = timed(
                lambda: server.query(PER_SERIES, "rollup", {"lo": lo, "hi": hi}, timeout=900)
            )
            full, first = timed(lambda: meter.aggregate("HOURLY"))
            idle, again = timed(lambda: meter.aggregate("HOURLY"))
            late_at = START + SPAN / 2 + timedelta(minutes=7)
            meter.record("tokens", "org", "org-late", 5, id=str(uuid.uuid4()), timestamp=late_at)
            late, one = timed(lambda: meter.aggregate("HOURLY"))
            with tsmeter.connect(url + "behind", outbox=False) as other, clock_behind(240):
                other.record("tokens", "org", "org-late", 7, id=str(uuid.uuid4()),
                             timestamp=late_at + timedelta(days=3))  # fmt: skip
            skewed, lagging = timed(lambda: meter.aggregate("HOURLY"))
    print(f"records: {args.records:,} ({args.subjects:,} subjects, 2 metrics, 30 days, UUIDv4"
          f" ids; influxd 1.x on 127.0.0.1); recorded in {ingest:.1f} s")  # fmt: skip
    print(f"bare InfluxQL GROUP BY time(1h)           {bare:7.3f} s  (the baseline)")
    print(f"summary aggregates by hour and series     {per_series:7.3f} s  ratio"
          f" {per_series / bare:.2f}  (the server alone, one query)")  # fmt: skip
    print(f"aggregate HOURLY, first run               {full:7.3f} s  ratio {full / bare:.2f}"
          f"  (target <= 3)  periods {first.periods_recomputed}, summaries"
          f" {first.summaries_written:,}")  # fmt: skip
    print(f"aggregate HOURLY, nothing new             {idle:7.3f} s  periods"
          f" {again.periods_recomputed}")  # fmt: skip
    print(f"aggregate HOURLY, one late record         {late:7.3f} s  periods"
          f" {one.periods_recomputed}  (target <= 0.2 s)")  # fmt: skip
    print(f"aggregate HOURLY, late record, clock -4m  {skewed:7.3f} s  periods"
          f" {lagging.periods_recomputed}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
