"""influxdb-client for the InfluxDB 2.x store: configuration, and every call in one place.

Writes go through ``write_api(write_options=SYNCHRONOUS)`` with the encoder's bytes (never
Point objects, never the batching API, which only logs failures). Errors are translated
here, once, the way :mod:`~tsmeter.adapters.influxdb.client` does for the v1 API:

* connection errors, timeouts and 5xx answers are retried with backoff, then raise
  :class:`~tsmeter.errors.StorageUnavailableError` naming the server;
* a write the server stored only in part (``partial write``, or 422) raises
  :class:`~tsmeter.adapters.influxdb.client.PartialWriteError`;
* other 4xx answers are not retried (401/403: the token; 404: bucket or org missing).
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import urllib3
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.flux_table import FluxRecord, FluxTable
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from tsmeter.adapters.influxdb.client import InfluxV1Config, PartialWriteError
from tsmeter.adapters.influxdb.flux import END, Flux
from tsmeter.errors import RejectedError, StorageUnavailableError, ValidationError

__all__ = ["ENV_TOKEN", "InfluxV2Client", "InfluxV2Config"]

ENV_TOKEN = "TSMETER_INFLUXDB_TOKEN"
_T = TypeVar("_T")
_TRUE = {"1", "true", "yes", "on"}
_DROPPED = re.compile(r"dropped=(\d+)")
_WRITE = "InfluxDB write"


@dataclass(frozen=True)
class InfluxV2Config:
    """Where and how to reach an InfluxDB 2.x server, parsed from a store URL.

    ``influxdb2://host[:port]/BUCKET?org=ORG&token=&https=&writer=&state=&timeout=&retries=``;
    the token may come from ``$TSMETER_INFLUXDB_TOKEN`` instead.

    >>> cfg = InfluxV2Config.from_url("influxdb2://db.local/usage?org=acme&token=t&https=1")
    >>> (cfg.base_url, cfg.bucket, cfg.org)
    ('https://db.local:8086', 'usage', 'acme')
    """

    base_url: str
    bucket: str
    org: str
    token: str | None = field(default=None, repr=False)
    writer: str | None = None
    timeout: float = 30.0
    state: str | None = None
    retries: int = 3

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> InfluxV2Config:
        """Parse an ``influxdb2://`` store URL (``environ`` defaults to ``os.environ``)."""
        parts = urlsplit(url)
        if parts.scheme != "influxdb2":
            raise ValidationError("url", f"not an InfluxDB 2.x URL: {url!r}")
        bucket = unquote(parts.path.lstrip("/"))
        if not bucket:
            raise ValidationError("url", "names no bucket (influxdb2://host:8086/BUCKET?org=ORG)")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - {"org", "token", "https", "writer", "timeout", "state",
                                       "retries"})  # fmt: skip
        if unknown:
            raise ValidationError("url", f"unknown option {unknown[0]!r}")
        if not query.get("org"):
            raise ValidationError("url", "names no organisation (add ?org=ORG)")
        host = parts.hostname or "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        scheme = "https" if query.get("https", "").lower() in _TRUE else "http"
        try:
            port = parts.port or 8086
            timeout = float(query.get("timeout", 30))
            retries = int(query.get("retries", 3))
        except ValueError as exc:
            raise ValidationError("url", str(exc)) from None
        env = os.environ if environ is None else environ
        return cls(
            base_url=f"{scheme}://{netloc}:{port}",
            bucket=bucket,
            org=query["org"],
            token=query.get("token") or env.get(ENV_TOKEN) or None,
            writer=query.get("writer"),
            timeout=timeout,
            state=query.get("state"),
            retries=retries,
        )

    def as_v1(self) -> InfluxV1Config:
        """The same target as a v1 configuration (what the shared write path reads)."""
        return InfluxV1Config(
            base_url=self.base_url, database=self.bucket, token=self.token, writer=self.writer,
            timeout=self.timeout, state=self.state, retries=self.retries,
        )  # fmt: skip


def _message(exc: ApiException) -> str:
    text = str(getattr(exc, "message", "") or exc.reason or "").strip()
    return text[:500]


class InfluxV2Client:
    """One influxdb-client connection to one bucket, with tsmeter's errors."""

    def __init__(self, config: InfluxV2Config) -> None:
        self.config = config
        # influxdb-client's API objects are mostly unannotated: held as Any, used here only
        self.sdk: Any = InfluxDBClient(
            url=config.base_url,
            token=config.token or "",
            org=config.org,
            timeout=int(config.timeout * 1000),
        )
        self._write: Any = self.sdk.write_api(write_options=SYNCHRONOUS)
        self._query: Any = self.sdk.query_api()

    def close(self) -> None:
        """Close the connection pool."""
        self._write.close()
        self.sdk.close()

    # -- transport --------------------------------------------------------------------
    def _failure(self, what: str, exc: Exception) -> str:
        """What went wrong, if it is worth retrying; else raise the translated error."""
        if isinstance(exc, ApiException):
            status = exc.status or 0
            if 0 < status < 500:
                raise self._client_error(what, status, _message(exc)) from exc
            return f"HTTP {status}: {_message(exc)}"
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            return f"{type(exc).__name__}: {exc}"
        if isinstance(exc, InfluxDBError):  # also FluxQueryException: an error in the results
            raise StorageUnavailableError(f"{what} failed: {exc.message}") from exc
        raise exc

    def call(self, what: str, action: Callable[[], _T]) -> _T:
        """Run ``action`` with retries on connection errors and 5xx; translate the rest."""
        delay = 0.2
        for attempt in range(self.config.retries + 1):
            try:
                return action()
            except Exception as exc:
                failure = self._failure(what, exc)
            if attempt == self.config.retries:
                raise StorageUnavailableError(
                    f"InfluxDB at {self.config.base_url} failed after "
                    f"{attempt + 1} attempts ({what}): {failure}"
                )
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def _client_error(self, what: str, status: int, message: str) -> StorageUnavailableError:
        where = f"{what} (bucket {self.config.bucket!r}, org {self.config.org!r})"
        if what == _WRITE and ("partial write" in message or status == 422):
            found = _DROPPED.search(message)
            return PartialWriteError(f"{where}: {message}", int(found[1]) if found else None)
        if status in (401, 403):
            return StorageUnavailableError(f"{where} was refused (check the token): {message}")
        if status == 404:
            return StorageUnavailableError(
                f"{where}: {message} (create the bucket with `tsmeter influx init`)"
            )
        if what == _WRITE and status in (400, 413):
            return RejectedError(f"{where} was rejected: HTTP {status}: {message}")
        return StorageUnavailableError(f"{where} failed: HTTP {status}: {message}")

    # -- API --------------------------------------------------------------------------
    def write(self, body: bytes) -> None:
        """Write line protocol (nanosecond precision) to the bucket."""
        if not body:
            return
        self.call(
            _WRITE,
            lambda: self._write.write(
                bucket=self.config.bucket, record=body, write_precision=WritePrecision.NS
            ),
        )

    def tables(self, query: Flux) -> list[FluxTable]:
        """Run a Flux query and return its tables."""
        return self.call(
            "InfluxDB query", lambda: list(self._query.query(query.text, params=query.params))
        )

    def rows(self, query: Flux) -> list[dict[str, Any]]:
        """Run a Flux query and return every row as column -> value."""
        return [record.values for table in self.tables(query) for record in table.records]

    def stream(self, query: Flux) -> Iterator[dict[str, Any]]:
        """Run a Flux query and yield rows as they arrive (retried only until it starts)."""
        what = "InfluxDB query"
        records: Iterator[FluxRecord] = self.call(
            what, lambda: self._query.query_stream(query.text, params=query.params)
        )
        while True:
            try:
                record = next(records, None)
            except Exception as exc:
                failure = self._failure(what, exc)
                raise StorageUnavailableError(f"{what} broke off: {failure}") from exc
            if record is None:
                return
            yield record.values

    def delete(self, predicate: str, start: int = 0, stop: int = END) -> None:
        """Delete the points matching ``predicate`` (delete-API syntax) in ``[start, stop]``."""
        epoch = datetime(1970, 1, 1, tzinfo=UTC)

        def stamp(ns: int) -> str:
            return (epoch + timedelta(microseconds=ns // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        self.call(
            "InfluxDB delete",
            lambda: self.sdk.delete_api().delete(
                stamp(start), stamp(stop), predicate, bucket=self.config.bucket,
                org=self.config.org,
            ),
        )  # fmt: skip

    def ensure_bucket(self) -> bool:
        """Create the bucket (infinite retention) if it is missing; True if it was created."""
        buckets: Any = self.sdk.buckets_api()
        if self.call("InfluxDB bucket lookup",
                     lambda: buckets.find_bucket_by_name(self.config.bucket)):  # fmt: skip
            return False
        try:
            self.call(
                "InfluxDB bucket creation",
                lambda: buckets.create_bucket(bucket_name=self.config.bucket, org=self.config.org),
            )
        except StorageUnavailableError as exc:
            if "already exists" in str(exc):  # created meanwhile by someone else
                return False
            raise
        return True
