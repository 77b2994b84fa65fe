"""The fleet behind HTTP: two ``tsmeter serve`` processes (distinct writers, each with its own
outbox) sharing one real influxd and one PostgreSQL state store, no proxy in front; a client
process alternates between them and retries the same batches on both.

Every record is counted exactly once, however often and wherever it was sent: InfluxDB holds
exactly the records sent and their sum is the one Python's Decimal makes of what was sent,
and both servers answer the same exact totals.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.api.server import Served
from tests.influx_server import InfluxServer

DAY = datetime(2026, 11, 10, tzinfo=UTC)
BATCHES = 20  # of 1,000, sent alternately, then each retried on the other server
RACED = 4  # batches of 1,000 sent to both servers at the same moment
SINGLES = 200  # single records, each sent to one server and retried on the other
BATCH = 1_000


def record(i: int, *, retried: bool = False) -> dict[str, Any]:
    """Record ``i``: cents as a decimal string; a retry carries the same id at another time
    (the client stamped it again), and must still count once."""
    at = DAY + timedelta(seconds=i * 2.5) + (timedelta(minutes=37) if retried else timedelta())
    return {"id": f"http-fleet-{i:06d}", "metricKey": "api_calls", "subjectType": "org",
            "subjectId": f"org-{i % 50}", "quantity": f"{i % 997}.{i % 100:02d}",
            "timestamp": at.isoformat()}  # fmt: skip


def batch(k: int, *, retried: bool = False) -> list[dict[str, Any]]:
    return [record(i, retried=retried) for i in range(k * BATCH, (k + 1) * BATCH)]


TOTAL_RECORDS = (BATCHES + RACED) * BATCH + SINGLES


def client(urls: list[str], results: Any) -> None:
    """The client process: alternate servers, retry everything on the other one, race some
    batches to both at once; report ``"ok"`` or what went wrong."""
    try:
        clients = [httpx.Client(base_url=url, timeout=60) for url in urls]

        def post_batch(server: int, records: list[dict[str, Any]]) -> None:
            response = clients[server].post("/v1/usage/records/batch", json={"records": records})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["accepted"] == len(records), body
            assert body["ids"] == [r["id"] for r in records]

        for k in range(BATCHES):
            post_batch(k % 2, batch(k))
        for k in range(BATCHES):  # the retries, on the other server; half of them re-stamped
            post_batch((k + 1) % 2, batch(k, retried=k % 2 == 0))
        for k in range(BATCHES, BATCHES + RACED):  # the same batch to both at the same moment
            racers = [threading.Thread(target=post_batch, args=(s, batch(k))) for s in (0, 1)]
            for racer in racers:
                racer.start()
            for racer in racers:
                racer.join()
        first = (BATCHES + RACED) * BATCH
        for i in range(first, first + SINGLES):
            for server in (i % 2, (i + 1) % 2):
                response = clients[server].post("/v1/usage/records", json=record(i))
                assert response.status_code == 201, response.text
                assert response.json()["id"] == record(i)["id"]
        for c in clients:
            c.close()
        results.put("ok")
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put(f"{type(exc).__name__}: {exc}")


def served_total(url: str) -> tuple[int, Decimal]:
    """The day's record count and total as one server answers them."""
    response = httpx.get(f"{url}/v1/usage/summaries", params={
        "metricKey": "api_calls", "periodType": "DAILY", "from": DAY.isoformat(),
        "to": (DAY + timedelta(days=1)).isoformat()}, timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    summaries = body["summaries"] if isinstance(body, dict) else body
    return (sum(s["recordCount"] for s in summaries),
            sum((Decimal(s["totalQuantity"]) for s in summaries), Decimal(0)))  # fmt: skip


def stored(server: InfluxServer, db: str) -> tuple[int, Decimal]:
    """What InfluxDB itself holds: points, and their sum in cents as a Decimal."""
    rows = server.series('SELECT count("units"), sum("units") FROM "usage"', db)
    if not rows:
        return 0, Decimal(0)
    return rows[0]["count"], Decimal(rows[0]["sum"]).scaleb(-2)  # precision 2: units of cents


def test_two_servers_count_every_record_once(
    influx_db: tuple[InfluxServer, str], pg_url: str, tmp_path: Path
) -> None:
    influx, db = influx_db
    url = f"influxdb://127.0.0.1:{influx.port}/{db}?writer=W&state={pg_url}"
    every = [record(i) for i in range(TOTAL_RECORDS)]
    expected = (len(every), sum((Decimal(r["quantity"]) for r in every), Decimal(0)))
    homes = [tmp_path / f"api{k}" for k in range(2)]
    for home in homes:
        home.mkdir()
    servers = [Served(url.replace("writer=W", f"writer=api{k}"), homes[k]) for k in range(2)]
    try:
        for server in servers:
            server.start()
        # a metric defined through one server is the other's too (the shared catalog)
        defined = httpx.post(f"{servers[0].url}/v1/metrics", json={
            "key": "api_calls", "aggregationType": "SUM", "precision": 2}, timeout=60)  # fmt: skip
        assert defined.status_code == 201, defined.text
        seen = httpx.get(f"{servers[1].url}/v1/metrics/api_calls", timeout=60)
        assert seen.status_code == 200 and seen.json()["precision"] == 2, seen.text

        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        process = ctx.Process(target=client, args=([s.url for s in servers], results))
        process.start()
        outcome = results.get(timeout=300)
        process.join(timeout=60)
        assert outcome == "ok", outcome + "\n" + "\n".join(s.log_tail() for s in servers)

        # both outboxes deliver; then both servers answer the same exact totals
        deadline = time.monotonic() + 120
        while stored(influx, db)[0] < expected[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served_total(servers[0].url) == expected
        assert served_total(servers[1].url) == expected
    finally:
        statuses = [server.stop() for server in servers]
    assert statuses == [0, 0], "\n".join(s.log_tail() for s in servers)
    # stopped (each outbox delivered or kept): nothing more arrived, nothing counted twice
    assert stored(influx, db) == expected
