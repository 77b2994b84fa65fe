"""The id ledgers: adds and lookups of a million ids, as a store's writes make them.

    .venv/bin/python benchmarks/id_ledger.py [--ids 1000000] [--batch 10000] [--no-postgres]

For each kind of id — tsmeter's own (UUIDv7: time-ordered, so they cluster in blocks) and
a client's UUIDv4 (random order) — the ids go through a fresh ledger in batches of
``--batch``: ``known`` of the batch (the lookup before each write), then its entry (the
SQLite ledger's ``add``, which is what its dedupe port's ``claim`` does; PostgreSQL's
``claim``). Prints the seconds of all entries and of all lookups, and entries per second.

SQLite (one host): the ledger file, next to a bare ``executemany`` of the same (target, id,
series, time) entries into one table with the ids as primary key, in transactions of one
batch (what plain sqlite3 does on this disk).

PostgreSQL (a fleet; a server started here as the tests start it, so without fsync): the
dedupe port on a fresh database, and batch by batch in turn with it a bare binary COPY of the
same entries into a plain table with the same primary key, a transaction per batch, and a
bare ``= ANY`` lookup of each batch; then every batch taken over by another writer at other
locations (a retry whose points never landed: the conditional upsert). Ratios are the bare
time over the port's (1.0: as fast as the bare statements).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tsmeter.adapters.influxdb.ledger import IdLedger
from tsmeter.domain import RecordRow, new_ids

TARGET = "http://127.0.0.1:8086/bench"

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def make_rows(ids: list[str]) -> list[RecordRow]:
    return [
        RecordRow(rid, "api_calls" if i % 3 else "tokens", "org", f"org-{i % 50}", None, 1.0,
                  START_NS + i * 13_000_000, None, None)
        for i, rid in enumerate(ids)
    ]  # fmt: skip


def through_ledger(path: Path, rows: list[RecordRow], batch: int) -> tuple[float, float]:
    ledger = IdLedger(str(path), TARGET)
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


class PgTimes(NamedTuple):
    adds: float
    lookups: float
    retries: float  # every batch taken over by another writer, at other locations
    bare_adds: float  # a binary COPY of the same entries into a plain table
    bare_lookups: float  # ``= ANY`` of the same ids there


def through_postgres(url: str, rows: list[RecordRow], batch: int) -> PgTimes:
    """The dedupe port on the database at ``url`` (known then claim, per batch) and, batch by
    batch in turn with it so both see the same machine, the bare COPY into a plain table with
    dedupe_ids' primary key and the bare lookup, a transaction each; then every batch taken
    over by another writer one hour later (what a retry elsewhere of writes that never landed
    makes)."""
    import psycopg

    from tsmeter.adapters.postgres.database import StateDatabase
    from tsmeter.adapters.postgres.dedupe import PostgresDedupe

    db = StateDatabase(url)
    dedupe = PostgresDedupe(db, TARGET)
    conn = psycopg.connect(url)
    conn.execute("CREATE TABLE bare_ids (LIKE dedupe_ids INCLUDING ALL)")
    conn.commit()
    times = [0.0] * 5
    try:
        for i in range(0, len(rows), batch):
            part = rows[i : i + batch]
            ids = [row.id for row in part]
            entries = [(1, row.id, (i + j) % 100, row.ts, 1) for j, row in enumerate(part)]
            t0 = time.perf_counter()
            dedupe.known(ids)
            t1 = time.perf_counter()
            dedupe.claim(part, "bench-a")
            t2 = time.perf_counter()
            with conn.cursor(binary=True) as cur:
                cur.execute("SELECT id, series_no, ts FROM bare_ids WHERE target_no = 1"
                            " AND id = ANY(%b)", (ids,))  # fmt: skip
                cur.fetchall()
            conn.commit()
            t3 = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY bare_ids (target_no, id, series_no, ts, writer_no) FROM STDIN"
                    " (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["int4", "text", "int8", "int8", "int8"])
                for entry in entries:
                    copy.write_row(entry)
            conn.commit()
            t4 = time.perf_counter()
            times[0] += t2 - t1
            times[1] += t1 - t0
            times[3] += t4 - t3
            times[4] += t3 - t2
        for i in range(0, len(rows), batch):
            part = [row._replace(ts=row.ts + 3_600_000_000_000) for row in rows[i : i + batch]]
            t0 = time.perf_counter()
            dedupe.take_over(part, "bench-b", 0.0)
            times[2] += time.perf_counter() - t0
    finally:
        conn.close()
        dedupe.close()
        db.close()
    return PgTimes(*times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--no-postgres", action="store_true", help="the SQLite ledger only")
    args = parser.parse_args()
    n = args.ids
    print(f"ids: {n:,} in batches of {args.batch:,}")
    kinds = {
        "UUIDv7 (tsmeter's)": new_ids(n),
        "UUIDv4 (a client's)": [str(uuid.uuid4()) for _ in range(n)],
    }
    print("SQLite id ledger (one host)")
    for label, ids in kinds.items():
        rows = make_rows(ids)
        with tempfile.TemporaryDirectory() as tmp:
            adds, lookups = through_ledger(Path(tmp) / "ledger.db", rows, args.batch)
            plain = bare(Path(tmp) / "bare.db", rows, args.batch)
        print(
            f"{label:<20} add {adds:6.2f} s ({n / adds:>10,.0f} ids/s)   known {lookups:6.2f} s"
            f"   bare executemany {plain:6.2f} s"
        )
    if not args.no_postgres:
        postgres(kinds, args.batch)
    return 0


def postgres(kinds: dict[str, list[str]], batch: int) -> None:
    """The PostgreSQL dedupe port against a bare COPY, on a server started for the run."""
    from tests.pg_server import PostgresServer

    with PostgresServer().start() as server:
        print("PostgreSQL dedupe (a fleet; server without fsync, as in the tests)")
        for number, (label, ids) in enumerate(kinds.items()):
            rows = make_rows(ids)
            n = len(rows)
            url = server.create_database(f"bench{number}")
            t = through_postgres(url, rows, batch)
            print(
                f"{label:<20} claim {t.adds:6.2f} s ({n / t.adds:>10,.0f} ids/s)"
                f"   known {t.lookups:6.2f} s   again {t.retries:6.2f} s"
                f" ({n / t.retries:>8,.0f} ids/s)\n{'':<20} bare COPY {t.bare_adds:6.2f} s"
                f" ({n / t.bare_adds:>10,.0f} ids/s)   bare = ANY {t.bare_lookups:6.2f} s"
                f"   bare/port: claim {t.bare_adds / t.adds:.2f}, known"
                f" {t.bare_lookups / t.lookups:.2f}"
            )
            server.drop_database(f"bench{number}")


if __name__ == "__main__":
    sys.exit(main())
