"""examples/fastapi_app.py, run as a user runs it (uvicorn in its own process) against a real
``tsmeter serve`` behind a proxy that makes every tsmeter request slow: each request to the
service is recorded exactly once (its X-Request-Id is the record id), and the service answers
without waiting for tsmeter (its answers are far faster than one tsmeter call)."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from tests.client.live import ROOT, LiveServer, TcpProxy
from tests.influx_server import _die_with_parent, free_port
from tsmeter.client import Client
from tsmeter.domain import UsageRecord

#: how long the proxy holds every request to tsmeter
TSMETER_DELAY = 0.5
REQUESTS = 300


def test_every_request_is_recorded_once_and_never_waits_for_tsmeter(
    live: LiveServer, tmp_path: Path
) -> None:
    proxy = TcpProxy(live.port, delay=TSMETER_DELAY)
    port = free_port()
    env = {
        **os.environ,
        "TSMETER_URL": proxy.url,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}",
    }
    env.pop("TSMETER_API_KEY", None)
    log = (tmp_path / "app.log").open("wb")
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    run = uuid.uuid4().hex[:8]
    sent: Counter[str] = Counter()
    latencies: list[float] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 30
            while True:  # start-up defines the metric through the slow proxy
                try:
                    if http.get("/hello").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert app.poll() is None and time.monotonic() < deadline, _tail(tmp_path)
                time.sleep(0.05)
            started = time.monotonic()
            for i in range(REQUESTS):
                org = f"{run}-org-{i % 3}"
                headers = {"X-Org-Id": org, "X-Request-Id": f"{run}-{i}"}
                begin = time.perf_counter()
                answer = http.get("/hello", headers=headers)
                latencies.append(time.perf_counter() - begin)
                assert answer.json() == {"hello": "world"}
                sent[org] += 1
            elapsed = time.monotonic() - started
        with Client(live.url) as client:  # the latest records are still on their way
            before_shutdown = len(_stored(client, run))
    finally:
        os.kill(app.pid, signal.SIGTERM)  # shutdown sends what is pending
        status = app.wait(60)
        log.close()
        proxy.close()
    # uvicorn re-raises SIGTERM once it has shut down gracefully (lifespan included)
    assert status in (0, -signal.SIGTERM), _tail(tmp_path)
    assert "Application shutdown complete" in _tail(tmp_path)

    # the requests did not wait for tsmeter: one call takes TSMETER_DELAY at least
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(
        f"median {statistics.median(latencies):.4f}s p99 {p99:.4f}s total {elapsed:.2f}s,"
        f" stored before shutdown {before_shutdown}"
    )
    assert statistics.median(latencies) < TSMETER_DELAY / 10 and p99 < TSMETER_DELAY / 2, (
        f"median {statistics.median(latencies):.4f}s, p99 {p99:.4f}s"
    )
    assert elapsed < REQUESTS * TSMETER_DELAY / 10
    assert before_shutdown < REQUESTS  # so the shutdown's drain is what stored the rest

    with Client(live.url) as client:
        stored = _stored(client, run)
        assert sorted(r.id for r in stored) == sorted(f"{run}-{i}" for i in range(REQUESTS))
        for org, count in sent.items():
            summary = client.get_usage_summary("api_calls", "org", org, "MONTHLY")
            assert summary.total_quantity == count


def _stored(client: Client, run: str) -> list[UsageRecord]:
    return [r for r in client.get_usage("api_calls", limit=100_000) if r.id.startswith(run)]


def _tail(tmp_path: Path) -> str:
    return (tmp_path / "app.log").read_text(errors="replace")[-3000:]
