"""usage export throughput and peak memory, with baselines measured in the same run.

    .venv/bin/python benchmarks/export.py [--records 1000000] [--subjects 10000] [--no-influx]

Fills an embedded store (and a local influxd 1.x database, from tests/influx_server.py) with
N records (UUIDv4 ids, many subjects, a third with metadata, times over 30 days), then, each
in a fresh process:
* ``Meter.export_usage`` to /dev/null as JSON Lines and as CSV: records/s and peak RSS;
* the baseline: the same rows read without formatting (SQLite: one ``SELECT`` of the
  columns ordered by time; influxd: the raw ``SELECT *`` of the points one day at a time,
  JSON decoded), as records/s, and the export's rate as a ratio of it.

Target (issue 22): >= 100,000 records/s for 1M records, memory not growing with N.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tsmeter
from tsmeter.domain import RecordRow
from tsmeter.metering.export import decimal_text

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SPAN = 30 * 86_400_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_EXPORT = """
import os, sys, time, tsmeter
def peak_kib():  # this process's own high-water mark (ru_maxrss counts the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
meter = tsmeter.connect(sys.argv[1], outbox=False)
with open(os.devnull, "w", encoding="utf-8", newline="") as out:
    t0 = time.perf_counter()
    n = meter.export_usage(out, "api_calls", fmt=sys.argv[2])
    print(n, time.perf_counter() - t0, peak_kib())
"""

_SQLITE_BASE = """
import sqlite3, sys, time
def peak_kib():  # this process's own high-water mark (ru_maxrss counts the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA temp_store = FILE")
conn.execute("PRAGMA cache_size = -8192")
t0 = time.perf_counter()
cur = conn.execute("SELECT id, series_id, units, ts, metadata, source FROM usage_records"
                   " ORDER BY ts, id")
n = 0
while chunk := cur.fetchmany(2000):
    n += len(chunk)
print(n, time.perf_counter() - t0, peak_kib())
"""

_INFLUX_BASE = """
import sys, time, requests
def peak_kib():  # this process's own high-water mark (ru_maxrss counts the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
url, db, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
day = 86_400_000_000_000
session = requests.Session()
t0 = time.perf_counter()
n = 0
for start in range(lo, hi, day):
    body = session.get(f"{url}/query", params={"db": db, "epoch": "ns", "q":
        f'SELECT * FROM "usage" WHERE time >= {start} AND time < {start + day}'}).json()
    for series in body["results"][0].get("series", []):
        n += len(series["values"])
print(n, time.perf_counter() - t0, peak_kib())
"""


def rows(n: int, subjects: int, seed: int = 1) -> list[RecordRow]:
    """N records of api_calls: UUIDv4 ids, random subjects, cents, a third with metadata."""
    rng = random.Random(seed)
    step = SPAN // n // 1000 * 1000
    return [
        RecordRow(str(uuid.UUID(int=rng.getrandbits(128), version=4)), "api_calls", "org",
                  f"org-{rng.randrange(subjects)}", None, rng.randrange(1, 100_000),
                  T0 + i * step, '{"region":"eu","plan":"pro"}' if i % 3 == 0 else None, None)
        for i in range(n)
    ]  # fmt: skip


def run(script: str, *args: str) -> tuple[int, float, float]:
    """(records, seconds, peak RSS in MB) printed by ``script`` run in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), float(out[1]), int(out[2]) / 1024


def report(label: str, url: str, n: int, base: tuple[int, float, float]) -> None:
    count, seconds, peak = base
    assert count == n, (label, count, n)
    base_rate = n / seconds
    print(f"{label} baseline (read, no formatting): {base_rate:>10,.0f} records/s"
          f"  peak RSS {peak:6.1f} MB")  # fmt: skip
    for fmt in ("jsonl", "csv"):
        count, seconds, peak = run(_EXPORT, url, fmt)
        assert count == n, (label, fmt, count, n)
        rate = n / seconds
        print(f"{label} export {fmt:<5}: {rate:>10,.0f} records/s  {seconds:6.2f} s"
              f"  peak RSS {peak:6.1f} MB  {rate / base_rate:.2f}x baseline")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--no-influx", action="store_true")
    args = parser.parse_args()
    n = args.records
    data = rows(n, args.subjects)
    print(f"{n:,} records, {args.subjects:,} subjects")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.db"
        with tsmeter.connect(str(path)) as meter:
            meter.define_metric("api_calls", aggregation_type="SUM", precision=2)
        from tsmeter.adapters.sqlite.store import SQLiteStore

        store = SQLiteStore(str(path))
        for i in range(0, n, 50_000):
            store.append(data[i : i + 50_000], 0)
        store.close()
        report("embedded", str(path), n, run(_SQLITE_BASE, str(path)))
        if args.no_influx:
            return 0
        from tests.influx_server import InfluxServer

        with InfluxServer() as server:
            server.start()
            server.create_database("bench")
            url = f"influxdb://127.0.0.1:{server.port}/bench?writer=bench&state={tmp}/state.db"
            with tsmeter.connect(url, outbox=False) as meter:
                meter.define_metric("api_calls", aggregation_type="SUM", precision=2)
                t0 = time.perf_counter()
                meter.record_batch([
                    {"id": r.id, "metricKey": r.metric_key, "subjectType": r.subject_type,
                     "subjectId": r.subject_id, "quantity": decimal_text(r.quantity, 2),
                     "timestamp": EPOCH + timedelta(microseconds=r.ts // 1000),
                     "metadata": {"region": "eu", "plan": "pro"} if r.metadata else None}
                    for r in data
                ])  # fmt: skip
                print(f"(influxd filled in {time.perf_counter() - t0:.1f} s)")
            base = run(_INFLUX_BASE, server.url, "bench", str(T0), str(T0 + SPAN + 1))
            report("influxd ", url, n, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
