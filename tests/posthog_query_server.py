"""A local stand-in for PostHog's query API (``POST /api/projects/{id}/query/``) on 127.0.0.1.

Every request is checked the way PostHog would, and stricter:

* the bearer token and the project id in the path;
* the body: ``{"query": {"kind": "HogQLQuery", "query", "values", "modifiers"}, "refresh"}``,
  with ``convertToProjectTimezone: false``;
* the HogQL text is parsed by PostHog's own parser (``hogql-parser``, which answers a syntax
  error with JSON ``"error": true`` instead of raising);
* every ``{placeholder}`` has a value, every value is used by a placeholder, values are JSON
  scalars, the only string literals in the text are the few tsmeter writes itself
  (:data:`ALLOWED_LITERALS`), and there is an explicit ``LIMIT``.

A request that breaks a rule is answered ``400`` *and* recorded in :attr:`failures`; the
test fixture fails the test when any was recorded. Valid queries are evaluated by
:mod:`tests.hogql_eval` over :attr:`events` (as captured: ``uuid``, ``event``, ``timestamp``,
``properties``) and answered in PostHog's documented shape: ``results``, ``columns``,
``types``, ``hasMore``, ``limit``, ``offset``, ``hogql``, ``query``, ``modifiers``,
``timings``, ``error``. LIMIT is capped at 50,000 (100 without one), like PostHog.
Queue canned answers in :attr:`faults` (``(status, headers, body)``) to script failures.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

from tests.hogql_eval import Context, JsonText, Query, Unsupported, column_type

MAX_ROWS = 50_000
#: The string literals tsmeter's queries may contain: property keys and the zone name.
ALLOWED_LITERALS = frozenset(
    {"UTC", "recordId", "subjectType", "subjectId", "quantity", "units", "precision", "source",
     "orgId", "metricKey", "correctionId", "kind", "quantityBefore", "quantityAfter",
     "correctedAt"}
)  # fmt: skip


def load_parser() -> ModuleType:
    """Import ``hogql_parser``: it imports ``posthog.hogql`` and ``posthog.hogql.errors`` (from
    PostHog's own code base, not the ``posthog`` SDK), so empty stand-ins are put under those
    names for the import only. The ``*_json`` functions need nothing from them."""
    added = []
    for name in ("posthog.hogql", "posthog.hogql.errors"):
        if name not in sys.modules:
            sys.modules[name] = ModuleType(name)
            added.append(name)
    errors = sys.modules["posthog.hogql.errors"]
    for cls in ("SyntaxError", "NotImplementedError", "QueryError", "ExposedHogQLError",
                "InternalHogQLError", "ParsingError"):  # fmt: skip
        if not hasattr(errors, cls):
            setattr(errors, cls, type(cls, (Exception,), {}))
    try:
        import hogql_parser
    finally:
        for name in added:
            del sys.modules[name]
    return hogql_parser


_parser = load_parser()


@lru_cache(maxsize=64)
def _parse_text(text: str) -> str:
    result: str = _parser.parse_select_json(text, is_internal=True)
    return result


def parse(text: str) -> dict[str, Any]:
    """The JSON AST of a HogQL SELECT (``"error": true`` with a message on a syntax error);
    parsed by PostHog's parser once per distinct text."""
    doc: dict[str, Any] = json.loads(_parse_text(text))
    return doc


def placeholders(node: Any) -> set[str]:
    """The names of every ``{placeholder}`` in an AST."""
    found: set[str] = set()
    if isinstance(node, dict):
        if node.get("node") == "Placeholder":
            found.add(".".join(node["expr"]["chain"]))
        for value in node.values():
            found |= placeholders(value)
    elif isinstance(node, list):
        for value in node:
            found |= placeholders(value)
    return found


def string_literals(node: Any) -> set[str]:
    """Every string constant in an AST."""
    found: set[str] = set()
    if isinstance(node, dict):
        if node.get("node") == "Constant" and isinstance(node.get("value"), str):
            found.add(node["value"])
        for value in node.values():
            found |= string_literals(value)
    elif isinstance(node, list):
        for value in node:
            found |= string_literals(value)
    return found


def _event(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A captured event as a row of the ``events`` table."""
    ts = doc["timestamp"]
    when = ts if isinstance(ts, datetime) else datetime.fromisoformat(str(ts))
    if when.tzinfo is None:
        raise ValueError(f"event {doc.get('uuid')} has a naive timestamp {ts!r}")
    return {
        "uuid": str(doc["uuid"]),
        "event": doc["event"],
        "timestamp": when.astimezone(UTC),
        "distinct_id": doc.get("distinct_id", ""),
        "properties": JsonText.of(doc.get("properties") or {}),
    }


def _jsonable(value: Any, time_style: str) -> Any:
    if isinstance(value, datetime):
        text = value.isoformat()
        return text.replace("+00:00", "Z") if time_style == "Z" else text
    if isinstance(value, date):
        return value.isoformat()
    return value


class QueryServer:
    """The endpoint and what it has seen; use :func:`query_server` to run one."""

    def __init__(
        self,
        *,
        token: str = "phx_test",
        project_id: str = "4242",
        project_zone: str = "America/Los_Angeles",
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.token = token
        self.max_rows = max_rows
        self.project_id = project_id
        self.project_zone = ZoneInfo(project_zone)
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.faults: list[tuple[int, dict[str, str], Any]] = []
        self.delays: list[float] = []
        self._tables: dict[bool, list[dict[str, Any]]] = {}
        self.time_style = "Z"
        self.lock = threading.Lock()
        self.url = ""

    def add_events(self, docs: list[Mapping[str, Any]]) -> None:
        """Store events (as captured) for the queries to see."""
        rows = [_event(d) for d in docs]
        with self.lock:
            self.events.extend(rows)
            self._tables.clear()

    def fail(self, message: str) -> tuple[int, dict[str, Any]]:
        self.failures.append(message)
        return 400, {"type": "validation_error", "code": "invalid_input", "detail": message}

    def answer(self, path: str, headers: Mapping[str, str], raw: bytes) -> tuple[int, Any]:
        """Status and JSON body for one request."""
        if path != f"/api/projects/{self.project_id}/query/":
            return 404, {"type": "invalid_request", "detail": "Not found."}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"type": "authentication_error", "code": "authentication_failed",
                         "detail": "Incorrect authentication credentials."}  # fmt: skip
        try:
            body = json.loads(raw)
            query = body["query"]
            text, values = query["query"], query["values"]
        except (ValueError, KeyError, TypeError) as exc:
            return self.fail(f"malformed body: {exc!r}")
        with self.lock:
            self.requests.append({"query": text, "values": values, "body": body})
            fault = self.faults.pop(0) if self.faults else None
            delay = self.delays.pop(0) if self.delays else 0.0
        if delay:
            time.sleep(delay)
        if fault is not None:
            return fault[0], (fault[2], fault[1])
        problem = self.check(body, query, text, values)
        if problem:
            return self.fail(problem)
        ast = parse(text)
        convert = query["modifiers"]["convertToProjectTimezone"]
        with self.lock:
            if convert not in self._tables:
                zone = self.project_zone if convert else UTC
                self._tables[convert] = [
                    dict(e, timestamp=e["timestamp"].astimezone(zone)) for e in self.events
                ]
            table = self._tables[convert]
        ctx = Context(table, values, self.project_zone, convert)
        try:
            compiled = Query(ast, ctx)
            columns, rows = compiled.run(limit_cap=self.max_rows)
        except Unsupported as exc:
            return self.fail(f"evaluator: {exc}\n{text}")
        return 200, {
            "results": [[_jsonable(v, self.time_style) for v in r] for r in rows],
            "columns": columns,
            "types": [[c, column_type(r[i] for r in rows)] for i, c in enumerate(columns)],
            "hasMore": compiled.has_more,
            "limit": len(rows),
            "offset": 0,
            "hogql": text,
            "query": text,
            "modifiers": query["modifiers"],
            "timings": [],
            "error": None,
        }

    def check(self, body: Mapping[str, Any], query: Mapping[str, Any], text: Any,
              values: Any) -> str | None:  # fmt: skip
        """What is wrong with a request (None: nothing)."""
        if query.get("kind") != "HogQLQuery" or not isinstance(text, str):
            return f"not a HogQLQuery: {query.get('kind')!r}"
        if (query.get("modifiers") or {}).get("convertToProjectTimezone") is not False:
            return "modifiers.convertToProjectTimezone must be false (UTC periods)"
        if body.get("refresh") not in ("blocking", "force_blocking"):
            return f"refresh must be a blocking mode, got {body.get('refresh')!r}"
        if not isinstance(values, dict):
            return "values must be an object"
        ast = parse(text)
        if ast.get("error"):
            return f"HogQL syntax error: {ast.get('message')}\n{text}"
        if ast.get("limit") is None:
            return "no LIMIT: PostHog would return 100 rows"
        used = placeholders(ast)
        if used - set(values):
            return f"placeholders without a value: {sorted(used - set(values))}"
        if set(values) - used:
            return f"values no placeholder uses: {sorted(set(values) - used)}"
        for name, value in values.items():
            if not (value is None or isinstance(value, str | int | float | bool)):
                return f"value {name} is not a scalar: {value!r}"
        literals = string_literals(ast) - ALLOWED_LITERALS
        if literals:
            return f"string literals in the query text: {sorted(literals)}"
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        status, doc = self.server.endpoint.answer(self.path, dict(self.headers.items()), raw)
        extra: dict[str, str] = {}
        if isinstance(doc, tuple):  # a scripted fault: (body, headers)
            doc, extra = doc
        payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    endpoint: QueryServer


@contextmanager
def query_server(**options: Any) -> Iterator[QueryServer]:
    """Run a :class:`QueryServer` on 127.0.0.1 (a free port) for the ``with`` block."""
    endpoint = QueryServer(**options)
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.endpoint = endpoint
    endpoint.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
