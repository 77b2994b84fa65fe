"""The InfluxDB id ledger: adds and lookups of a million ids, as a store's writes make them.

    .venv/bin/python benchmarks/id_ledger.py [--ids 1000000] [--batch 10000]

For each kind of id — tsmeter's own (UUIDv7: time-ordered, so they cluster in blocks) and
a client's UUIDv4 (random order) — the ids go through a fresh ledger file in batches of
``--batch``: ``known`` of the batch (the lookup before each write), then ``add``. Prints the
seconds of all adds and of all lookups, and adds per second; next to them a bare
``executemany`` of the same (target, id, series, time) entries into one table with the
ids as primary key, in transactions of one batch (what plain sqlite3 does on this disk).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tsmeter.adapters.influxdb.ledger import IdLedger
from tsmeter.domain import RecordRow, new_ids

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def make_rows(ids: list[str]) -> list[RecordRow]:
    return [
        RecordRow(rid, "api_calls" if i % 3 else "tokens", "org", f"org-{i % 50}", None, 1.0,
                  START_NS + i * 13_000_000, None, None)
        for i, rid in enumerate(ids)
    ]  # fmt: skip


def through_ledger(path: Path, rows: list[RecordRow], batch: int) -> tuple[float, float]:
    ledger = IdLedger(str(path), "http://127.0.0.1:8086/bench")
    adds = lookups = 0.0
    try:
        for i in range(0, len(rows), batch):
            part = rows[i : i + batch]
            t0 = time.perf_counter()
            ledger.known([row.id for row in part])
            t1 = time.perf_counter()
            ledger.add(part)
            t2 = time.perf_counter()
            lookups += t1 - t0
            adds += t2 - t1
    finally:
        ledger.close()
    return adds, lookups


def bare(path: Path, rows: list[RecordRow], batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE ids (target_no INTEGER, id TEXT, series_no INTEGER, ts INTEGER,"
        " PRIMARY KEY (target_no, id)) WITHOUT ROWID"
    )
    entries = [(1, row.id, i % 100, row.ts) for i, row in enumerate(rows)]
    t0 = time.perf_counter()
    for i in range(0, len(entries), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO ids VALUES (?, ?, ?, ?)", entries[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    n = args.ids
    print(f"ids: {n:,} in batches of {args.batch:,}")
    kinds = {
        "UUIDv7 (tsmeter's)": new_ids(n),
        "UUIDv4 (a client's)": [str(uuid.uuid4()) for _ in range(n)],
    }
    for label, ids in kinds.items():
        rows = make_rows(ids)
        with tempfile.TemporaryDirectory() as tmp:
            adds, lookups = through_ledger(Path(tmp) / "ledger.db", rows, args.batch)
            plain = bare(Path(tmp) / "bare.db", rows, args.batch)
        print(
            f"{label:<20} add {adds:6.2f} s ({n / adds:>10,.0f} ids/s)   known {lookups:6.2f} s"
            f"   bare executemany {plain:6.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
