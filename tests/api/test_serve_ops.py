"""``tsmeter serve`` as an operator meets it: a full outbox answers 429 with Retry-After and
makes /readyz fail, SIGTERM delivers what the outbox holds before exiting 0, API keys are
asked for unless --no-auth, and --no-auth is refused off loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import requests

import tsmeter
from tests.api.server import ROOT, Served
from tests.api.test_server import problem
from tests.influx_server import InfluxServer, free_port
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError
from tsmeter.outbox.durable import Outbox

RECORD = {"metricKey": "gb", "subjectType": "org", "subjectId": "acme", "quantity": "1.5",
          "timestamp": "2026-03-10T12:00:00Z"}  # fmt: skip


def _fill(path: Path, n: int) -> None:
    """Commit ``n`` records to the outbox file at ``path`` that no store has taken."""

    def down(rows: list[RecordRow]) -> None:
        raise StorageUnavailableError("the store is down")

    outbox = Outbox(str(path), down, max_pending=n)
    outbox.put([RecordRow(f"held-{i}", "gb", "org", "acme", None, 1, 10**18 + i, None, None)
                for i in range(n)])  # fmt: skip
    outbox.close(0.1)


def test_a_full_outbox_answers_429_and_is_not_ready(tmp_path: Path) -> None:
    """With InfluxDB unreachable and the outbox at its maximum (1,000,000 records), records
    get 429 with Retry-After at once, nothing is dropped, /readyz is 503 naming why, and
    /metrics shows the depth and the delivery lag."""
    outbox = tmp_path / "outbox.db"
    state = tmp_path / "state.db"
    with tsmeter.connect(f"sqlite:///{state}") as meter:
        meter.define_metric("gb", aggregation_type="SUM", precision=2)
    _fill(outbox, 1_000_000)
    url = f"influxdb://127.0.0.1:{free_port()}/nowhere?state={state}"
    with Served(url, tmp_path, root_args=("--outbox", str(outbox)), wait_for="/healthz") as s:
        for path, body in (("/v1/usage/records/batch", {"records": [RECORD] * 3}),
                           ("/v1/usage/records", RECORD)):  # fmt: skip
            answer = s.post(path, json=body)
            assert problem(answer, 429)["type"] == "/problems/outbox-full"
            assert answer.headers["retry-after"] == "1"
        ready = s.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"] == ["the store does not answer", "the outbox is full"]
        metrics = s.get("/metrics").text
        assert "tsmeter_outbox_pending_records 1e+06" in metrics
        lag = next(line for line in metrics.splitlines()
                   if line.startswith("tsmeter_outbox_delivery_lag_seconds "))  # fmt: skip
        assert float(lag.split()[1]) > 0
        assert 'tsmeter_api_records_rejected_total{reason="outbox_full"} 4.0' in metrics
        s.stop(signal.SIGKILL)  # a graceful stop would try the store for its close timeout
    status = Outbox(str(outbox), lambda rows: None, max_pending=10**7)
    try:
        assert status.status().pending == 1_000_000  # nothing dropped, nothing added
    finally:
        status._stop = True
        status.close(0)


def test_sigterm_delivers_the_outbox_then_exits_0(tmp_path: Path, influxd: InfluxServer) -> None:
    """Records accepted into the outbox are in InfluxDB after SIGTERM; the exit status is 0."""
    db = "serve_sigterm"
    influxd.create_database(db)
    try:
        url = f"influxdb://127.0.0.1:{influxd.port}/{db}?state={tmp_path / 'state.db'}"
        server = Served(url, tmp_path, root_args=("--outbox", str(tmp_path / "outbox.db")))
        with server:
            assert server.post("/v1/metrics", json={"key": "gb", "precision": 2}).ok
            for part in range(2):
                batch = {"records": [{**RECORD, "id": f"r{part}-{i}"} for i in range(10_000)]}
                answer = server.post("/v1/usage/records/batch", json=batch)
                assert answer.json()["accepted"] == 10_000
            assert server.stop() == 0
        with tsmeter.connect(url, outbox=False) as meter:
            assert meter.count_usage("gb") == 20_000
    finally:
        influxd.drop_database(db)


def test_keys_are_required_unless_no_auth(tmp_path: Path) -> None:
    """Without --no-auth a request needs a key with the route's scope (401 / 403 as
    problem+json); the operational routes need none."""
    store = f"sqlite:///{tmp_path / 'usage.db'}"
    with tsmeter.connect(store) as meter:
        meter.define_metric("gb", aggregation_type="SUM", precision=2)
        ingest = meter.api_keys.create("ingest only", ["ingest"]).key
        admin = meter.api_keys.create("admin", ["admin"]).key
    with Served(store, tmp_path, args=()) as server:
        answer = server.post("/v1/usage/records", json=RECORD)
        assert problem(answer, 401)["type"] == "/problems/unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
        as_ingest = {"authorization": f"Bearer {ingest}"}
        assert server.post("/v1/usage/records", json=RECORD, headers=as_ingest).status_code == 201
        assert problem(server.get("/v1/metrics", headers=as_ingest), 403)
        assert server.get("/v1/metrics", headers={"authorization": f"Bearer {admin}"}).ok
        assert problem(server.get("/v1/metrics", headers={"authorization": "Bearer nope"}), 401)
        for path in ("/healthz", "/readyz", "/metrics"):
            assert server.get(path).status_code == 200


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    """--no-auth with --host 0.0.0.0 exits with a usage error before listening."""
    done = subprocess.run(
        [sys.executable, "-m", "tsmeter", "--store", f"sqlite:///{tmp_path / 'u.db'}", "--create",
         "serve", "--host", "0.0.0.0", "--no-auth"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "--no-auth serves anyone who can reach '0.0.0.0'" in done.stderr


def test_an_unreachable_store_without_outbox_answers_503(tmp_path: Path) -> None:
    """With InfluxDB down and no outbox, records and reads get 503 storage-unavailable with
    Retry-After, and /readyz says the store does not answer."""
    state = tmp_path / "state.db"
    with tsmeter.connect(f"sqlite:///{state}") as meter:
        meter.define_metric("gb", aggregation_type="SUM", precision=2)
    url = f"influxdb://127.0.0.1:{free_port()}/nowhere?state={state}"
    with Served(url, tmp_path, root_args=("--outbox", "off"), wait_for="/healthz") as server:
        for answer in (server.post("/v1/usage/records", json=RECORD),
                       server.post("/v1/usage/records/batch", json={"records": [RECORD]}),
                       server.get("/v1/usage/records", params={"metricKey": "gb"})):  # fmt: skip
            assert problem(answer, 503)["type"] == "/problems/storage-unavailable"
            assert answer.headers["retry-after"] == "5"
        ready = server.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"] == ["the store does not answer"]
        metrics = server.get("/metrics").text
        assert 'tsmeter_api_records_rejected_total{reason="unavailable"} 2.0' in metrics
        assert server.stop() == 0


def _children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    """--workers 3 runs three processes on one port, each with its own Meter on the store:
    batches sent over new connections all count, exactly once; SIGTERM stops every worker
    and the exit status is 0."""
    store = f"sqlite:///{tmp_path / 'usage.db'}"
    server = Served(store, tmp_path, create=True, args=("--no-auth", "--workers", "3"))
    with server:
        assert server.process is not None
        workers = _children(server.process.pid)
        assert len(workers) == 3
        assert server.post("/v1/metrics", json={"key": "gb", "precision": 2}).status_code == 201
        for attempt in range(2):  # the second round repeats the ids: it counts nothing
            for part in range(30):
                batch = {"records": [{**RECORD, "id": f"w{part}-{i}"} for i in range(100)]}
                answer = requests.post(f"{server.url}/v1/usage/records/batch", json=batch,
                                       headers={"connection": "close"}, timeout=60)  # fmt: skip
                assert answer.status_code == 200, (attempt, answer.text)
        summary = server.get("/v1/usage/summary", params={
            "metricKey": "gb", "subjectType": "org", "subjectId": "acme", "periodType": "MONTHLY",
            "at": "2026-03-20T00:00:00Z"}).json()  # fmt: skip
        assert Decimal(summary["totalQuantity"]) == Decimal("1.5") * 3000
        assert server.stop() == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_an_idle_keep_alive_connection_stays_open(tmp_path: Path) -> None:
    """A connection left idle longer than httpx keeps one (5 s) is still open: the server does
    not close it under the client's next request."""
    import http.client
    import time

    with Served(f"sqlite:///{tmp_path / 'u.db'}", tmp_path, create=True) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        time.sleep(6)
        connection.request("POST", "/v1/metrics", body=b'{"key": "gb"}',
                           headers={"content-type": "application/json"})  # fmt: skip
        assert connection.getresponse().status == 201
        connection.close()
