"""record() from one thread and from eight on the default path: InfluxDB behind its outbox.

    .venv/bin/python benchmarks/record_threads.py [--seconds 5] [--rounds 3] [--threads 8]

Starts its own influxd 1.x on 127.0.0.1 (Debian's ``influxdb`` package) in a temporary
directory, points ``$XDG_DATA_HOME`` there, and opens ``tsmeter.connect("influxdb://...")``
with no outbox option: the default path, so records go through the store's default outbox
(durability "outbox": each call returns once its record is committed to the outbox file,
``synchronous = FULL``). In each of ``--rounds`` rounds, one thread and then ``--threads``
threads (the order alternating per round, each into a new database) call ``record()`` one
record at a time for ``--seconds``; every call is timed. Printed per round and as medians:
records/s (calls returned per second of the phase), p50 and p99 of one call, the records
per outbox commit, and the ratio of the threads' rate to one thread's (target >= 5). For
scale, the threads and one thread also run in durability "memory" (no commit to wait for):
the threads' rate there bounds the durable ratio, and its distance from one thread's shows
what the threads lose to each other rather than to commits.

Every phase then waits for ``flush()`` and checks with InfluxQL that the database holds
exactly the records whose calls returned, so a fast phase that lost or doubled records
does not count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tsmeter
from tests.influx_server import InfluxServer

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Phase:
    """What one phase measured."""

    threads: int
    calls: int
    seconds: float
    p50_us: float
    p99_us: float
    commits: int

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


def phase(
    server: InfluxServer, db: str, threads: int, seconds: float, durability: str = "outbox"
) -> Phase:
    """``threads`` threads calling ``record()`` for ``seconds`` on the default path."""
    server.create_database(db)
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=bench"
    meter = tsmeter.connect(url, durability=durability)
    assert meter.outbox is not None, "the default path has an outbox"
    meter.define_metric("api_calls", aggregation_type="COUNT")
    spent: list[list[int]] = [[] for _ in range(threads)]
    failures: list[BaseException] = []
    go = threading.Barrier(threads + 1)
    stop = threading.Event()

    def work(t: int) -> None:
        mine = spent[t]
        go.wait()
        try:
            i = 0
            while not stop.is_set():
                at = START + timedelta(milliseconds=i)
                t0 = time.perf_counter_ns()
                meter.record("api_calls", "org", f"org-{t}", timestamp=at, id=f"{t}-{i}")
                mine.append(time.perf_counter_ns() - t0)
                i += 1
        except BaseException as exc:  # reported after the phase
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    commits_before = meter.outbox.commits
    go.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - t0
    commits = meter.outbox.commits - commits_before
    try:
        assert not failures, failures[0]
        assert meter.flush(timeout=300), "the outbox did not drain"
    finally:
        meter.close()
    every = [ns for part in spent for ns in part]
    found = server.series('SELECT count("units") AS n FROM usage', db)
    stored = int(found[0]["n"]) if found else 0
    assert stored == len(every), f"{db}: {stored} points for {len(every)} calls"
    server.drop_database(db)
    cuts = statistics.quantiles(every, n=100)
    return Phase(threads, len(every), elapsed, cuts[49] / 1e3, cuts[98] / 1e3, commits)


def line(label: str, p: Phase) -> str:
    return (f"{label:<12} {p.rate:>9,.0f} records/s  p50 {p.p50_us:>7,.0f} us"
            f"  p99 {p.p99_us:>7,.0f} us  {p.calls / max(p.commits, 1):5.1f} records/commit"
            f"  ({p.calls:,} calls in {p.seconds:.1f} s)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    one: list[Phase] = []
    many: list[Phase] = []
    cpu: list[Phase] = []  # the threads in durability memory: no commit to wait for
    alone: list[Phase] = []  # one thread in durability memory
    with tempfile.TemporaryDirectory() as tmp, InfluxServer() as server:
        os.environ["XDG_DATA_HOME"] = str(Path(tmp) / "xdg")  # the default outbox lives here
        os.environ.pop("TSMETER_OUTBOX", None)
        os.environ.pop("TSMETER_DURABILITY", None)
        for k in range(args.rounds):
            order = (1, args.threads) if k % 2 == 0 else (args.threads, 1)
            for n in order:
                (one if n == 1 else many).append(phase(server, f"r{k}_{n}", n, args.seconds))
            cpu.append(phase(server, f"r{k}_m", args.threads, args.seconds, "memory"))
            alone.append(phase(server, f"r{k}_m1", 1, args.seconds, "memory"))
    print(f"record() on the default path (influxd 1.x on 127.0.0.1, its default outbox,"
          f" durability outbox); {os.cpu_count()} CPUs")  # fmt: skip
    for k in range(args.rounds):
        print(f"round {k + 1}:")
        print("  " + line("1 thread", one[k]))
        print("  " + line(f"{args.threads} threads", many[k]))
        print("  " + line("  memory", cpu[k]))
        print("  " + line("1, memory", alone[k]))
        print(f"  ratio {many[k].rate / one[k].rate:.2f}")
    single = statistics.median(p.rate for p in one)
    threaded = statistics.median(p.rate for p in many)
    print("medians:")
    for label, phases in (("1 thread", one), (f"{args.threads} threads", many)):
        print(f"  {label:<12} {statistics.median(p.rate for p in phases):>9,.0f} records/s"
              f"  p50 {statistics.median(p.p50_us for p in phases):>7,.0f} us"
              f"  p99 {statistics.median(p.p99_us for p in phases):>7,.0f} us")  # fmt: skip
    print(f"  ratio {args.threads} threads / 1 thread: {threaded / single:.2f}  (target >= 5)")
    print(
        f"  {args.threads} threads in durability memory (no commit to wait for)"
        f" {statistics.median(p.rate for p in cpu):,.0f} records/s; the durable"
        f" threads reach {threaded / statistics.median(p.rate for p in cpu):.2f} of it;"
        f" one thread in durability memory {statistics.median(p.rate for p in alone):,.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
