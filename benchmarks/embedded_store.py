"""Embedded store throughput, with baselines measured in the same run.

    .venv/bin/python benchmarks/embedded_store.py [--records 1000000]

Prints:
* record_batch records/s (dicts in: validation, id generation, durable SQLite
  commits) against a bare ``executemany`` of pre-built tuples into a table of
  the same layout (what a plain sqlite3 loop gets on this disk);
* seconds to aggregate N records into HOURLY summaries against a bare
  ``GROUP BY ts / 3600e9`` over the same rows (UTC only, no LAST tie-break).

Targets (issue "Metering core"): >= 200,000 records/s and <= 3 s per 1M records.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import tsmeter


def make_records(n: int, start: datetime) -> list[dict[str, object]]:
    step = timedelta(days=30) / n
    return [
        {
            "metricKey": "api_calls" if i % 3 else "tokens",
            "subjectType": "org",
            "subjectId": f"org-{i % 50}",
            "quantity": float(i % 17 + 1),
            "timestamp": start + step * i,
        }
        for i in range(n)
    ]


def bare_insert(path: Path, n: int, start_ns: int) -> tuple[float, float]:
    """The same table layout filled with pre-built tuples (no validation, no id generation,
    one ``executemany`` per 50,000-row transaction), then a plain UTC ``GROUP BY``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE r (id TEXT PRIMARY KEY, series_id INTEGER, ts INTEGER, units INTEGER,"
        " recorded_at INTEGER, metadata TEXT, source TEXT) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX r_s ON r (series_id, ts, units)")
    step = 30 * 86_400_000_000_000 // n
    rows = [(str(uuid.UUID(int=i)), i % 100, start_ns + i * step, 1_000_000, 0) for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, 50_000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR IGNORE INTO r (id, series_id, ts, units, recorded_at)"
            " VALUES (?, ?, ?, ?, ?)",
            rows[i : i + 50_000],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    conn.execute(
        "SELECT series_id, ts / 3600000000000, count(*), sum(units), min(units),"
        " max(units), max(ts) FROM r GROUP BY 1, 2"
    ).fetchall()
    bare_group = time.perf_counter() - t0
    conn.close()
    return n / elapsed, bare_group


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.records
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        ceiling, bare_group = bare_insert(Path(tmp) / "bare.db", n, 1_767_225_600 * 10**9)
        records = make_records(n, start)
        with tsmeter.connect(f"sqlite:///{tmp}/bench.db") as meter:
            meter.define_metric("api_calls", aggregation_type="COUNT")
            meter.define_metric("tokens", aggregation_type="SUM")
            t0 = time.perf_counter()
            for i in range(0, n, 100_000):
                meter.record_batch(records[i : i + 100_000])
            rate = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = meter.aggregate("HOURLY")
            agg = time.perf_counter() - t0
    print(f"records: {n:,}")
    print(f"record_batch           {rate:>12,.0f} records/s   (target >= 200,000)")
    print(f"bare executemany       {ceiling:>12,.0f} records/s   ratio {rate / ceiling:.2f}")
    print(
        f"aggregate HOURLY       {agg:>12.2f} s           (target <= 3 s;"
        f" {result.summaries_written:,} summaries)"
    )
    print(f"bare GROUP BY (UTC)    {bare_group:>12.2f} s           ratio {agg / bare_group:.2f}")
    ok = rate >= 200_000 and agg <= 3.0 * n / 1_000_000
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
