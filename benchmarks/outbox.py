"""Recording through the durable outbox into a local influxd, against the bare ceiling.

    .venv/bin/python benchmarks/outbox.py [--records 1000000] [--latency-calls 20000]
                                          [--pending 1000000] [--rounds 6]

Starts its own influxd 1.x on 127.0.0.1 (Debian's ``influxdb`` package) in a temporary
directory and measures, in one run (the ceiling and the two outbox modes in each of
``--rounds`` rounds, each into a new database, the order changing per round so each
takes each place equally often when the rounds are a multiple of three; the ratios are
taken between medians, as in benchmarks/influx_ingest.py, since this machine's speed
drifts from one phase to the next: six rounds by default, as single rounds here spread
from 0.6 to 0.96 of the ceiling):

* the ceiling, the server's limit: pre-built line protocol for the same points POSTed in
  batches of 10,000 (no validation, no checks) by one keep-alive HTTP loop and by two
  concurrent keep-alive loops (each its own session, half of the batches, the same
  database emptied between the two); the better of the two is the round's ceiling, as in
  benchmarks/influx_ingest.py (one loop alone is not the server's limit: tsmeter
  writes over more than one connection);
* sustained records/s from one process: ``record_batch`` calls of 1,000 dicts through
  ``connect("influxdb://...", outbox=PATH)``, timed from the first call until ``flush()``
  returned (every record in influxd), in durability "outbox" (each call returns once its
  records are committed to the outbox file) and "memory"; and, for reference, the same
  calls without an outbox, once (each call returns once influxd has the records);
* ``record()`` latency, one thread, one record per call, p50 and p99, in both modes
  (the server up: the flusher delivers while the calls are timed);
* the peak RSS of a child process that queues ``--pending`` records while no server
  listens (they all stay pending in the outbox);
* writing and reading back one stored batch of 200,000 rows in the format the outbox
  writes (msgpack, through msgspec) and in the general one (``marshal``).

Targets (issue "Durable ingestion", kept by issue 19): durable >= 0.70 of the ceiling (the
best of one and two keep-alive loops), memory >= 0.85; memory bounded with 1,000,000
records pending.
"""

from __future__ import annotations

import argparse
import marshal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tsmeter
from benchmarks.influx_ingest import Ceiling, ceiling, cpu_of, own_cpu, print_cpu
from tests.influx_server import InfluxServer, free_port
from tsmeter.adapters.influxdb import speedups
from tsmeter.domain import RecordRow, new_ids
from tsmeter.outbox import batches as outbox_batches

START = datetime(2026, 1, 1, tzinfo=UTC)
CALL = 1_000  # records per record_batch call


def records(n: int, start: datetime, prefix: str) -> Iterator[list[dict[str, Any]]]:
    """``n`` records of two metrics by 100 organisations over 30 days, in lists of CALL."""
    step = timedelta(days=30) / n
    for first in range(0, n, CALL):
        yield [
            {
                "id": f"{prefix}-{i}",
                "metricKey": "api_calls" if i % 3 else "tokens",
                "subjectType": "org",
                "subjectId": f"org-{i % 100}",
                "quantity": float(i % 17 + 1),
                "timestamp": start + step * i,
            }
            for i in range(first, min(n, first + CALL))
        ]


def store_url(port: int, db: str, state: Path) -> str:
    """The influxdb:// URL of ``db``, with its catalog and id ledger in ``state``."""
    return f"influxdb://127.0.0.1:{port}/{db}?writer=bench&state={state}"


def open_meter(url: str, **options: Any) -> tsmeter.Meter:
    """A Meter on ``url`` with the benchmark's two metrics defined."""
    meter = tsmeter.connect(url, **options)
    meter.define_metric("api_calls", aggregation_type="COUNT")
    meter.define_metric("tokens", aggregation_type="SUM")
    return meter


def sustained(url: str, calls: list[list[dict[str, Any]]], **options: Any) -> tuple[float, float]:
    """``(records/s until the last call returned, records/s until flush() returned)``."""
    meter = open_meter(url, **options)
    n = sum(len(c) for c in calls)
    try:
        t0 = time.perf_counter()
        for call in calls:
            meter.record_batch(call)
        accepted = time.perf_counter() - t0
        assert meter.flush(timeout=600), "the outbox did not drain"
        done = time.perf_counter() - t0
    finally:
        meter.close()
    return n / accepted, n / done


def latencies(url: str, calls: int, **options: Any) -> tuple[float, float]:
    """``(p50, p99)`` in microseconds of single ``record()`` calls."""
    meter = open_meter(url, **options)
    spent = []
    try:
        for i in range(calls):
            at = START + timedelta(days=40, milliseconds=i)
            t0 = time.perf_counter_ns()
            meter.record("tokens", "org", f"org-{i % 100}", 1.0, timestamp=at, id=f"lat-{i}")
            spent.append(time.perf_counter_ns() - t0)
        assert meter.flush(timeout=120)
    finally:
        meter.close()
    cuts = statistics.quantiles(spent, n=100)
    return cuts[49] / 1e3, cuts[98] / 1e3


def _memory_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmHWM: peak RSS, VmRSS: now).
    Not getrusage: a child's ru_maxrss starts from its parent's RSS at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def rss_child(argv: list[str]) -> int:
    """In a child process: queue N records with no server listening; print peak RSS (MB)
    and RSS before recording, then exit without waiting for delivery."""
    url, outbox, n = argv[0], argv[1], int(argv[2])
    meter = open_meter(url, outbox=outbox)
    meter.close_timeout = 0.5
    before = _memory_mb("VmRSS")
    t0 = time.perf_counter()
    for call in records(n, START, "pending"):
        meter.record_batch(call)
    seconds = time.perf_counter() - t0
    assert meter.outbox is not None
    pending = meter.outbox.status().pending
    peak = _memory_mb("VmHWM")
    print(f"{peak:.0f} {before:.0f} {pending} {seconds:.1f}")
    meter.close()
    return 0


def batch_format() -> list[tuple[str, float, float]]:
    """``(format, ms to pack, ms to unpack)`` of one batch of 200,000 rows, best of three:
    the format the outbox writes (msgpack through msgspec) and the general one it falls
    back to for unusual values (marshal)."""
    ids = new_ids(200_000)
    rows = [RecordRow(rid, "api_calls", "org", f"org-{i % 100}", None, (i % 17 + 1) * 10**6,
                      1_767_225_600_000_000_000 + i * 2_592_000_000, None, None)
            for i, rid in enumerate(ids)]  # fmt: skip

    def marshalled(rows: list[RecordRow]) -> bytes:
        return bytes([5]) + marshal.dumps(list(map(tuple, rows)))

    found = []
    for pack in (outbox_batches.pack, marshalled):
        packed, unpacked = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            blob = pack(rows)
            t1 = time.perf_counter()
            assert outbox_batches.unpack(blob) == rows
            packed.append(t1 - t0)
            unpacked.append(time.perf_counter() - t1)
        label = {5: "marshal", 4: "msgpack"}[blob[0]]
        found.append((f"{label} (format {blob[0]})", min(packed) * 1e3, min(unpacked) * 1e3))
    return found


#: what each round runs, in the order it runs them: each phase takes each place once
_ORDERS = (("bare", "durable", "memory"), ("durable", "memory", "bare"),
           ("memory", "bare", "durable"))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--latency-calls", type=int, default=20_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rss-child", nargs=3, metavar=("URL", "OUTBOX", "N"))
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child)
    calls = list(records(args.records, START, "r"))
    flat = [r for call in calls for r in call]
    rates: dict[str, list[tuple[float, float]]] = {"bare": [], "durable": [], "memory": []}
    # CPU microseconds per point of each phase: (influxd's, this process's)
    cpu: dict[str, list[tuple[float, float]]] = {"bare": [], "durable": [], "memory": []}
    ceilings: list[Ceiling] = []
    with tempfile.TemporaryDirectory() as tmp, InfluxServer() as server:
        root = Path(tmp)
        # each database is dropped once measured: influxd's compactions of earlier runs'
        # points would otherwise take CPU from the later runs
        for k in range(args.rounds):
            for phase in _ORDERS[k % len(_ORDERS)]:
                db = f"{phase}{k}"
                server.create_database(db)
                url = store_url(server.port, db, root / f"{db}.db")
                assert server.pid is not None
                before = cpu_of(server.pid), own_cpu()
                if phase == "bare":
                    ceilings.append(ceiling(server, db, flat, two_first=k % 2 == 1))
                    rates[phase].append((ceilings[-1].best, ceilings[-1].best))
                else:
                    options: dict[str, Any] = {"outbox": str(root / f"o-{db}.db")}
                    if phase == "memory":
                        options["durability"] = "memory"
                    rates[phase].append(sustained(url, calls, **options))
                points = 2 * len(flat) if phase == "bare" else len(flat)  # the ceiling: twice
                cpu[phase].append((
                    (cpu_of(server.pid) - before[0]) / points * 1e6,
                    (own_cpu() - before[1]) / points * 1e6,
                ))  # fmt: skip
                server.drop_database(db)
        del flat
        server.create_database("direct")
        direct = sustained(store_url(server.port, "direct", root / "direct.db"), calls)
        server.drop_database("direct")
        del calls
        url = {db: store_url(server.port, db, root / f"{db}.db")
               for db in ("lat_durable", "lat_memory")}  # fmt: skip
        for db in url:
            server.create_database(db)
        slow_calls = max(100, args.latency_calls // 10)
        lat_durable = latencies(url["lat_durable"], slow_calls, outbox=str(root / "o3.db"))
        lat_memory = latencies(url["lat_memory"], args.latency_calls, outbox=str(root / "o4.db"),
                               durability="memory")  # fmt: skip
        nowhere = store_url(free_port(), "pending", root / "pending.db")
        child = subprocess.run(
            [sys.executable, __file__, "--rss-child", nowhere, str(root / "o5.db"),
             str(args.pending)],
            capture_output=True, text=True, check=True, timeout=1800,
        )  # fmt: skip
        peak, before, pending, queued_in = child.stdout.split()
    formats = batch_format()
    n = args.records
    print(f"records: {n:,} in record_batch calls of {CALL:,} (influxd 1.x on 127.0.0.1;"
          f" {speedups.describe()})")  # fmt: skip
    print(f"{args.rounds} rounds, each phase into a new database; the order changes per round")
    print("ceiling: the better of one and two concurrent keep-alive POST loops in each round")
    for k in range(args.rounds):
        b, d, m = (rates[p][k][1] for p in ("bare", "durable", "memory"))
        one_loop, two_loops = ceilings[k].one, ceilings[k].two
        print(f"  round {k + 1}: ceiling {b:>9,.0f} ({ceilings[k].loops} loop"
              f"{'s' if ceilings[k].loops == 2 else ''}; 1 loop {one_loop:,.0f},"
              f" 2 loops {two_loops:,.0f})  durable {d:>9,.0f} ({d / b:.2f})"
              f"  memory {m:>9,.0f} ({m / b:.2f})")  # fmt: skip
    bare = statistics.median(rate for rate, _ in rates["bare"])
    twice = sum(c.loops == 2 for c in ceilings)
    print("medians:")
    print(f"bare POST, one keep-alive loop     {statistics.median(c.one for c in ceilings):>10,.0f}"
          " points/s")  # fmt: skip
    print(f"bare POST, two concurrent loops    {statistics.median(c.two for c in ceilings):>10,.0f}"
          " points/s")  # fmt: skip
    print(f"ceiling (best per round)           {bare:>10,.0f} points/s   (two loops were the"
          f" ceiling in {twice} of {len(ceilings)} rounds, one loop in"
          f" {len(ceilings) - twice})")  # fmt: skip
    modes = (("outbox, durability outbox", "durable", "  (target >= 0.70)"),
             ("outbox, durability memory", "memory", "  (target >= 0.85)"))  # fmt: skip
    for name, key, target in modes:
        done = statistics.median(d for _, d in rates[key])
        accepted = statistics.median(a for a, _ in rates[key])
        print(f"{name:<34} {done:>10,.0f} records/s  ratio {done / bare:.2f}{target};"
              f" calls returned at {accepted:,.0f} records/s")  # fmt: skip
    print(f"{'no outbox (direct), one run':<34} {direct[1]:>10,.0f} records/s  ratio"
          f" {direct[1] / bare:.2f}")  # fmt: skip
    print(
        f"record() durability outbox         p50 {lat_durable[0]:>8,.0f} us"
        f"  p99 {lat_durable[1]:>8,.0f} us  ({slow_calls:,} calls, one thread)"
    )
    print(
        f"record() durability memory         p50 {lat_memory[0]:>8,.0f} us"
        f"  p99 {lat_memory[1]:>8,.0f} us  ({args.latency_calls:,} calls, one thread)"
    )
    print(
        f"peak RSS with {int(pending):,} records pending (no server): {peak} MB"
        f" ({before} MB before recording; queued in {queued_in} s)"
    )
    for label, pack_ms, unpack_ms in formats:
        print(f"batch of 200,000 rows, {label:<22} packed in {pack_ms:6.1f} ms,"
              f" read back in {unpack_ms:6.1f} ms")  # fmt: skip
    print_cpu(cpu, bare, (("durable", "durable", 0.70), ("memory", "memory", 0.85)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
