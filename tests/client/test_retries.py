"""Retries against answers the real server gives only in trouble (429 when its outbox is
full, 503 when its store is down). A small stand-in HTTP server plays them here, because
provoking them from ``tsmeter serve`` takes a store outage of the length under test; the
stand-in records every request, so the test sees what the client sent each time."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.influx_server import free_port
from tsmeter.client import AsyncClient, Client, Retry
from tsmeter.errors import OutboxFullError, StorageUnavailableError, ValidationError

RECORD = {
    "id": "r-1",
    "metricKey": "m",
    "subjectType": "org",
    "subjectId": "o",
    "quantity": "1",
    "timestamp": "2026-01-05T10:00:00+00:00",
    "metadata": {},
    "source": None,
    "orgId": None,
}


class StandIn(ThreadingHTTPServer):
    """Answers each request with the next (status, headers, body) of ``plan`` (201 with
    RECORD when the plan is empty); ``seen`` holds (time, path, body) of each request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan: deque[tuple[int, dict[str, str], bytes]] = deque()
        self.seen: list[tuple[float, str, Any]] = []
        self.hang = 0.0  # seconds to wait before each answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out has hung up: nothing to answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandIn

    def do_POST(self) -> None:  # http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((time.monotonic(), self.path, json.loads(body)))
        if self.server.hang:
            time.sleep(self.server.hang)
        status, headers, payload = (
            self.server.plan.popleft()
            if self.server.plan
            else (201, {"Content-Type": "application/json"}, json.dumps(RECORD).encode())
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _problem(
    status: int, slug: str, retry_after: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/problem+json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {
        "type": f"/problems/{slug}",
        "title": slug,
        "status": status,
        "detail": f"injected {status}",
        "errors": [],
    }
    return status, headers, json.dumps(body).encode()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_429_and_503_are_retried_with_the_same_id_honouring_retry_after(
    stand_in: StandIn,
) -> None:
    stand_in.plan.extend([_problem(429, "outbox-full", "1"), _problem(503, "storage-unavailable")])
    with Client(stand_in.url, retry=Retry(backoff=0.01)) as client:
        stored = client.record("m", "org", "o")
    assert stored.id == "r-1"
    times = [t for t, _, _ in stand_in.seen]
    ids = {body["id"] for _, _, body in stand_in.seen}
    assert len(times) == 3 and len(ids) == 1  # one id, made before the first try
    assert times[1] - times[0] >= 1.0  # Retry-After: 1
    assert times[2] - times[1] < 1.0


def test_after_the_last_try_429_is_outbox_full_and_503_unavailable(stand_in: StandIn) -> None:
    retry = Retry(attempts=2, backoff=0.01, max_retry_after=0.05)
    with Client(stand_in.url, retry=retry) as client:
        stand_in.plan.extend([_problem(429, "outbox-full", "30")] * 2)
        with pytest.raises(OutboxFullError, match="injected 429"):
            client.record("m", "org", "o")
        stand_in.plan.extend([_problem(503, "storage-unavailable")] * 2)
        with pytest.raises(StorageUnavailableError, match="injected 503"):
            client.record_batch([{"metricKey": "m", "subjectType": "org", "subjectId": "o"}])
    assert len(stand_in.seen) == 4


def test_a_validation_error_is_not_retried(stand_in: StandIn) -> None:
    status, headers, _ = _problem(422, "validation")
    body = {
        "type": "/problems/validation",
        "title": "Invalid input",
        "status": 422,
        "detail": "records[1].quantity: bad",
        "errors": [{"field": "records[1].quantity", "message": "must be a number"}],
    }
    stand_in.plan.append((status, headers, json.dumps(body).encode()))
    with Client(stand_in.url) as client, pytest.raises(ValidationError) as caught:
        client.record_batch([{"metricKey": "m", "subjectType": "org", "subjectId": "o"}] * 2)
    assert caught.value.field == "records[1].quantity"
    assert caught.value.problem == "must be a number"
    assert len(stand_in.seen) == 1
    ids = [record["id"] for record in stand_in.seen[0][2]["records"]]
    assert len(set(ids)) == 2  # each record of a batch gets its own id


def test_the_async_client_retries_the_same_way(stand_in: StandIn) -> None:
    stand_in.plan.extend([_problem(503, "storage-unavailable", "0")])

    async def main() -> str:
        async with AsyncClient(stand_in.url, retry=Retry(backoff=0.01)) as client:
            return (await client.record("m", "org", "o")).id

    assert asyncio.run(main()) == "r-1"
    assert len(stand_in.seen) == 2 and stand_in.seen[0][2]["id"] == stand_in.seen[1][2]["id"]


def test_the_batcher_keeps_a_batch_the_server_failed_and_sends_it_again(
    stand_in: StandIn,
) -> None:
    accepted = {"accepted": 2, "ids": [], "recorded": 2, "duplicates": 0, "queued": 0}
    stand_in.plan.extend(
        [
            _problem(500, "internal"),
            (200, {"Content-Type": "application/json"}, json.dumps(accepted).encode()),
        ]
    )
    with Client(stand_in.url, retry=Retry(backoff=0.01)) as client:
        with client.batcher(max_delay=0.01) as batcher:
            first = batcher.add("m", "org", "o")
            second = batcher.add("m", "org", "o")
        assert batcher.sent == 2 and batcher.rejected == [] and batcher.pending == []
    sent = [[r["id"] for r in body["records"]] for _, _, body in stand_in.seen]
    assert sent == [[first, second], [first, second]]


def test_a_timeout_is_retried_with_the_same_id_then_unavailable(stand_in: StandIn) -> None:
    stand_in.hang = 1.0
    with Client(stand_in.url, timeout=0.2, retry=Retry(attempts=2, backoff=0.01)) as client:
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError, match="ReadTimeout"):
            client.record("m", "org", "o")
        assert time.monotonic() - started < 1.0
    assert len(stand_in.seen) == 2 and stand_in.seen[0][2]["id"] == stand_in.seen[1][2]["id"]


def test_without_a_server_the_batcher_keeps_records_and_says_so() -> None:
    """Nothing listens: records stay pending (add refuses past max_pending), close raises
    naming how many are left, and they are still there to be saved."""
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, retry=Retry(attempts=1)) as client:
        batcher = client.batcher(max_pending=5, max_delay=0.01)
        ids = [batcher.add("m", "org", "o") for _ in range(5)]
        with pytest.raises(OutboxFullError):
            batcher.add("m", "org", "o")
        with pytest.raises(StorageUnavailableError, match="5 records could not be sent"):
            batcher.close(timeout=0.3)
        assert [r["id"] for r in batcher.pending] == ids and batcher.sent == 0


def test_without_a_server_the_async_batcher_keeps_records_and_says_so() -> None:
    async def main() -> None:
        url = f"http://127.0.0.1:{free_port()}"
        async with AsyncClient(url, retry=Retry(attempts=1)) as client:
            batcher = client.batcher(max_pending=3, max_delay=0.01)
            ids = [batcher.add("m", "org", "o") for _ in range(3)]
            with pytest.raises(OutboxFullError):
                batcher.add("m", "org", "o")
            with pytest.raises(StorageUnavailableError, match="3 records could not be sent"):
                await batcher.aclose(timeout=0.3)
            assert [r["id"] for r in batcher.pending] == ids and batcher.sent == 0

    asyncio.run(main())


def test_an_async_batcher_cancelled_with_records_says_how_many(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        client = AsyncClient(f"http://127.0.0.1:{free_port()}")
        batcher = client.batcher(max_delay=60)
        for _ in range(4):
            batcher.add("m", "org", "o")
        await asyncio.sleep(0)  # the loop ends here without closing the batcher

    asyncio.run(main())
    assert "tsmeter batcher cancelled with 4 records not sent" in caplog.text
