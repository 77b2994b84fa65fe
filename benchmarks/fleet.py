"""A fleet on one machine: recording processes sharing one influxd and one PostgreSQL state store.

    .venv/bin/python benchmarks/fleet.py [--records 200000] [--rounds 3]

Starts its own influxd 1.x and PostgreSQL on 127.0.0.1, then in each of ``--rounds`` rounds:

* the ceiling, the server's limit: pre-built line protocol for the same number of points
  POSTed in batches of 10,000 by one and by two concurrent keep-alive loops (the better of
  the two; see ``benchmarks/influx_ingest.py``);
* one host: one process records ``--records`` records with client UUIDv4 ids in calls of
  1,000 on the default path (``tsmeter.connect`` with ``state=postgresql://``: the durable
  outbox in front of the InfluxDB store, ids in the shared ledger), until every record is
  in InfluxDB (``flush``);
* the fleet: two processes (distinct writers) record half each at the same time, the same
  way; the time runs from the start signal until both have flushed.

Each phase writes into a new database and checks that InfluxDB holds exactly the records
sent. Ratios are between medians of the rounds. Then a backfill: one process records the
same records in calls of 50,000, once in time order and once with their times spread over a
month in random order, each into a new database; with the PostgreSQL state (a fleet's host)
and again with the host's own state (no ``state=``: the SQLite ledger of one host).

Targets (issue 20): the fleet >= 0.50 of the ceiling, one host >= 0.70, the backfill spread
over a month >= 0.5 of the time-sorted rate.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from influx_ingest import Ceiling, ceiling, cpu_of, own_cpu

from tests.influx_server import InfluxServer
from tests.pg_server import PostgresServer

START = datetime(2026, 1, 1, tzinfo=UTC)


def make_records(n: int, seed: int, *, spread: bool = False) -> list[dict[str, object]]:
    """``n`` records of two metrics by 1,000 organisations with UUIDv4 ids: over one day in
    time order, or (``spread``) over 30 days in random order."""
    rng = random.Random(seed)
    span = timedelta(days=30 if spread else 1)
    step = span / n
    times = [START + step * i for i in range(n)]
    if spread:
        rng.shuffle(times)
    return [
        {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "metricKey": "api_calls" if i % 3 else "tokens",
            "subjectType": "org",
            "subjectId": f"org-{rng.randrange(1000)}",
            "quantity": float(i % 17 + 1),
            "timestamp": times[i].isoformat(),
        }
        for i in range(n)
    ]


def worker(url: str, n: int, seed: int, call: int, spread: bool, data_home: str) -> None:
    """Run in a child: make the records, say ready, wait for ``go`` on stdin, record them in
    calls of ``call``, flush, and print the seconds from ``go`` to the end as JSON."""
    os.environ["XDG_DATA_HOME"] = data_home  # this host's own outbox directory
    import tsmeter

    records = make_records(n, seed, spread=spread)
    with tsmeter.connect(url, mirror=False) as meter:
        for key, kind in (("api_calls", "COUNT"), ("tokens", "SUM")):
            with contextlib.suppress(tsmeter.ConflictError):  # another host was first
                meter.define_metric(key, aggregation_type=kind)
        print("ready", flush=True)
        sys.stdin.readline()
        t0, cpu0 = time.perf_counter(), own_cpu()
        for i in range(0, n, call):
            meter.record_batch(records[i : i + call])
        if not meter.flush(600):
            raise SystemExit("the outbox did not deliver within 600 s")
        seconds = time.perf_counter() - t0
        cpu = own_cpu() - cpu0
    print(json.dumps({"seconds": seconds, "cpu": cpu}), flush=True)


class Cpu:
    """CPU seconds used by influxd, PostgreSQL and the recording processes over phases."""

    def __init__(self, influx: InfluxServer, pg: PostgresServer) -> None:
        assert influx.pid is not None and pg.pid is not None
        self.influx_pid, self.pg_pid = influx.pid, pg.pid
        self.spent: dict[str, list[float]] = {}

    def servers(self) -> tuple[float, float]:
        return cpu_of(self.influx_pid), cpu_of(self.pg_pid, tree=True)

    def add(self, phase: str, before: tuple[float, float], hosts: float, records: int) -> None:
        """Record µs per record of influxd, PostgreSQL and tsmeter since ``before``."""
        time.sleep(0.3)  # PostgreSQL reaps the backends of closed connections
        influx, pg = self.servers()
        spent = [influx - before[0], pg - before[1], hosts]
        self.spent.setdefault(phase, [0.0, 0.0, 0.0, 0])
        for i in range(3):
            self.spent[phase][i] += spent[i]
        self.spent[phase][3] += records

    def per_record(self, phase: str) -> tuple[float, float, float]:
        influx, pg, hosts, records = self.spent[phase]
        return influx / records * 1e6, pg / records * 1e6, hosts / records * 1e6


def run_hosts(
    url: str, counts: list[int], call: int, spread: bool, tmp: str, tag: str
) -> tuple[float, float]:
    """Seconds for ``len(counts)`` processes to record and flush their records at once, and
    the CPU seconds they used doing it."""
    procs = []
    for k, n in enumerate(counts):
        writer_url = url.replace("writer=W", f"writer={tag}{k}")
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", writer_url, str(n), str(hash((tag, k)) % 2**31),
             str(call), "1" if spread else "0", f"{tmp}/{tag}-host{k}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        ))  # fmt: skip
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    cpu = 0.0
    for proc in procs:
        assert proc.stdout is not None
        cpu += json.loads(proc.stdout.readline())["cpu"]
        if proc.wait(timeout=600) != 0:
            raise SystemExit(f"a recording process failed ({proc.returncode})")
    return time.perf_counter() - t0, cpu


def stored(server: InfluxServer, db: str) -> int:
    rows = server.series('SELECT count("units") FROM "usage"', db)
    return int(rows[0]["count"]) if rows else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, n, seed, call, spread, home = args.worker
        worker(url, int(n), int(seed), int(call), spread == "1", home)
        return 0
    n = args.records
    rates: dict[str, list[float]] = {"ceiling": [], "one": [], "fleet": []}
    ceilings: list[Ceiling] = []
    with tempfile.TemporaryDirectory() as tmp, InfluxServer() as influx, PostgresServer() as pg:
        influx.start()
        pg.start()
        cpu = Cpu(influx, pg)
        for k in range(args.rounds):
            db = f"bare{k}"
            influx.create_database(db)
            bare = make_records(n, 1_000 + k)
            for r in bare:
                r["timestamp"] = datetime.fromisoformat(str(r["timestamp"]))
            before = cpu.servers()
            ceilings.append(ceiling(influx, db, bare, two_first=k % 2 == 1))
            cpu.add("ceiling", before, 0.0, 2 * n)  # both loops' runs wrote every point
            rates["ceiling"].append(ceilings[-1].best)
            influx.drop_database(db)
            for phase, counts in (("one", [n]), ("fleet", [n // 2, n - n // 2])):
                db = f"{phase}{k}"
                influx.create_database(db)
                state = pg.create_database(db)
                url = f"influxdb://127.0.0.1:{influx.port}/{db}?writer=W&state={state}"
                before = cpu.servers()
                seconds, hosts = run_hosts(url, counts, 1_000, False, tmp, f"{phase}{k}")
                cpu.add(phase, before, hosts, n)
                got = stored(influx, db)
                if got != n:
                    raise SystemExit(f"{phase}: {got} points stored for {n} records")
                rates[phase].append(n / seconds)
                influx.drop_database(db)
                pg.drop_database(db)
        backfill: dict[tuple[bool, bool], float] = {}
        for own, spread in itertools.product((False, True), (False, True)):
            db = f"backfill{int(spread)}{'own' if own else ''}"
            influx.create_database(db)
            url = f"influxdb://127.0.0.1:{influx.port}/{db}?writer=W"
            if not own:
                url += f"&state={pg.create_database(db)}"
            before = cpu.servers()
            seconds, hosts = run_hosts(url, [n], 50_000, spread, tmp, db)
            cpu.add(db, before, hosts, n)
            backfill[own, spread] = n / seconds
            if stored(influx, db) != n:
                raise SystemExit(f"backfill: {stored(influx, db)} points stored for {n}")
    bare, one, fleet = (statistics.median(rates[p]) for p in ("ceiling", "one", "fleet"))
    print(f"records: {n:,} per phase, UUIDv4 ids, calls of 1,000, default path (durable outbox,"
          " PostgreSQL state); influxd 1.x and PostgreSQL on 127.0.0.1")  # fmt: skip
    for k in range(args.rounds):
        c = ceilings[k]
        one_k, fleet_k = rates["one"][k], rates["fleet"][k]
        print(f"  round {k + 1}: ceiling {c.best:>9,.0f} (1 loop {c.one:,.0f}, 2 loops"
              f" {c.two:,.0f})  one host {one_k:>9,.0f} ({one_k / c.best:.2f})"
              f"  two hosts {fleet_k:>9,.0f} ({fleet_k / c.best:.2f})")  # fmt: skip
    print("medians:")
    print(f"ceiling                        {bare:>10,.0f} points/s")
    print(f"one host                       {one:>10,.0f} records/s  ratio {one / bare:.2f}"
          "  (target >= 0.70)")  # fmt: skip
    print(f"two hosts, fleet-wide          {fleet:>10,.0f} records/s  ratio {fleet / bare:.2f}"
          "  (target >= 0.50)")  # fmt: skip
    for own, state in ((False, "PostgreSQL state"), (True, "the host's own state")):
        sorted_, spread = backfill[own, False], backfill[own, True]
        print(f"backfill, calls of 50,000, {state}:")
        print(f"  time order                                 {sorted_:>10,.0f} records/s")
        print(f"  spread over a month, random order          {spread:>10,.0f} records/s"
              f"  ratio {spread / sorted_:.2f}  (target >= 0.5)")  # fmt: skip
    cores = os.cpu_count() or 1
    print(f"CPU per record in µs (user + system; {cores} cores; PostgreSQL: every backend):")
    print("phase                 influxd  PostgreSQL  tsmeter   all")
    for phase, label in (("ceiling", "ceiling (per point)"), ("one", "one host"),
                         ("fleet", "two hosts"), ("backfill0", "backfill, time order"),
                         ("backfill1", "backfill, spread"),
                         ("backfill0own", "  own state, in order"),
                         ("backfill1own", "  own state, spread")):  # fmt: skip
        influx_us, pg_us, hosts_us = cpu.per_record(phase)
        print(f"{label:<21} {influx_us:>7.1f} {pg_us:>11.1f} {hosts_us:>8.1f}"
              f" {influx_us + pg_us + hosts_us:>6.1f}")  # fmt: skip
    # what the servers alone use per record leaves at most this rate on these cores, however
    # little CPU tsmeter itself took
    servers_us = sum(cpu.per_record("one")[:2])
    print(
        f"influxd and PostgreSQL alone use {servers_us:.1f} µs per record of one host: on"
        f" {cores} cores at most {cores / servers_us * 1e6:,.0f} records/s"
        f" ({cores / servers_us * 1e6 / bare:.2f} of the ceiling) with tsmeter's own CPU free"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
