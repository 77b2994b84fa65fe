"""Records/s into a local influxd: ``record_batch`` through the InfluxDB store vs the ceiling.

    .venv/bin/python benchmarks/influx_ingest.py [--records 1000000] [--rounds 3]

Starts its own influxd 1.x on 127.0.0.1 (Debian's ``influxdb`` package) in a
temporary directory and, in one run, measures in each of ``--rounds`` rounds:

* the ceiling: pre-built line protocol for the same points POSTed in batches
  of 10,000 over one keep-alive HTTP session (no validation, no checks);
* ``Meter.record_batch`` of such records as dicts, all in one call, through
  ``influxdb://`` (validation, id ledger, the read that prevents collapse and
  double counting, encoding, the write),

and new records in calls of 50,000. Each phase writes new records to a new
database, dropped after the phase, so every phase starts on an empty server. The
machine's speed drifts by 10-15 % from one phase to the next (five ceilings in a
row on one server, each database dropped after it: 254,000 to 297,000 points/s),
so the order of the phases changes per round (each takes each place once in
three rounds) and the ratios are taken between medians of five rounds. Then one
call of 1,000,000 records whose ids are random (UUIDv4, as a client may send; the
id ledger's worst case) runs once, and an HOURLY aggregation over another
1,000,000 records.

Target (issue "InfluxDB stores"): record_batch >= 80 % of the ceiling. The first
line says whether the compiled fast paths ran (``TSMETER_PURE_PYTHON=1`` turns
them off).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
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


def recorded(
    url: str, records: list[dict[str, object]], call: int, *, aggregate: bool = False
) -> tuple[float, float]:
    """(records/s of ``record_batch`` in calls of ``call`` records, s of HOURLY aggregation
    when ``aggregate``)."""
    with tsmeter.connect(url) as meter:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.records
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rates: dict[str, list[float]] = {"bare": [], "one": [], "calls": []}
    with tempfile.TemporaryDirectory() as tmp, InfluxServer() as server:
        server.start()
        url = f"influxdb://127.0.0.1:{server.port}/{{}}?writer=bench&state={tmp}/{{}}.db"
        for k in range(args.rounds):
            for phase in _ORDERS[k % len(_ORDERS)]:
                records = make_records(n, start)  # new ids for each phase
                db = f"{phase}{k}"
                server.create_database(db)
                if phase == "bare":
                    rates[phase].append(ceiling(server, db, records))
                else:
                    call = n if phase == "one" else 50_000
                    rates[phase].append(recorded(url.format(db, db), records, call)[0])
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
    for k in range(args.rounds):
        b, o, c = (rates[p][k] for p in ("bare", "one", "calls"))
        print(f"  round {k + 1}: ceiling {b:>9,.0f}  one call {o:>9,.0f} ({o / b:.2f})"
              f"  calls of 50,000 {c:>9,.0f} ({c / b:.2f})")  # fmt: skip
    print("medians:")
    print(f"bare keep-alive POST loop      {bare:>10,.0f} points/s   (ceiling)")
    print(f"record_batch, one call         {one:>10,.0f} records/s  ratio {one / bare:.2f}"
          "  (target >= 0.80)")  # fmt: skip
    print(f"record_batch, calls of 50,000  {calls:>10,.0f} records/s  ratio {calls / bare:.2f}")
    print(f"record_batch, UUIDv4 ids, once {random_rate:>10,.0f} records/s  ratio"
          f" {random_rate / bare:.2f}  (one call of 1,000,000 random ids)")  # fmt: skip
    print(f"aggregate HOURLY (push-down)   {hourly:>10.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
