"""Turning what callers pass to ``record``/``record_batch`` into validated rows, fast.

The rules are those of :class:`~tsmeter.domain.UsageRecord` (the same checker
functions), applied without building a pydantic model per record so that a
batch of 100,000 records validates in well under a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from tsmeter.domain import AggregationType, MetricDefinition, RecordRow, UsageRecord, new_ids
from tsmeter.domain.validation import (
    EPOCH,
    MAX_NAME_LENGTH,
    MAX_QUANTITY,
    check_metadata,
    check_name,
    check_quantity,
    parse_timestamp,
    to_ns,
)
from tsmeter.errors import ValidationError
from tsmeter.speedups import native

# field name in JSON -> attribute name; both spellings are accepted
_FIELDS = {
    "id": "id",
    "metricKey": "metric_key",
    "subjectType": "subject_type",
    "subjectId": "subject_id",
    "quantity": "quantity",
    "timestamp": "timestamp",
    "metadata": "metadata",
    "source": "source",
    "orgId": "org_id",
}
_ALLOWED = frozenset(_FIELDS) | frozenset(_FIELDS.values())

_US = timedelta(microseconds=1)
MetricResolver = Callable[[str, str | None], MetricDefinition]


class Intake:
    """Validates records against the catalog; remembers names already found valid."""

    def __init__(self, resolve_metric: MetricResolver) -> None:
        self._resolve = resolve_metric
        self._valid_names: set[str] = set()

    def _name(self, field: str, value: object) -> str:
        if value in self._valid_names:
            return value
        name = check_name(field, value)
        if len(self._valid_names) > 100_000:
            self._valid_names.clear()
        if type(name) is str:  # only plain strings: comparing them runs no Python code, so
            self._valid_names.add(name)  # the compiled fast path can hold borrowed references
        return name

    def check(
        self, items: Iterable[Mapping[str, Any] | UsageRecord]
    ) -> list[ValidationError | None]:
        """Validate each record on its own: ``None`` for a good one, else its error."""
        errors: list[ValidationError | None] = []
        for item in items:
            try:
                self.rows([item])
                errors.append(None)
            except ValidationError as exc:
                errors.append(exc.unprefixed("records[0]"))
        return errors

    def rows(
        self, items: Iterable[Mapping[str, Any] | UsageRecord], now_ns: int | None = None
    ) -> list[RecordRow]:
        """Validate records given as mappings (camelCase or snake_case keys) or UsageRecords.

        Raises ValidationError naming ``records[i].field`` for the first bad one.
        """
        out: list[RecordRow] = []
        append = out.append
        new_row = partial(tuple.__new__, RecordRow)  # skips NamedTuple's Python-level __new__
        valid = self._valid_names
        metrics: dict[tuple[str, str | None], MetricDefinition] = {}
        # for the compiled fast path: (metric key, org id) -> (scope, default quantity)
        scopes: dict[tuple[str, str | None], tuple[str | None, float | None]] = {}
        ids: list[str] = []
        now = time.time_ns() if now_ns is None else now_ns
        items = items if type(items) is list else list(items)
        fast = native.rows_fast if native is not None else None
        count, index = len(items), 0
        while index < count:
            if fast is not None:  # takes plain records up to the first it cannot decide
                index = fast(items, index, out, valid, scopes, ids, now, UTC, MAX_NAME_LENGTH,
                             RecordRow)  # fmt: skip
                if index == count:
                    break
            item = items[index]
            index += 1
            try:
                if type(item) is not dict:
                    if isinstance(item, UsageRecord):
                        scope = self._resolve(item.metric_key, item.org_id).org_id
                        append(item.to_row()._replace(org_id=scope))
                        continue
                    if not isinstance(item, Mapping):
                        raise ValidationError("", f"must be an object, got {type(item).__name__}")
                    item = dict(item)
                get = item.get
                org_id = get("orgId")
                if org_id is None:
                    org_id = get("org_id")
                if org_id is not None and org_id not in valid:
                    org_id = self._name("orgId", org_id)
                metric_key = get("metricKey")
                if metric_key is None:
                    metric_key = _required(get, "metricKey")
                metric = metrics.get((metric_key, org_id))
                if metric is None:
                    metric = metrics[(metric_key, org_id)] = self._resolve(
                        self._name("metricKey", metric_key), org_id
                    )
                    counted = metric.aggregation_type is AggregationType.COUNT
                    if type(metric_key) is str and type(org_id) in (str, type(None)):
                        scopes[(metric_key, org_id)] = (metric.org_id, 1.0 if counted else None)
                subject_type = get("subjectType")
                if subject_type is None:
                    subject_type = _required(get, "subjectType")
                if subject_type not in valid:
                    subject_type = self._name("subjectType", subject_type)
                subject_id = get("subjectId")
                if subject_id is None:
                    subject_id = _required(get, "subjectId")
                if subject_id not in valid:
                    subject_id = self._name("subjectId", subject_id)
                rid = rid_given = get("id")
                if rid is None:
                    if not ids:
                        ids = new_ids(4096)
                        ids.reverse()
                    rid = ids.pop()
                elif not (type(rid) is str and rid.isascii() and rid.isprintable()
                          and 0 < len(rid) <= MAX_NAME_LENGTH):  # fmt: skip
                    rid = check_name("id", rid)
                quantity = quantity_given = get("quantity")
                if quantity is None:
                    quantity = _default_quantity(metric)
                elif type(quantity) is not float or not -MAX_QUANTITY <= quantity <= MAX_QUANTITY:
                    quantity = check_quantity("quantity", quantity)  # NaN fails the test too
                ts = get("timestamp")
                if ts is None:
                    ns = now
                elif type(ts) is datetime and ts.tzinfo is UTC and 1970 < ts.year < 2261:
                    ns = (ts - EPOCH) // _US * 1000
                else:
                    ns = to_ns(parse_timestamp("timestamp", ts))
                metadata = get("metadata")
                if metadata is not None:
                    metadata = check_metadata("metadata", metadata)
                source = get("source")
                if source is not None and source not in valid:
                    source = self._name("source", source)
                # every key must be one we read: otherwise a typo ("quantiy") would be ignored;
                # a field given in both spellings must say the same in both
                present = 3 + (rid_given is not None) + (quantity_given is not None) + (
                    ts is not None) + (metadata is not None) + (source is not None) + (
                    org_id is not None)  # fmt: skip
                if len(item) > present:
                    _check_keys(item)
                append(new_row((rid, metric_key, subject_type, subject_id, metric.org_id,
                                quantity, ns, metadata, source)))  # fmt: skip
            except ValidationError as exc:
                raise exc.at(f"records[{index - 1}]") from None
            except TypeError:  # a list or dict where a name belongs is not hashable
                error = _not_a_name(item)
                if error is None:
                    raise
                raise error.at(f"records[{index - 1}]") from None
        return out


def _not_a_name(item: object) -> ValidationError | None:
    """The error for the first name field of ``item`` that holds something other than a string."""
    if not isinstance(item, Mapping):
        return None
    for camel in ("orgId", "metricKey", "subjectType", "subjectId", "id", "source"):
        value = item.get(camel)
        if value is None:
            value = item.get(_FIELDS[camel])
        if value is not None and not isinstance(value, str):
            return ValidationError(camel, f"must be a string, got {type(value).__name__}")
    return None


def _check_keys(item: Mapping[Any, Any]) -> None:
    """Refuse keys that are no field, and a field given in both spellings with two values."""
    unknown = sorted((key for key in item if key not in _ALLOWED), key=repr)
    if unknown:
        key = unknown[0]
        name = key if isinstance(key, str) else repr(key)
        raise ValidationError(_shown_key(name), "unknown field")
    for camel, snake in _PAIRS:
        first, second = item.get(camel), item.get(snake)
        if (
            first is not None
            and second is not None
            and (type(first) is not type(second) or first != second)
        ):
            raise ValidationError(
                camel, f"disagrees with {snake} ({_brief(first)} vs {_brief(second)});"
                " give one spelling, or the same value in both"
            )  # fmt: skip


_PAIRS = tuple((camel, snake) for camel, snake in _FIELDS.items() if camel != snake)


def _brief(value: object) -> str:
    """A value for an error message, at most about 40 characters."""
    text = repr(value) if isinstance(value, str) else type(value).__name__
    return text if len(text) <= 40 else f"{text[:37]}..."


def _shown_key(name: str) -> str:
    """An unknown key as the field of an error, shortened."""
    return name if len(name) <= 64 else f"{name[:61]}..."


def _default_quantity(metric: MetricDefinition) -> float:
    if metric.aggregation_type is not AggregationType.COUNT:
        raise ValidationError(
            "quantity",
            f"is required for {metric.aggregation_type.value} metric {metric.key!r}",
        )
    return 1.0


def _required(get: Callable[..., Any], camel: str) -> Any:
    value = get(_FIELDS[camel])
    if value is None:
        raise ValidationError(camel, "is required")
    return value
