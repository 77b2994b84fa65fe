"""Embedded store throughput, with baselines measured in the same run.

    .venv/bin/python benchmarks/embedded_store.py [--records 1000000]

Prints:
* record_batch records/s (dicts in: validation, id generation, durable SQLite
  commits) against a bare ``executemany`` of pre-built tuples into a table of
  the same layout (what a plain sqlite3 loop gets on this disk);
* seconds to aggregate N records into HOURLY summaries against a bare
  ``GROUP BY ts / 3600e9`` over the same rows (UTC only, no LAST tie-break);
* the workload of an application that sends its own ids: ``--client-records`` records with
  UUIDv4 ids over 10,000 subjects in ``record_batch`` calls of 1,000, against the bare
  ``executemany`` of the same ids in transactions of 1,000 (the rate of each fifth is
  printed too, since random ids spread every commit over the whole table); and the same
  calls with a durable outbox in front of the store (``outbox=PATH``), which commits each
  call to its own file and delivers to the store in large batches: the rate calls are
  accepted at, and the rate until ``flush()`` saw every record in the store.

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


def make_records(
    n: int, start: datetime, *, client_ids: bool = False, subjects: int = 50
) -> list[dict[str, object]]:
    """``n`` records over 30 days; without ``client_ids`` tsmeter gives them time-ordered
    ids, with it each has a UUIDv4 id as a client may send."""
    step = timedelta(days=30) / n
    return [
        {
            **({"id": str(uuid.uuid4())} if client_ids else {}),
            "metricKey": "api_calls" if i % 3 else "tokens",
            "subjectType": "org",
            "subjectId": f"org-{i % subjects}",
            "quantity": float(i % 17 + 1),
            "timestamp": start + step * i,
        }
        for i in range(n)
    ]


def bare_insert(
    path: Path, n: int, start_ns: int, *, random_ids: bool = False, per: int = 50_000
) -> tuple[float, float, list[float]]:
    """The same table layout filled with pre-built tuples (no validation, no id generation,
    one ``executemany`` per ``per``-row transaction; ids in order, or UUIDv4 with
    ``random_ids``), then a plain UTC ``GROUP BY``; returns (rows/s, seconds of the GROUP BY,
    the rows/s of each fifth)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE r (id TEXT PRIMARY KEY, series_id INTEGER, ts INTEGER, units INTEGER,"
        " recorded_at INTEGER, metadata TEXT, source TEXT) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX r_s ON r (series_id, ts, units)")
    step = 30 * 86_400_000_000_000 // n
    subjects = 10_000 if random_ids else 100
    rows = [
        (str(uuid.uuid4() if random_ids else uuid.UUID(int=i)), i % subjects,
         start_ns + i * step, 1_000_000, 0)
        for i in range(n)
    ]  # fmt: skip
    fifths = Fifths(n)
    for i in range(0, n, per):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR IGNORE INTO r (id, series_id, ts, units, recorded_at)"
            " VALUES (?, ?, ?, ?, ?)",
            rows[i : i + per],
        )
        conn.execute("COMMIT")
        fifths.done(i + per)
    elapsed = fifths.elapsed()
    t0 = time.perf_counter()
    conn.execute(
        "SELECT series_id, ts / 3600000000000, count(*), sum(units), min(units),"
        " max(units), max(ts) FROM r GROUP BY 1, 2"
    ).fetchall()
    bare_group = time.perf_counter() - t0
    conn.close()
    return n / elapsed, bare_group, fifths.rates


class Fifths:
    """The rate of each fifth of ``n`` rows written in steps, timed from construction."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rates: list[float] = []
        self.t0 = self.last = time.perf_counter()
        self.mark = 0

    def done(self, count: int) -> None:
        """``count`` rows are written (in order)."""
        if count - self.mark >= self.n / 5 or count >= self.n:
            now = time.perf_counter()
            self.rates.append((count - self.mark) / (now - self.last))
            self.mark, self.last = count, now

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def client_ids(path: str, records: list[dict[str, object]]) -> tuple[float, list[float]]:
    """records/s of ``record_batch`` in calls of 1,000 (and of each fifth) on a new store."""
    with tsmeter.connect(f"sqlite:///{path}", create=True) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.define_metric("tokens", aggregation_type="SUM")
        fifths = Fifths(len(records))
        for i in range(0, len(records), 1_000):
            meter.record_batch(records[i : i + 1_000])
            fifths.done(i + 1_000)
        return len(records) / fifths.elapsed(), fifths.rates


def through_outbox(path: str, records: list[dict[str, object]]) -> tuple[float, float]:
    """(records/s accepted, records/s until every record is in the store) of ``record_batch``
    in calls of 1,000 through a durable outbox in front of a new store."""
    with tsmeter.connect(f"sqlite:///{path}", create=True, outbox=f"{path}.outbox") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.define_metric("tokens", aggregation_type="SUM")
        t0 = time.perf_counter()
        for i in range(0, len(records), 1_000):
            meter.record_batch(records[i : i + 1_000])
        accepted = time.perf_counter() - t0
        if not meter.flush(600):
            raise SystemExit("the outbox did not deliver within 600 s")
        stored = time.perf_counter() - t0
        return len(records) / accepted, len(records) / stored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--client-records", type=int, default=200_000)
    args = parser.parse_args()
    n = args.records
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        ceiling, bare_group, _ = bare_insert(Path(tmp) / "bare.db", n, 1_767_225_600 * 10**9)
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
        del records
        m = args.client_records
        bare_random, _, bare_fifths = bare_insert(
            Path(tmp) / "bare4.db", m, 1_767_225_600 * 10**9, random_ids=True, per=1_000
        )
        client_records = make_records(m, start, client_ids=True, subjects=10_000)
        client_rate, client_fifths = client_ids(f"{tmp}/client.db", client_records)
        via_accepted, via_stored = through_outbox(f"{tmp}/via.db", client_records)
    print(f"records: {n:,}")
    print(f"record_batch           {rate:>12,.0f} records/s   (target >= 200,000)")
    print(f"bare executemany       {ceiling:>12,.0f} records/s   ratio {rate / ceiling:.2f}")
    print(
        f"aggregate HOURLY       {agg:>12.2f} s           (target <= 3 s;"
        f" {result.summaries_written:,} summaries)"
    )
    print(f"bare GROUP BY (UTC)    {bare_group:>12.2f} s           ratio {agg / bare_group:.2f}")
    print(f"{m:,} records with UUIDv4 ids over 10,000 subjects, calls of 1,000:")
    print(f"record_batch           {client_rate:>12,.0f} records/s   ratio"
          f" {client_rate / bare_random:.2f}; each fifth: "
          + ", ".join(f"{r:,.0f}" for r in client_fifths))  # fmt: skip
    print(f"bare executemany       {bare_random:>12,.0f} records/s   (transactions of 1,000);"
          " each fifth: " + ", ".join(f"{r:,.0f}" for r in bare_fifths))  # fmt: skip
    print(
        f"through an outbox      {via_stored:>12,.0f} records/s   until stored (ratio"
        f" {via_stored / client_rate:.2f} of direct); calls accepted at {via_accepted:,.0f}/s"
    )
    ok = rate >= 200_000 and agg <= 3.0 * n / 1_000_000
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
