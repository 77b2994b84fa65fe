"""A local stand-in for PostHog's capture endpoint, for tests with the real posthog SDK.

It listens on 127.0.0.1, accepts ``POST /batch/`` (the v0 protocol tsmeter pins; also
``/e/``, ``/capture/`` and ``/i/v1/analytics/events`` are recorded, so a test can see a
request that should not have happened), plain or gzip bodies, and answers as PostHog does
(``200 {"status": 1}``). It can fail on purpose: the next N requests, or every request,
with a given status, or hang for a while.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    """One request as received: path, headers, the raw and decoded body."""

    path: str
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]
    status: int

    @property
    def gzipped(self) -> bool:
        """Whether the body came gzip-compressed."""
        return self.headers.get("content-encoding", "").lower() == "gzip"


@dataclass
class CaptureServer:
    """The server's state: requests received, and how it should answer the next ones."""

    port: int = 0
    requests: list[Request] = field(default_factory=list)
    fail_remaining: int = 0
    fail_always: bool = False
    fail_status: int = 500
    hang_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        """The URL to give the SDK as its host."""
        return f"http://127.0.0.1:{self.port}"

    def fail(self, times: int | None = None, status: int = 500) -> None:
        """Answer ``status`` to the next ``times`` requests (None: to every request)."""
        with self.lock:
            self.fail_status = status
            self.fail_always = times is None
            self.fail_remaining = times or 0

    def recover(self) -> None:
        """Answer 200 again."""
        with self.lock:
            self.fail_always, self.fail_remaining = False, 0

    def accepted(self) -> list[dict[str, Any]]:
        """Every event of every request answered 200, in arrival order."""
        with self.lock:
            return [e for r in self.requests if r.status == 200 for e in r.body.get("batch", [])]

    def accepted_uuids(self) -> set[str]:
        """The uuids of the accepted events."""
        return {e["uuid"] for e in self.accepted()}

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return condition()


def _handler(state: CaptureServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            data = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
            try:
                body = json.loads(data)
            except ValueError:
                body = {"_unparsable": data.decode("utf-8", "replace")}
            with state.lock:
                failing = state.fail_always or state.fail_remaining > 0
                if state.fail_remaining > 0:
                    state.fail_remaining -= 1
                status = state.fail_status if failing else 200
                hang = state.hang_seconds
            if hang:
                time.sleep(hang)
            with state.lock:
                state.requests.append(Request(self.path, headers, raw, body, status))
            payload = json.dumps({"status": 1} if status == 200 else {"detail": "boom"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@contextmanager
def capture_server() -> Iterator[CaptureServer]:
    """Run a capture server on 127.0.0.1 (a free port) for the duration of the block."""
    state = CaptureServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
