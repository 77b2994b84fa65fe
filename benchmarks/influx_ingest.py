"""Records/s into a local influxd: ``record_batch`` through the InfluxDB store vs the ceiling.

    .venv/bin/python benchmarks/influx_ingest.py [--records 1000000]

Starts its own influxd 1.x on 127.0.0.1 (Debian's ``influxdb`` package) in a
temporary directory and, in one run, measures:

* the ceiling: pre-built line protocol for the same points POSTed in batches
  of 10,000 over one keep-alive HTTP session (no validation, no checks);
* ``Meter.record_batch`` of the same records as dicts through ``influxdb://``
  (validation, id ledger, the read that prevents collapse and double counting,
  encoding, the write): all in one call, then new records in calls of 50,000;
* the ceiling again at the end; ratios are taken against the faster of the two.

Target (issue "InfluxDB stores"): record_batch >= 80 % of the ceiling. The first
line says whether the compiled fast paths ran (``TSMETER_PURE_PYTHON=1`` turns
them off).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tsmeter
from tests.influx_server import InfluxServer
from tsmeter import speedups
from tsmeter.adapters.influxdb.lineprotocol import UsageEncoder
from tsmeter.domain import RecordRow, new_ids
from tsmeter.domain.validation import to_ns


def make_records(n: int, start: datetime) -> list[dict[str, object]]:
    """``n`` records of two metrics by 100 organisations over 30 days."""
    step = timedelta(days=30) / n
    ids = new_ids(n)
    return [
        {
            "id": ids[i],
            "metricKey": "api_calls" if i % 3 else "tokens",
            "subjectType": "org",
            "subjectId": f"org-{i % 100}",
            "quantity": float(i % 17 + 1),
            "timestamp": start + step * i,
        }
        for i in range(n)
    ]


def ceiling(server: InfluxServer, db: str, records: list[dict[str, object]]) -> float:
    """Points/s of a bare keep-alive POST loop of pre-built lines."""
    rows = [
        RecordRow(str(r["id"]), str(r["metricKey"]), "org", str(r["subjectId"]), None,
                  float(r["quantity"]), to_ns(r["timestamp"]), None, None)  # type: ignore[arg-type]
        for r in records
    ]  # fmt: skip
    encoder = UsageEncoder("usage", writer="bench")
    bodies = [encoder.encode(rows[i : i + 10_000]) for i in range(0, len(rows), 10_000)]
    session = requests.Session()
    t0 = time.perf_counter()
    for body in bodies:
        response = session.post(
            f"{server.url}/write", params={"db": db, "precision": "ns"}, data=body, timeout=60
        )
        response.raise_for_status()
    return len(rows) / (time.perf_counter() - t0)


def recorded(url: str, records: list[dict[str, object]], call: int) -> tuple[float, float]:
    """(records/s of ``record_batch`` in calls of ``call`` records, s of HOURLY aggregation)."""
    with tsmeter.connect(url) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.define_metric("tokens", aggregation_type="SUM")
        t0 = time.perf_counter()
        for i in range(0, len(records), call):
            meter.record_batch(records[i : i + call])
        rate = len(records) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        meter.aggregate("HOURLY")
        return rate, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.records
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp, InfluxServer() as server:
        server.start()
        for db in ("bare", "bare2", "meter", "meter2"):
            server.create_database(db)
        url = f"influxdb://127.0.0.1:{server.port}/{{}}?writer=bench&state={tmp}/{{}}.db"
        records = make_records(n, start)
        before = ceiling(server, "bare", records)
        one, hourly = recorded(url.format("meter", "meter"), records, n)
        records = make_records(n, start)  # new ids
        calls, _ = recorded(url.format("meter2", "meter2"), records, 50_000)
        after = ceiling(server, "bare2", records)
    bare = max(before, after)  # the faster ceiling: the ratios below are the lower ones
    print(f"records: {n:,} (influxd 1.x on 127.0.0.1; {speedups.describe()})")
    print(f"bare keep-alive POST loop      {before:>10,.0f} points/s   (ceiling, first)")
    print(f"                               {after:>10,.0f} points/s   (ceiling, last)")
    print(f"record_batch, one call         {one:>10,.0f} records/s  ratio {one / bare:.2f}"
          "  (target >= 0.80)")  # fmt: skip
    print(f"record_batch, calls of 50,000  {calls:>10,.0f} records/s  ratio {calls / bare:.2f}")
    print(f"aggregate HOURLY (push-down)   {hourly:>10.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
