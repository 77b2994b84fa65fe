"""HTTP ingestion through ``tsmeter serve`` against the in-process Meter, measured in the same run.

    .venv/bin/python benchmarks/http_ingest.py [--records 200000] [--singles 2000]
        [--connections 4] [--subjects 10000] [--no-influx]

For each store (a new embedded store in a temporary directory; then, unless ``--no-influx``,
a database of a local influxd 1.x from tests/influx_server.py, with the default outbox):

* in-process, in a child process: ``Meter.record_batch`` in calls of 1,000 of ``--records``
  records (client UUIDv4 ids, ``--subjects`` subjects, exact decimal quantities) as
  records/s; then ``--singles`` calls of ``Meter.record``, each timed, as p50/p99;
* over HTTP: ``tsmeter serve --no-auth`` on a free loopback port (tests/api/server.py)
  and a load generator in another process: the same number of records POSTed to
  ``/v1/usage/records/batch`` in bodies of 1,000 (encoded before the clock starts) over
  ``--connections`` keep-alive connections, one thread each, as records/s; then
  ``--singles`` POSTs of one record to ``/v1/usage/records`` on one keep-alive connection,
  each timed from send to the whole answer read, as p50/p99.

Each side first sends one batch and 50 single records of its own (not timed). Afterwards the
store must hold exactly every record sent (count, and the total against Python's Decimal).
On influxd the rates are of accepted records (committed to the outbox, as ``record_batch``
returns); the time until InfluxDB holds them all is printed beside them.

Targets (issue 23): >= 50,000 records/s over HTTP, single-record p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.server import Served
from tests.influx_server import InfluxServer, find_influxd

DAY = datetime(2026, 11, 10, tzinfo=UTC)
BATCH = 1_000
WARM_SINGLES = 50
TARGET_RATE = 50_000
TARGET_P99_MS = 10.0


def make_records(n: int, subjects: int, seed: int) -> list[dict[str, Any]]:
    """``n`` records of ``api_calls`` (SUM, precision 2) over one day in time order, with
    UUIDv4 ids and quantities in cents as decimal strings."""
    rng = random.Random(seed)
    step = timedelta(days=1) / max(n, 1)
    return [
        {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "metricKey": "api_calls",
            "subjectType": "org",
            "subjectId": f"org-{rng.randrange(subjects)}",
            "quantity": f"{rng.randrange(1, 100_000) / 100:.2f}",
            "timestamp": (DAY + step * i).isoformat(),
        }
        for i in range(n)
    ]


def workload(args: argparse.Namespace, seed: int) -> tuple[list[list[dict[str, Any]]], list[
        dict[str, Any]]]:  # fmt: skip
    """The batches (a warm-up batch first) and the single records (warm-ups first)."""
    records = make_records(args.records + BATCH + WARM_SINGLES + args.singles, args.subjects, seed)
    bulk, singles = records[: args.records + BATCH], records[args.records + BATCH :]
    return [bulk[i : i + BATCH] for i in range(0, len(bulk), BATCH)], singles


def expected_total(args: argparse.Namespace, seed: int) -> tuple[int, Decimal]:
    batches, singles = workload(args, seed)
    every = [r for b in batches for r in b] + singles
    return len(every), sum((Decimal(r["quantity"]) for r in every), Decimal(0))


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49] * 1e3, cuts[98] * 1e3


# -- the two sides, each run in a child process of its own ------------------------------------


def in_process(args: argparse.Namespace, url: str, seed: int) -> dict[str, Any]:
    """Record the workload through ``Meter.record_batch`` and ``Meter.record``."""
    import tsmeter

    batches, singles = workload(args, seed)
    with tsmeter.connect(url, mirror=False) as meter:
        meter.define_metric("api_calls", aggregation_type="SUM", precision=2)
        meter.record_batch(batches[0])
        t0 = time.perf_counter()
        for batch in batches[1:]:
            meter.record_batch(batch)
        seconds = time.perf_counter() - t0
        assert meter.flush(600), "the outbox did not deliver within 600 s"
        stored = time.perf_counter() - t0
        latencies = []
        for i, r in enumerate(singles):
            t = time.perf_counter()
            meter.record(r["metricKey"], r["subjectType"], r["subjectId"], r["quantity"],
                         timestamp=r["timestamp"], id=r["id"])  # fmt: skip
            if i >= WARM_SINGLES:
                latencies.append(time.perf_counter() - t)
        assert meter.flush(600)
    return {"seconds": seconds, "stored": stored, "latencies": latencies}


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def load(args: argparse.Namespace, base_url: str, seed: int) -> dict[str, Any]:
    """The load generator: batches over several keep-alive connections, then single POSTs."""
    host, port = base_url.removeprefix("http://").split(":")
    batches, singles = workload(args, seed)
    bodies = [json.dumps({"records": b}, separators=(",", ":")).encode() for b in batches]
    conns = [http.client.HTTPConnection(host, int(port), timeout=120)
             for _ in range(args.connections)]  # fmt: skip
    failures: list[str] = []

    def send(k: int, mine: list[bytes]) -> None:
        for body in mine:
            status, answer = _post(conns[k], "/v1/usage/records/batch", body)
            if status != 200 or json.loads(answer)["accepted"] != BATCH:
                failures.append(f"{status}: {answer[:300]!r}")
                return

    send(0, bodies[:1])  # warm-up: the first request opens the store's write path
    timed = bodies[1:]
    threads = [threading.Thread(target=send, args=(k, timed[k :: args.connections]))
               for k in range(args.connections)]  # fmt: skip
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"seconds": seconds}
    if args.influx_url:
        wait_in_influx(args.influx_url, args.influx_db, len(batches) * BATCH)
        result["stored"] = time.perf_counter() - t0
    for conn in conns:
        conn.close()
    # a new connection: the server closes one idle for a few seconds (as while waiting above)
    single = http.client.HTTPConnection(host, int(port), timeout=120)
    latencies = []
    for i, r in enumerate(singles):
        body = json.dumps(r, separators=(",", ":")).encode()
        t = time.perf_counter()
        status, answer = _post(single, "/v1/usage/records", body)
        elapsed = time.perf_counter() - t
        if status != 201:
            failures.append(f"{status}: {answer[:300]!r}")
            break
        if i >= WARM_SINGLES:
            latencies.append(elapsed)
    single.close()
    return {**result, "latencies": latencies, "failures": failures}


def child(mode: str, args: argparse.Namespace, target: str, seed: int, home: Path,
          *extra: str) -> dict[str, Any]:  # fmt: skip
    """Run ``mode`` (in-process, load or check) in a fresh interpreter whose data home is
    ``home``; return its JSON result."""
    argv = [sys.executable, __file__, f"--{mode}", target, "--seed", str(seed),
            "--records", str(args.records), "--singles", str(args.singles),
            "--connections", str(args.connections), "--subjects", str(args.subjects),
            *extra]  # fmt: skip
    env = {**os.environ, "XDG_DATA_HOME": str(home)}
    env = {k: v for k, v in env.items() if k != "TSMETER_STORE_URL"}
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def check(args: argparse.Namespace, url: str, seed: int) -> dict[str, Any]:
    """How many records the store holds and their total (the outbox left alone)."""
    import tsmeter

    with tsmeter.connect(url, mirror=False, outbox=False) as meter:
        summaries = meter.get_usage_summaries("api_calls", "DAILY", start=DAY,
                                              end=DAY + timedelta(days=1))  # fmt: skip
        return {"count": sum(s.record_count for s in summaries),
                "total": str(sum((Decimal(str(s.total_quantity)) for s in summaries),
                                 Decimal(0)))}  # fmt: skip


# -- the run ---------------------------------------------------------------------------------


def check_store(args: argparse.Namespace, url: str, seed: int, home: Path) -> None:
    """The store holds exactly the records of the workload, to the cent (Python's Decimal)."""
    count, total = expected_total(args, seed)
    got = child("check", args, url, seed, home)
    if (got["count"], Decimal(got["total"])) != (count, total):
        raise SystemExit(f"{url}: stored {got['count']} records summing to {got['total']};"
                         f" sent {count} summing to {total}")  # fmt: skip


def wait_in_influx(influx_url: str, db: str, count: int, deadline: float = 600) -> None:
    """Return once the InfluxDB database holds ``count`` points (polled every 50 ms)."""
    query = urllib.parse.urlencode({"db": db, "q": 'SELECT count("units") FROM "usage"'})
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        with urllib.request.urlopen(f"{influx_url}/query?{query}", timeout=30) as response:
            series = json.load(response)["results"][0].get("series", [])
        if series and series[0]["values"][0][1] >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"InfluxDB {db} did not get {count} points within {deadline} s")


def run_store(args: argparse.Namespace, name: str, urls: tuple[str, str], tmp: Path,
              influx: tuple[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Both sides, each on a new store of one type; both stores checked afterwards.
    ``influx`` (its URL and the served database) makes the load generator also time the
    batches until InfluxDB holds them."""
    seed = random.randrange(2**31)
    homes = tmp / f"{name}-inproc", tmp / f"{name}-serve"
    inproc = child("in-process", args, urls[0], seed, homes[0])
    check_store(args, urls[0], seed, homes[0])
    homes[1].mkdir(parents=True)
    with Served(urls[1], homes[1], create=urls[1].startswith("sqlite:")) as server:
        define = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        status, answer = _post(define, "/v1/metrics", json.dumps(
            {"key": "api_calls", "aggregationType": "SUM", "precision": 2}).encode())  # fmt: skip
        define.close()
        if status != 201:
            raise SystemExit(f"POST /v1/metrics: {status} {answer!r}")
        extra = ("--influx-url", influx[0], "--influx-db", influx[1]) if influx else ()
        over = child("load", args, server.url, seed, homes[1], *extra)
        if over["failures"]:
            raise SystemExit(f"{name}: the server refused requests: {over['failures'][:3]}")
    check_store(args, urls[1], seed, homes[1])
    return {"in-process": inproc, "http": over, "records": args.records}


def report(name: str, result: dict[str, Any], singles: int) -> None:
    inproc, over = result["in-process"], result["http"]
    n = result["records"]
    rate_in, rate_http = n / inproc["seconds"], n / over["seconds"]
    p50_in, p99_in = percentiles(inproc["latencies"])
    p50_http, p99_http = percentiles(over["latencies"])
    print(f"\n{name}: {n:,} records in batches of {BATCH:,}; {singles:,} single records")
    print(f"  {'':34} {'in-process':>12} {'HTTP':>12} {'HTTP/in-process':>16}")
    print(f"  {'batches, records/s (accepted)':34} {rate_in:>12,.0f} {rate_http:>12,.0f}"
          f" {rate_http / rate_in:>16.2f}")  # fmt: skip
    if "stored" in over:
        stored_in, stored_http = n / inproc["stored"], n / over["stored"]
        print(f"  {'batches, records/s (in InfluxDB)':34} {stored_in:>12,.0f}"
              f" {stored_http:>12,.0f} {stored_http / stored_in:>16.2f}")  # fmt: skip
    print(f"  {'single record p50, ms':34} {p50_in:>12.3f} {p50_http:>12.3f}"
          f" {p50_http / p50_in:>16.1f}")  # fmt: skip
    print(f"  {'single record p99, ms':34} {p99_in:>12.3f} {p99_http:>12.3f}"
          f" {p99_http / p99_in:>16.1f}")  # fmt: skip
    verdict = [
        f"HTTP batches {'meet' if rate_http >= TARGET_RATE else 'MISS'} >= {TARGET_RATE:,}/s",
        f"single p99 {'meets' if p99_http <= TARGET_P99_MS else 'MISSES'} <= {TARGET_P99_MS} ms",
    ]
    print("  target: " + "; ".join(verdict))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--singles", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--no-influx", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--in-process", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="BASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--check", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--influx-url", help=argparse.SUPPRESS)
    parser.add_argument("--influx-db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.records % BATCH:
        parser.error(f"--records must be a multiple of {BATCH}")
    if args.in_process:
        print(json.dumps(in_process(args, args.in_process, args.seed)))
        return 0
    if args.load:
        print(json.dumps(load(args, args.load, args.seed)))
        return 0
    if args.check:
        print(json.dumps(check(args, args.check, args.seed)))
        return 0

    with tempfile.TemporaryDirectory(prefix="tsmeter-http-bench-") as tmp_name:
        tmp = Path(tmp_name)
        results = {"embedded store": run_store(args, "embedded", (
            f"sqlite:///{tmp}/inproc.db", f"sqlite:///{tmp}/served.db"), tmp)}  # fmt: skip
        report("embedded store", results["embedded store"], args.singles)
        if not args.no_influx:
            if find_influxd() is None:
                print("\ninfluxd not found: InfluxDB skipped (apt-get install influxdb)")
                return 0
            with InfluxServer() as influx:
                for db in ("inproc", "served"):
                    influx.create_database(db)
                base = f"influxdb://127.0.0.1:{influx.port}"
                result = run_store(args, "influx", (f"{base}/inproc", f"{base}/served"), tmp,
                                   (influx.url, "served"))  # fmt: skip
                report("influxd 1.x (default outbox)", result, args.singles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
