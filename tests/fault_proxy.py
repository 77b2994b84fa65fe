"""An HTTP proxy in front of a real influxd that misbehaves on request, for fault tests.

Every request is forwarded to the upstream server unless a fault says otherwise:

* ``down_for(seconds)``: every request (reads too) is answered 500 for a while;
* ``plan``: actions for the next ``/write`` requests, one each: ``"500"`` (answered 500,
  not forwarded), ``"store-then-500"`` (forwarded, so the points are stored, then answered
  500), ``"store-then-hang"`` (forwarded, then the answer is held for ``hang_seconds``,
  past the client's timeout);
* ``write_delay``: seconds every forwarded ``/write`` waits first (a slow server).

``log`` lists ``(path, action)`` for every request. Example (no server needed to build it)::

    proxy = FaultProxy("http://127.0.0.1:8086").start()
    proxy.plan.extend(["store-then-500", "store-then-hang"])
    ...  # point the client at proxy.url
    proxy.close()
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FaultProxy"]

_FORWARDED_HEADERS = ("Content-Type", "Content-Encoding", "Authorization")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # http.server's naming
        self.server.proxy.handle(self)

    def do_POST(self) -> None:
        self.server.proxy.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class FaultProxy:
    """A misbehaving HTTP proxy on 127.0.0.1 (see the module docstring)."""

    def __init__(self, upstream: str, *, hang_seconds: float = 2.0) -> None:
        parts = urlsplit(upstream)
        self.host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.hang_seconds = hang_seconds
        self.write_delay = 0.0
        self.plan: deque[str] = deque()
        self.log: list[tuple[str, str]] = []
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        return int(self._server.server_address[1])

    def start(self) -> FaultProxy:
        """Serve in a background thread; return self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (held answers are abandoned: their threads are daemons)."""
        self._server.shutdown()
        self._server.server_close()

    def down_for(self, seconds: float) -> None:
        """Answer every request with 500 for ``seconds`` from now."""
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def actions(self, action: str) -> int:
        """How many requests got ``action``."""
        with self._lock:
            return sum(1 for _, done in self.log if done == action)

    # -- serving ---------------------------------------------------------------------------
    def handle(self, request: BaseHTTPRequestHandler) -> None:
        """Answer one request: forward it, fail it or hold it, as planned."""
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        path = urlsplit(request.path).path
        with self._lock:
            if time.monotonic() < self._down_until:
                action = "500"
            elif path == "/write" and self.plan:
                action = self.plan.popleft()
            else:
                action = "pass"
            self.log.append((path, action))
        if action == "500":
            self._answer(request, 500, "application/json", b'{"error":"injected: internal"}')
            return
        if path == "/write" and self.write_delay:
            time.sleep(self.write_delay)
        status, kind, payload = self._forward(request, body)
        if action == "store-then-500":
            status, payload = 500, b'{"error":"injected: failed after storing"}'
        elif action == "store-then-hang":
            time.sleep(self.hang_seconds)  # the client has given up by now
        self._answer(request, status, kind, payload)

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(self.host, self.upstream_port, timeout=60)
        try:
            headers = {h: request.headers[h] for h in _FORWARDED_HEADERS if h in request.headers}
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type") or "", response.read()
        finally:
            connection.close()

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, kind: str, payload: bytes) -> None:
        try:
            request.send_response(status)
            if kind:
                request.send_header("Content-Type", kind)
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
        except OSError:  # the client hung up (it timed out): nothing to answer
            request.close_connection = True
