"""What the sync and async clients share: each API call as data, errors, retries.

A :class:`Call` says what one Meter method sends over HTTP (method, path, query, body), how
its answer becomes a domain model, and whether it may be sent again after the request may
have reached the server. The clients only execute calls, so the two cannot drift apart.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import msgspec
from pydantic.alias_generators import to_camel

from tsmeter.domain import (
    BatchResult,
    MetricDefinition,
    Model,
    UsageAlert,
    UsageRecord,
    UsageSummary,
    UsageThreshold,
    new_ids,
)
from tsmeter.domain.corrections import Correction
from tsmeter.domain.filters import where_texts
from tsmeter.domain.modelio import build
from tsmeter.domain.models import STORED
from tsmeter.errors import (
    ConflictError,
    NotFoundError,
    OutboxFullError,
    QuotaExceededError,
    StorageUnavailableError,
    TsmeterError,
    ValidationError,
)
from tsmeter.metering.planning import conflict_message, metric_changes

__all__ = ["ApiError", "Call", "Calls", "Retry", "RowCounter", "error_for", "record_body"]

T = TypeVar("T")
M = TypeVar("M", bound=Model)
TimeLike = datetime | str
Quantity = int | float | str | Decimal


class ApiError(TsmeterError):
    """An answer no tsmeter error describes (401 or 403 for the key, an unexpected 5xx):
    ``status`` is the HTTP status and ``problem`` the problem+json document, if any."""

    def __init__(self, status: int, message: str, problem: Mapping[str, Any] | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.problem = dict(problem or {})


@dataclass(frozen=True)
class Retry:
    """How a client retries: up to ``attempts`` tries in all, waiting a random time up to
    ``backoff * 2**n`` (at most ``max_backoff``) before try ``n + 1``, or what the server's
    Retry-After asks (at most ``max_retry_after``) plus a little jitter.

    Retried: connection errors, 429 and 503. A call whose request may have reached the server
    is sent again only if sending it twice does no harm (reads, updates, and records, whose
    ids the client assigns before the first try)."""

    attempts: int = 5
    backoff: float = 0.1
    max_backoff: float = 5.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0 is the first)."""
        jitter = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
        if retry_after is None:
            return jitter
        return min(retry_after, self.max_retry_after) + random.uniform(0, self.backoff)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), None if absent.

    >>> retry_after("2"), retry_after(None), retry_after("soon")
    (2.0, None, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def decode(payload: bytes) -> Any:
    """An answer's JSON. Quantities come as decimal strings, which the models parse into exact
    Decimals; a number is what JSON says, so metadata reads as the Meter returns it (2.5 a
    float, as stored).

    >>> decode(b'{"quantity": "0.1", "metadata": {"latency": 2.5}}')
    {'quantity': '0.1', 'metadata': {'latency': 2.5}}
    """
    return _DECODER.decode(payload) if payload else None


def encode(body: Any) -> bytes:
    """JSON for a request: decimals as strings (exact), times as RFC 3339, enums by value.

    >>> encode({"quantity": Decimal("1.10"), "at": datetime(2026, 1, 5, tzinfo=UTC)})
    b'{"quantity":"1.10","at":"2026-01-05T00:00:00Z"}'
    """
    return _ENCODER.encode(body)


def _plain(value: object) -> object:
    if isinstance(value, Model):
        return value.to_json_dict()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


# msgspec (a core dependency) writes Decimal as its exact string and datetimes as RFC 3339
_ENCODER = msgspec.json.Encoder(enc_hook=_plain, decimal_format="string")
_DECODER = msgspec.json.Decoder()


def error_for(status: int, payload: bytes, content_type: str = "") -> TsmeterError:
    """The tsmeter error for an error answer (problem+json, else its text)."""
    problem: dict[str, Any] = {}
    if "json" in content_type:
        try:
            decoded = decode(payload)
        except msgspec.DecodeError:
            decoded = None
        if isinstance(decoded, dict):
            problem = decoded
    detail = str(
        problem.get("detail") or problem.get("title") or payload[:500].decode(errors="replace")
    )
    errors = problem.get("errors") or []
    if status in (400, 413, 422):
        if errors and isinstance(errors[0], dict):
            first = errors[0]
            return ValidationError(
                str(first.get("field") or ""), str(first.get("message") or detail)
            )
        return ValidationError("", detail)
    if status == 404:
        return NotFoundError(detail)
    if status == 409:
        return ConflictError(detail)
    if status == 403 and str(problem.get("type", "")).endswith("quota-exceeded"):
        return QuotaExceededError(detail, problem)
    if status == 429:
        return OutboxFullError(detail)
    if status == 503:
        return StorageUnavailableError(detail)
    return ApiError(status, detail, problem)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, str | list[str]] = field(default_factory=dict)
    body: Any = None
    #: sending it twice does no harm, so it is retried even after the request may have
    #: reached the server (a dropped connection, a timeout while waiting for the answer)
    idempotent: bool = False

    def content(self) -> bytes | None:
        """The request body as bytes (None: no body)."""
        return None if self.body is None else encode(self.body)


def _segment(value: str) -> str:
    """A path segment with every reserved character escaped (keys are data: ``a/b`` too)."""
    return quote(value, safe="")


def _query(**values: object) -> dict[str, str]:
    """Query parameters: None dropped, booleans as true/false, times as ISO-8601."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, datetime):
            out[name] = value.isoformat()
        elif isinstance(value, Enum):
            out[name] = str(value.value)
        else:
            out[name] = str(value)
    return out


def _fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword fields in the API's camelCase spelling (either spelling accepted)."""
    return {_camel(name): value for name, value in values.items()}


_camel = cache(to_camel)  # the same few names, for every record of a batch


def _one(model: type[M]) -> Callable[[Any], M]:
    return lambda data: model.model_validate(data, context=STORED)


def _many(model: type[M], key: str) -> Callable[[Any], list[M]]:
    def parse(data: Any) -> list[M]:
        items = data.get(key) if isinstance(data, dict) else data
        return [model.model_validate(item, context=STORED) for item in items or []]

    return parse


def quantity_text(value: Quantity) -> str:
    """A quantity as the exact decimal text the server parses (a float by its shortest repr,
    as the Meter reads one)."""
    if isinstance(value, bool):
        raise ValidationError("quantity", "must be a number, got bool")
    return repr(value) if isinstance(value, float) else str(value)


def record_body(
    metric_key: str,
    subject_type: str,
    subject_id: str,
    quantity: Quantity | None = None,
    *,
    timestamp: TimeLike | None = None,
    id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    source: str | None = None,
    org_id: str | None = None,
) -> dict[str, Any]:
    """One record as the API takes it, with its id and time fixed now: a retry (or a batch
    sent later) carries the same id, so it counts once, and the time of the call."""
    body: dict[str, Any] = {
        "id": id if id is not None else new_ids(1)[0],
        "metricKey": metric_key,
        "subjectType": subject_type,
        "subjectId": subject_id,
        "timestamp": timestamp if timestamp is not None else datetime.now(UTC),
    }
    if quantity is not None:
        body["quantity"] = quantity_text(quantity)
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if source is not None:
        body["source"] = source
    if org_id is not None:
        body["orgId"] = org_id
    return body


def batch_bodies(records: Iterable[Mapping[str, Any] | UsageRecord]) -> list[dict[str, Any]]:
    """Records of a batch as the API takes them; a record without an id gets one now, and
    one without a time the time of this call (either spelling of a field is accepted)."""
    items = [r.to_json_dict() if isinstance(r, UsageRecord) else _fields(r) for r in records]
    missing = [item for item in items if item.get("id") is None]
    for item, new in zip(missing, new_ids(len(missing)), strict=True):
        item["id"] = new
    now = datetime.now(UTC)
    for item in items:
        if item.get("timestamp") is None:
            item["timestamp"] = now
        if item.get("quantity") is not None and not isinstance(item["quantity"], str):
            item["quantity"] = quantity_text(item["quantity"])
    return items


def _batch_result(data: Any) -> BatchResult:
    """The batch answer as the Meter's BatchResult (``accepted`` counts what the server took:
    new records and ids it already had, or records queued for the store)."""
    if {"recorded", "duplicates"} <= set(data):
        return BatchResult.model_validate(
            {k: data[k] for k in ("recorded", "duplicates", "queued") if k in data}
        )
    return BatchResult(recorded=int(data["accepted"]), duplicates=0)


def wanted_metric(key: str, fields: Mapping[str, Any]) -> MetricDefinition:
    """The definition ``define_metric(key, **fields)`` asks for, checked here as the server
    would (for ``exist_ok``: what a stored metric is compared with)."""
    return build(MetricDefinition, {**fields, "key": key})


def existing_metric(current: MetricDefinition, wanted: MetricDefinition) -> MetricDefinition:
    """``current`` if it is the metric ``wanted`` declares; ConflictError naming the fields
    that differ otherwise (as ``Meter.define_metric(..., exist_ok=True)`` does)."""
    differing = metric_changes(current, wanted)
    if differing:
        scope = f" in org {current.org_id!r}" if current.org_id else ""
        raise ConflictError(conflict_message(f"metric {current.key!r}{scope}", differing))
    return current


def wanted_threshold(
    metric_key: str,
    subject_type: str,
    threshold: Quantity,
    subject_id: str,
    fields: Mapping[str, Any],
) -> UsageThreshold:
    """The threshold ``create_threshold`` asks for (for ``exist_ok``: see same_threshold)."""
    return build(
        UsageThreshold,
        {
            **fields,
            "metric_key": metric_key,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "threshold": threshold,
        },
    )


#: the most records one ``GET /v1/usage/records`` returns; ``get_usage(limit=None)`` asks for it
MAX_USAGE_LIMIT = 100_000


class Calls:
    """Every API call, named and shaped as the Meter method it stands for."""

    # -- metrics ----------------------------------------------------------------------
    @staticmethod
    def define_metric(
        key: str, *, exist_ok: bool, fields: Mapping[str, Any]
    ) -> Call[MetricDefinition]:
        # with exist_ok a repeat is answered 409 and then compared (see existing_metric)
        body = {**_fields(fields), "key": key}
        return Call("POST", "/v1/metrics", _one(MetricDefinition), body=body, idempotent=exist_ok)

    @staticmethod
    def update_metric(
        key: str, org_id: str | None, changes: Mapping[str, Any]
    ) -> Call[MetricDefinition]:
        return Call(
            "PATCH",
            f"/v1/metrics/{_segment(key)}",
            _one(MetricDefinition),
            _query(orgId=org_id),
            _fields(changes),
            idempotent=True,
        )

    @staticmethod
    def delete_metric(key: str, org_id: str | None, purge: bool) -> Call[int]:
        return Call(
            "DELETE",
            f"/v1/metrics/{_segment(key)}",
            lambda d: int(d["deletedRecords"]),
            _query(orgId=org_id, purge=purge or None),
        )

    @staticmethod
    def get_metric(key: str, org_id: str | None) -> Call[MetricDefinition]:
        return Call(
            "GET",
            f"/v1/metrics/{_segment(key)}",
            _one(MetricDefinition),
            _query(orgId=org_id),
            idempotent=True,
        )

    @staticmethod
    def list_metrics(org_id: str | None, all_orgs: bool) -> Call[list[MetricDefinition]]:
        return Call(
            "GET",
            "/v1/metrics",
            _many(MetricDefinition, "metrics"),
            _query(orgId=org_id, allOrgs=all_orgs or None),
            idempotent=True,
        )

    # -- recording --------------------------------------------------------------------
    @staticmethod
    def record(body: dict[str, Any], enforce: bool) -> Call[UsageRecord]:
        return Call(
            "POST",
            "/v1/usage/records",
            _one(UsageRecord),
            _query(enforce=enforce or None),
            body,
            idempotent=True,
        )

    @staticmethod
    def record_batch(bodies: list[dict[str, Any]], enforce: bool) -> Call[BatchResult]:
        return Call(
            "POST",
            "/v1/usage/records/batch",
            _batch_result,
            _query(enforce=enforce or None),
            {"records": bodies},
            idempotent=True,
        )

    # -- reading ----------------------------------------------------------------------
    @staticmethod
    def get_usage(
        metric_key: str,
        subject_type: str | None,
        subject_id: str | None,
        start: TimeLike | None,
        end: TimeLike | None,
        org_id: str | None,
        limit: int | None,
    ) -> Call[list[UsageRecord]]:
        query = _query(
            metricKey=metric_key,
            subjectType=subject_type,
            subjectId=subject_id,
            **{"from": start, "to": end},
            orgId=org_id,
            limit=MAX_USAGE_LIMIT if limit is None else limit,
        )
        return Call(
            "GET", "/v1/usage/records", _many(UsageRecord, "records"), query, idempotent=True
        )

    @staticmethod
    def get_usage_summary(
        metric_key: str,
        subject_type: str,
        subject_id: str,
        period_type: object,
        at: TimeLike | None,
        org_id: str | None,
    ) -> Call[UsageSummary]:
        query = _query(
            metricKey=metric_key,
            subjectType=subject_type,
            subjectId=subject_id,
            periodType=period_type,
            at=at,
            orgId=org_id,
        )
        return Call("GET", "/v1/usage/summary", _one(UsageSummary), query, idempotent=True)

    @staticmethod
    def get_usage_summaries(
        metric_key: str,
        period_type: object,
        start: TimeLike,
        end: TimeLike,
        subject_type: str | None,
        subject_id: str | None,
        org_id: str | None,
    ) -> Call[list[UsageSummary]]:
        query = _query(
            metricKey=metric_key,
            periodType=period_type,
            **{"from": start, "to": end},
            subjectType=subject_type,
            subjectId=subject_id,
            orgId=org_id,
        )
        return Call(
            "GET", "/v1/usage/summaries", _many(UsageSummary, "summaries"), query, idempotent=True
        )

    @staticmethod
    def export_usage(
        metric_key: str | None,
        fmt: str,
        start: TimeLike | None,
        end: TimeLike | None,
        subject_type: str | None,
        subject_id: str | None,
        org_id: str | None,
    ) -> Call[None]:
        if fmt not in ("jsonl", "csv"):
            raise ValidationError("fmt", "must be jsonl or csv")
        query = _query(
            metricKey=metric_key,
            format="ndjson" if fmt == "jsonl" else "csv",
            **{"from": start, "to": end},
            subjectType=subject_type,
            subjectId=subject_id,
            orgId=org_id,
        )
        return Call("GET", "/v1/usage/export", lambda _: None, query, idempotent=True)

    @staticmethod
    def get_usage_breakdown(
        metric_key: str,
        period_type: object,
        start: TimeLike,
        end: TimeLike,
        group_by: Iterable[str],
        where: Mapping[str, object] | None,
        subject_type: str | None,
        subject_id: str | None,
        org_id: str | None,
        as_of: TimeLike | None,
    ) -> Call[list[UsageSummary]]:
        if isinstance(group_by, str):  # one name, not its letters
            group_by = (group_by,)
        query: dict[str, Any] = _query(
            metricKey=metric_key,
            periodType=period_type,
            **{"from": start, "to": end},
            subjectType=subject_type,
            subjectId=subject_id,
            orgId=org_id,
            asOf=as_of,
        )
        names = list(group_by)
        if names:
            query["groupBy"] = names
        texts = where_texts(where)
        if texts:
            query["where"] = texts
        return Call(
            "GET", "/v1/usage/breakdown", _many(UsageSummary, "summaries"), query, idempotent=True
        )

    # -- corrections ------------------------------------------------------------------
    @staticmethod
    def cancel_record(
        record_id: str, reason: str, actor: str, correction_id: str | None
    ) -> Call[Correction]:
        body = {"reason": reason, "actor": actor}
        if correction_id is not None:
            body["correctionId"] = correction_id
        # idempotent by its correction id (given, or derived from the record id and kind)
        path = f"/v1/usage/records/{_segment(record_id)}/cancel"
        return Call("POST", path, _one(Correction), body=body, idempotent=True)

    @staticmethod
    def amend_record(
        record_id: str, quantity: Quantity, reason: str, actor: str, correction_id: str | None
    ) -> Call[Correction]:
        body = {"quantity": quantity_text(quantity), "reason": reason, "actor": actor}
        if correction_id is not None:
            body["correctionId"] = correction_id
        path = f"/v1/usage/records/{_segment(record_id)}/amend"
        return Call("POST", path, _one(Correction), body=body, idempotent=True)

    @staticmethod
    def list_corrections(
        metric_key: str | None,
        org_id: str | None,
        record_id: str | None,
        start: TimeLike | None,
        end: TimeLike | None,
    ) -> Call[list[Correction]]:
        query = _query(
            metricKey=metric_key, orgId=org_id, recordId=record_id, **{"from": start, "to": end}
        )
        return Call(
            "GET",
            "/v1/usage/corrections",
            _many(Correction, "corrections"),
            query,
            idempotent=True,
        )

    # -- thresholds -------------------------------------------------------------------
    @staticmethod
    def create_threshold(
        metric_key: str,
        subject_type: str,
        threshold: Quantity,
        subject_id: str,
        fields: Mapping[str, Any],
    ) -> Call[UsageThreshold]:
        body = {
            **_fields(fields),
            "metricKey": metric_key,
            "subjectType": subject_type,
            "subjectId": subject_id,
            "threshold": quantity_text(threshold),
        }
        return Call("POST", "/v1/thresholds", _one(UsageThreshold), body=body)

    @staticmethod
    def get_threshold(threshold_id: str) -> Call[UsageThreshold]:
        path = f"/v1/thresholds/{_segment(threshold_id)}"
        return Call("GET", path, _one(UsageThreshold), idempotent=True)

    @staticmethod
    def update_threshold(threshold_id: str, changes: Mapping[str, Any]) -> Call[UsageThreshold]:
        return Call(
            "PATCH",
            f"/v1/thresholds/{_segment(threshold_id)}",
            _one(UsageThreshold),
            body=_fields(changes),
            idempotent=True,
        )

    @staticmethod
    def delete_threshold(threshold_id: str) -> Call[None]:
        return Call("DELETE", f"/v1/thresholds/{_segment(threshold_id)}", lambda _: None)

    @staticmethod
    def list_thresholds(
        metric_key: str | None, subject_type: str | None, subject_id: str | None
    ) -> Call[list[UsageThreshold]]:
        query = _query(metricKey=metric_key, subjectType=subject_type, subjectId=subject_id)
        return Call(
            "GET", "/v1/thresholds", _many(UsageThreshold, "thresholds"), query, idempotent=True
        )

    # -- alerts -----------------------------------------------------------------------
    @staticmethod
    def list_alerts(
        status: object, metric_key: str | None, subject_type: str | None, subject_id: str | None
    ) -> Call[list[UsageAlert]]:
        query = _query(
            status=status, metricKey=metric_key, subjectType=subject_type, subjectId=subject_id
        )
        return Call("GET", "/v1/alerts", _many(UsageAlert, "alerts"), query, idempotent=True)

    @staticmethod
    def acknowledge_alert(alert_id: str) -> Call[UsageAlert]:
        return Call(
            "POST",
            f"/v1/alerts/{_segment(alert_id)}/acknowledge",
            _one(UsageAlert),
            idempotent=True,
        )

    @staticmethod
    def resolve_alert(alert_id: str) -> Call[UsageAlert]:
        return Call(
            "POST", f"/v1/alerts/{_segment(alert_id)}/resolve", _one(UsageAlert), idempotent=True
        )


class RowCounter:
    r"""Counts the records of an export as its text streams by, in constant memory: a line
    of JSON Lines is a record; in CSV a line break inside a quoted cell is not the end of a
    row (a doubled quote toggles the state twice), and the header row is not a record.

    >>> counter = RowCounter("csv")
    >>> for part in ['id,metadata\r\n1,"{""a"":', ' ""x\n', 'y""}"\r\n2,{}\r\n']:
    ...     counter.feed(part)
    >>> counter.count()
    2
    """

    def __init__(self, fmt: str) -> None:
        self._csv = fmt == "csv"
        self._rows = 0
        self._quoted = False
        self._ends_open = False

    def feed(self, text: str) -> None:
        """Take the next piece of the export's text."""
        if not text:
            return
        self._ends_open = not text.endswith("\n")
        if not self._csv:
            self._rows += text.count("\n")
            return
        for part in _QUOTE_OR_NEWLINE.findall(text):
            if part == '"':
                self._quoted = not self._quoted
            elif not self._quoted:
                self._rows += 1

    def count(self) -> int:
        """Records seen so far (a last row without its line break counts)."""
        rows = self._rows + (1 if self._ends_open else 0)
        return max(0, rows - 1) if self._csv else rows


_QUOTE_OR_NEWLINE = re.compile(r'["\n]')
