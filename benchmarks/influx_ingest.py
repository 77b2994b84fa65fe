"""Records/s into a local influxd: ``record_batch`` through the InfluxDB store vs the ceiling.

    .venv/bin/python benchmarks/influx_ingest.py [--records 1000000] [--rounds 3]

Starts its own influxd 1.x on 127.0.0.1 (Debian's ``influxdb`` package) in a
temporary directory and, in one run, measures in each of ``--rounds`` rounds:

* the ceiling, the server's limit: pre-built line protocol for the same points
  POSTed in batches of 10,000 (no validation, no checks) by one keep-alive HTTP
  loop and by two concurrent keep-alive loops (two threads, each with its own
  session, posting alternate batches: the same points, into the same database,
  emptied between the two; which goes first alternates per round); the better of
  the two is the round's ceiling, since tsmeter itself writes over more than one
  connection and one loop alone is not the server's limit;
* ``Meter.record_batch`` of such records as dicts, all in one call, through
  ``influxdb://`` without the outbox (validation, id ledger, the read that prevents
  collapse and double counting, encoding, the write; ``benchmarks/outbox.py`` and
  ``benchmarks/fleet.py`` measure the default path through the outbox),

and new records in calls of 50,000. Each phase writes new records to a new
database, dropped after the phase, so every phase starts on an empty server. The
machine's speed drifts by 10-15 % from one phase to the next (five ceilings in a
row on one server, each database dropped after it: 254,000 to 297,000 points/s),
so the order of the phases changes per round (each takes each place once in
three rounds) and the ratios are taken between medians of five rounds. Then one
call of 1,000,000 records whose ids are random (UUIDv4, as a client may send; the
id ledger's worst case) runs once, and an HOURLY aggregation over another
1,000,000 records.

Targets (issue "InfluxDB stores", kept by issue 19): record_batch in one call
>= 0.80 of the ceiling, the best of one and two keep-alive loops. The first
line says whether the compiled fast paths ran (``TSMETER_PURE_PYTHON=1`` turns
them off).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tsmeter
from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb import speedups
from tsmeter.adapters.influxdb.lineprotocol import UsageEncoder
from tsmeter.domain import RecordRow, new_ids
from tsmeter.domain.quantities import to_units
from tsmeter.domain.validation import to_ns


def own_cpu() -> float:
    """CPU seconds (user and system, every thread) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int, *, tree: bool = False) -> float:
    """CPU seconds process ``pid`` has used (every thread); with ``tree``, plus its children,
    live (read from /proc) and ended (what it reaped)."""
    tick = os.sysconf("SC_CLK_TCK")

    def fields(p: int | str) -> list[str]:
        with open(f"/proc/{p}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()

    own = fields(pid)
    ticks = int(own[11]) + int(own[12])
    if tree:
        ticks += int(own[13]) + int(own[14])
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    child = fields(entry)
                    if int(child[1]) == pid:
                        ticks += int(child[11]) + int(child[12])
    return ticks / tick


def make_records(n: int, start: datetime, *, random_ids: bool = False) -> list[dict[str, object]]:
    """``n`` records of two metrics by 100 organisations over 30 days, with tsmeter's
    time-ordered ids (UUIDv7) or, with ``random_ids``, UUIDv4 ids as a client may send."""
    step = timedelta(days=30) / n
    ids = [str(uuid.uuid4()) for _ in range(n)] if random_ids else new_ids(n)
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


class Ceiling(NamedTuple):
    """Points/s of the bare POST loops of one round; ``best`` is the round's ceiling."""

    one: float  # one keep-alive loop
    two: float  # two concurrent keep-alive loops

    @property
    def best(self) -> float:
        return max(self.one, self.two)

    @property
    def loops(self) -> int:
        """How many loops made the ceiling."""
        return 1 if self.one >= self.two else 2


def _post_all(url: str, db: str, bodies: list[bytes]) -> None:
    """POST ``bodies`` in order over one keep-alive session."""
    with requests.Session() as session:
        for body in bodies:
            response = session.post(
                f"{url}/write", params={"db": db, "precision": "ns"}, data=body, timeout=60
            )
            response.raise_for_status()


def _timed_loops(server: InfluxServer, db: str, bodies: list[bytes], loops: int) -> float:
    """Seconds for ``loops`` concurrent keep-alive loops to POST all ``bodies``, loop ``i``
    taking every ``loops``-th batch from the ``i``-th."""
    if loops == 1:
        t0 = time.perf_counter()
        _post_all(server.url, db, bodies)
        return time.perf_counter() - t0
    with ThreadPoolExecutor(max_workers=loops) as pool:
        t0 = time.perf_counter()
        futures = [pool.submit(_post_all, server.url, db, bodies[i::loops]) for i in range(loops)]
        for future in futures:
            future.result()
        return time.perf_counter() - t0


def units(quantity: object) -> int:
    """A quantity in units of the default precision (6), as intake makes it."""
    return to_units("quantity", quantity, 6, None)


def ceiling(
    server: InfluxServer, db: str, records: list[dict[str, object]], *, two_first: bool = False
) -> Ceiling:
    """Points/s of bare keep-alive POST loops of pre-built lines for ``records``: one loop,
    and two concurrent loops each with its own session and half of the batches. Both
    write the same points into ``db`` (which must exist), emptied between the two runs;
    ``two_first`` runs the two loops first."""
    rows = [
        RecordRow(str(r["id"]), str(r["metricKey"]), "org", str(r["subjectId"]), None,
                  units(r["quantity"]), to_ns(r["timestamp"]), None, None)
        for r in records
    ]  # fmt: skip
    encoder = UsageEncoder("usage", writer="bench")
    bodies = [encoder.encode(rows[i : i + 10_000]) for i in range(0, len(rows), 10_000)]
    seconds: dict[int, float] = {}
    for k, loops in enumerate((2, 1) if two_first else (1, 2)):
        if k:  # the second run starts on an empty database too
            server.drop_database(db)
            server.create_database(db)
        seconds[loops] = _timed_loops(server, db, bodies, loops)
    return Ceiling(len(rows) / seconds[1], len(rows) / seconds[2])


def recorded(
    url: str, records: list[dict[str, object]], call: int, *, aggregate: bool = False
) -> tuple[float, float]:
    """(records/s of ``record_batch`` in calls of ``call`` records, s of HOURLY aggregation
    when ``aggregate``)."""
    with tsmeter.connect(url, outbox=False) as meter:  # the store's own path, not the outbox
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.define_metric("tokens", aggregation_type="SUM")
        t0 = time.perf_counter()
        for i in range(0, len(records), call):
            meter.record_batch(records[i : i + call])
        rate = len(records) / (time.perf_counter() - t0)
        if not aggregate:
            return rate, 0.0
        t0 = time.perf_counter()
        meter.aggregate("HOURLY")
        return rate, time.perf_counter() - t0


#: what each round runs, in the order it runs them: each phase takes each place once
_ORDERS = (("bare", "one", "calls"), ("one", "calls", "bare"), ("calls", "bare", "one"))


def print_cpu(
    cpu: dict[str, list[tuple[float, float]]],
    ceiling_rate: float,
    phases: tuple[tuple[str, str, float], ...],
) -> None:
    """CPU per point of the ceiling and of each of ``phases`` (key, name, target ratio), as
    medians, and what the machine's cores allow: the rate at which influxd's and tsmeter's
    CPU per record fill every core, and the CPU per record left to tsmeter at the target
    given influxd's CPU per point in that phase."""
    cores = os.cpu_count() or 1
    med = {p: tuple(statistics.median(c[i] for c in cpu[p]) for i in (0, 1)) for p in cpu}
    print(f"CPU per point, medians (µs; {cores} cores):")
    bare_server, loops = med["bare"]
    print(f"  ceiling:          influxd {bare_server:5.2f}  the POST loops {loops:5.2f}")
    for phase, name, target in phases:
        server, own = med[phase]
        bound = cores / (server + own) * 1e6
        left = cores / (target * ceiling_rate) * 1e6 - server
        print(f"  {name + ':':<17} influxd {server:5.2f}  tsmeter {own:5.2f}  -> all cores"
              f" busy at {bound:,.0f}/s ({bound / ceiling_rate:.2f} of the ceiling); at"
              f" {target:.2f} tsmeter would have {left:.2f} µs per record")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.records
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rates: dict[str, list[float]] = {"bare": [], "one": [], "calls": []}
    # CPU microseconds per point of each phase: (influxd's, this process's)
    cpu: dict[str, list[tuple[float, float]]] = {"bare": [], "one": [], "calls": []}
    ceilings: list[Ceiling] = []
    with tempfile.TemporaryDirectory() as tmp, InfluxServer() as server:
        server.start()
        url = f"influxdb://127.0.0.1:{server.port}/{{}}?writer=bench&state={tmp}/{{}}.db"
        for k in range(args.rounds):
            for phase in _ORDERS[k % len(_ORDERS)]:
                records = make_records(n, start)  # new ids for each phase
                db = f"{phase}{k}"
                server.create_database(db)
                assert server.pid is not None
                before = cpu_of(server.pid), own_cpu()
                if phase == "bare":
                    ceilings.append(ceiling(server, db, records, two_first=k % 2 == 1))
                    rates[phase].append(ceilings[-1].best)
                else:
                    call = n if phase == "one" else 50_000
                    rates[phase].append(recorded(url.format(db, db), records, call)[0])
                points = 2 * n if phase == "bare" else n  # the ceiling writes them twice
                cpu[phase].append((
                    (cpu_of(server.pid) - before[0]) / points * 1e6,
                    (own_cpu() - before[1]) / points * 1e6,
                ))  # fmt: skip
                server.drop_database(db)  # every phase starts on an empty server
        server.create_database("random")
        random_ids = make_records(n, start, random_ids=True)
        random_rate, _ = recorded(url.format("random", "random"), random_ids, n)
        server.drop_database("random")
        server.create_database("hourly")
        _, hourly = recorded(url.format("hourly", "hourly"), make_records(n, start), n,
                             aggregate=True)  # fmt: skip
    bare, one, calls = (statistics.median(rates[p]) for p in ("bare", "one", "calls"))
    print(f"records: {n:,} (influxd 1.x on 127.0.0.1; {speedups.describe()})")
    print(f"{args.rounds} rounds, each phase into a new database dropped after it; the order"
          " changes per round")  # fmt: skip
    print("ceiling: the better of one and two concurrent keep-alive POST loops in each round")
    for k in range(args.rounds):
        b, o, c = (rates[p][k] for p in ("bare", "one", "calls"))
        one_loop, two_loops = ceilings[k].one, ceilings[k].two
        print(f"  round {k + 1}: ceiling {b:>9,.0f} ({ceilings[k].loops} loop"
              f"{'s' if ceilings[k].loops == 2 else ''}; 1 loop {one_loop:,.0f},"
              f" 2 loops {two_loops:,.0f})  one call {o:>9,.0f} ({o / b:.2f})"
              f"  calls of 50,000 {c:>9,.0f} ({c / b:.2f})")  # fmt: skip
    twice = sum(c.loops == 2 for c in ceilings)
    print("medians:")
    print(f"bare POST, one keep-alive loop {statistics.median(c.one for c in ceilings):>10,.0f}"
          " points/s")  # fmt: skip
    print(f"bare POST, two concurrent loops{statistics.median(c.two for c in ceilings):>10,.0f}"
          " points/s")  # fmt: skip
    print(f"ceiling (best per round)       {bare:>10,.0f} points/s   (two loops were the"
          f" ceiling in {twice} of {len(ceilings)} rounds, one loop in"
          f" {len(ceilings) - twice})")  # fmt: skip
    print(f"record_batch, one call         {one:>10,.0f} records/s  ratio {one / bare:.2f}"
          "  (target >= 0.80)")  # fmt: skip
    print(f"record_batch, calls of 50,000  {calls:>10,.0f} records/s  ratio {calls / bare:.2f}")
    print(f"record_batch, UUIDv4 ids, once {random_rate:>10,.0f} records/s  ratio"
          f" {random_rate / bare:.2f}  (one call of 1,000,000 random ids)")  # fmt: skip
    print(f"aggregate HOURLY (push-down)   {hourly:>10.2f} s")
    print_cpu(cpu, bare, (("one", "one call", 0.80), ("calls", "calls of 50,000", 0.80)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
