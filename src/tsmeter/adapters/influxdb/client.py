"""A small client for InfluxDB's v1 HTTP API (``/write``, ``/query``, ``/ping``).

The same API is spoken by InfluxDB 1.x, by 2.x through its v1 compatibility
endpoints (token auth, a DBRP mapping) and by 3.x Core/Enterprise. Every value
that came from a user goes into a query as a bind parameter (``params``),
never into the query text. Errors are translated here, once:

* connection errors, timeouts and 5xx answers are retried a few times with
  backoff (writes are idempotent: a point written twice is one point), then
  raise :class:`~tsmeter.errors.StorageUnavailableError`;
* ``400 partial write`` raises :class:`PartialWriteError` with the server's
  message (the other lines of that request were stored);
* other 4xx answers are not retried;
* an answer that is not JSON raises :class:`UnreadableAnswerError`.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from tsmeter.errors import RejectedError, StorageUnavailableError, ValidationError

__all__ = [
    "InfluxV1Client",
    "InfluxV1Config",
    "PartialWriteError",
    "UnreadableAnswerError",
    "quote_ident",
]


class PartialWriteError(RejectedError):
    """The server stored some lines of a write and rejected others (``400 partial write``)."""

    def __init__(self, message: str, dropped: int | None) -> None:
        super().__init__(message)
        self.dropped = dropped


class UnreadableAnswerError(StorageUnavailableError):
    """A query's answer was not the JSON document the API promises. InfluxDB 1.x answers
    this way when a result holds a value JSON cannot carry, such as a sum that overflowed to
    +Inf: the same query over other series may succeed."""


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes, with ``\\`` and ``"`` escaped.

    >>> print(quote_ident('usage_daily.Europe/Paris'))
    "usage_daily.Europe/Paris"
    """
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class InfluxV1Config:
    """Where and how to reach the server, parsed from a store URL.

    ``influxdb://[user:password@]host[:port]/database?rp=&token=&writer=&timeout=&state=``
    (``influxdbs://`` for HTTPS). ``token`` sends ``Authorization: Token …`` (InfluxDB
    2.x compatibility API and 3.x); user and password use basic auth.

    >>> cfg = InfluxV1Config.from_url("influxdb://127.0.0.1:8086/metering?writer=api-1")
    >>> (cfg.base_url, cfg.database, cfg.writer)
    ('http://127.0.0.1:8086', 'metering', 'api-1')
    """

    base_url: str
    database: str
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    writer: str | None = None
    timeout: float = 30.0
    state: str | None = None
    retries: int = 3

    @classmethod
    def from_url(cls, url: str) -> InfluxV1Config:
        """Parse an ``influxdb://`` or ``influxdbs://`` store URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("influxdb", "influxdbs"):
            raise ValidationError("url", f"not an InfluxDB URL: {url!r}")
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ValidationError("url", "names no database (influxdb://host:8086/DATABASE)")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {"rp", "token", "writer", "timeout", "state", "retries"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise ValidationError("url", f"unknown option {unknown[0]!r}")
        scheme = "https" if parts.scheme == "influxdbs" else "http"
        host = parts.hostname or "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        try:
            port = parts.port or 8086
            timeout = float(query.get("timeout", 30))
            retries = int(query.get("retries", 3))
        except ValueError as exc:
            raise ValidationError("url", str(exc)) from None
        return cls(
            base_url=f"{scheme}://{netloc}:{port}",
            database=database,
            retention_policy=query.get("rp"),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            token=query.get("token"),
            writer=query.get("writer"),
            timeout=timeout,
            state=query.get("state"),
            retries=retries,
        )


class InfluxV1Client:
    """One keep-alive HTTP session to one database."""

    def __init__(self, config: InfluxV1Config) -> None:
        self.config = config
        self._session = requests.Session()
        if config.token:
            self._session.headers["Authorization"] = f"Token {config.token}"
        elif config.username:
            self._session.auth = (config.username, config.password or "")

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    # -- transport --------------------------------------------------------------------
    def _post(self, path: str, *, params: dict[str, str], data: Any) -> requests.Response:
        url = self.config.base_url + path
        delay = 0.2
        for attempt in range(self.config.retries + 1):
            try:
                response = self._session.post(
                    url, params=params, data=data, timeout=self.config.timeout
                )
            except requests.RequestException as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500:
                    return response
                failure = f"HTTP {response.status_code}: {_error_text(response)}"
            if attempt == self.config.retries:
                raise StorageUnavailableError(
                    f"InfluxDB at {self.config.base_url} failed after "
                    f"{attempt + 1} attempts: {failure}"
                )
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def ping(self, timeout: float = 5.0) -> bool:
        """Whether the server answers ``/ping`` with success within ``timeout`` seconds
        (1.x and 2.x answer 204; 3.x answers with its version in the body)."""
        try:
            response = self._session.get(self.config.base_url + "/ping", timeout=timeout)
        except requests.RequestException:
            return False
        return 200 <= response.status_code < 300

    # -- API --------------------------------------------------------------------------
    def write(self, body: bytes) -> None:
        """Write line protocol (nanosecond precision) to the configured database."""
        if not body:
            return
        params = {"db": self.config.database, "precision": "ns"}
        if self.config.retention_policy:
            params["rp"] = self.config.retention_policy
        response = self._post("/write", params=params, data=body)
        if response.status_code == 204:
            return
        message = _error_text(response)
        where = f"InfluxDB write to {self.config.database!r}"
        if response.status_code == 400 and "partial write" in message:
            dropped = message.rsplit("dropped=", 1)[-1].strip().rstrip('}"')
            raise PartialWriteError(
                f"{where}: {message}", int(dropped) if dropped.isdigit() else None
            )
        if response.status_code in (401, 403):
            raise StorageUnavailableError(f"{where} was refused (check credentials): {message}")
        if response.status_code == 404:
            raise StorageUnavailableError(
                f"{where}: {message} (create it with `tsmeter influx init`)"
            )
        if response.status_code in (400, 413, 422):
            raise RejectedError(f"{where} was rejected: HTTP {response.status_code}: {message}")
        raise StorageUnavailableError(f"{where} failed: HTTP {response.status_code}: {message}")

    def query(
        self, q: str, params: dict[str, Any] | None = None, *, database: bool = True
    ) -> list[dict[str, Any]]:
        """Run InfluxQL (one or more statements) and return each statement's result.

        Values in ``params`` are bound to ``$name`` placeholders by the server.
        Times come back as integer nanoseconds.
        """
        form: dict[str, str] = {"q": q, "epoch": "ns"}
        if params:
            form["params"] = json.dumps(params)
        query: dict[str, str] = {}
        if database:
            query["db"] = self.config.database
            if self.config.retention_policy:
                query["rp"] = self.config.retention_policy
        response = self._post("/query", params=query, data=form)
        if response.status_code != 200:
            raise StorageUnavailableError(
                f"InfluxDB query failed: HTTP {response.status_code}: {_error_text(response)}"
            )
        try:
            doc = response.json()
        except ValueError as exc:  # e.g. a sum of +Inf, which the server cannot write as JSON
            raise UnreadableAnswerError(
                f"InfluxDB answered a query with something that is not JSON:"
                f" {response.text.strip()[:300]!r}"
            ) from exc
        if not isinstance(doc, dict):
            raise UnreadableAnswerError(f"InfluxDB answered a query with {type(doc).__name__}")
        if "error" in doc:
            raise StorageUnavailableError(f"InfluxDB query failed: {doc['error']}")
        results: list[dict[str, Any]] = doc.get("results", [])
        for result in results:
            if "error" in result:
                raise StorageUnavailableError(f"InfluxDB query failed: {result['error']}")
        return results


def _error_text(response: requests.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])
    return response.text.strip()[:500]


def series_rows(result: dict[str, Any]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Flatten one statement's result into ``(series tags, row as column -> value)`` pairs."""
    out: list[tuple[dict[str, str], dict[str, Any]]] = []
    for series in result.get("series", []):
        tags = series.get("tags", {})
        columns = series["columns"]
        for values in series["values"]:
            out.append((tags, dict(zip(columns, values, strict=True))))
    return out
