"""The HogQL the PostHog reader sends: every query, built here and nowhere else.

Rules every builder keeps:

* every value that came from a caller (event name, metric key, subjects, org, times,
  paging cursors) is a ``{placeholder}`` bound through the request's ``values``, which
  PostHog's parser turns into literals; the query text depends only on *which* filters
  are set, never on their values;
* the event prefix is checked against :data:`~tsmeter.integrations.posthog.settings.PREFIX_PATTERN`
  before an event name is built from it;
* properties are read with ``JSONExtractString``/``JSONExtractInt``/``JSONExtractFloat``, which
  unescape JSON exactly (PostHog's ``properties.x`` shorthand returns quotes and backslashes
  escaped);
* quantities are summed as integers: the ``units`` property (Int64) of each event, never the
  float ``quantity``; ``sum`` of Int64 wraps around on overflow in ClickHouse, so every
  aggregate also returns what the reader needs to rule that out (the count, ``min`` and
  ``max`` of the units, and the float sum of ``quantity`` as a check); events without
  ``units`` (written by earlier versions) are counted (``legacy``) so the reader can read
  them one by one;
* every query has an explicit ``LIMIT`` (at most :data:`MAX_ROWS`, PostHog's ceiling) and a
  total order, so pages are exact; paging is by key (``timestamp, uuid`` for records,
  ``subject, period`` for summaries), never by ``OFFSET``;
* periods are UTC (the request sets ``convertToProjectTimezone: false`` and times are
  converted with ``toTimeZone(…, 'UTC')`` as well);
* events are de-duplicated by ``uuid`` inside the query (``LIMIT 1 BY uuid`` for records,
  ``GROUP BY uuid`` before aggregating) — the reader de-duplicates again in Python.

>>> f = EventFilter(event="metering.usage_recorded", metric_key="api_calls",
...                 start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 2, 1, tzinfo=UTC))
>>> q = records_query(f, after_time=f.start, after_uuid="", limit=10)
>>> sorted(q.values)
['after_time', 'after_uuid', 'end', 'event', 'metric_key', 'org_id', 'start']
>>> q.values["start"]
'2026-01-01T00:00:00.000000Z'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tsmeter.domain import PeriodType
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog.settings import PREFIX_PATTERN

__all__ = [
    "BUCKETS",
    "CORRECTION_COLUMNS",
    "MAX_ROWS",
    "RECORD_COLUMNS",
    "SUMMARY_COLUMNS",
    "TREND_COLUMNS",
    "EventFilter",
    "HogQLQuery",
    "QueryValue",
    "check_prefix",
    "corrections_query",
    "event_name",
    "records_query",
    "summaries_query",
    "trend_query",
    "utc_text",
]

#: PostHog's ceiling on the rows one query returns (with an explicit LIMIT).
MAX_ROWS = 50_000

QueryValue = str | int | float | bool | None

#: The UTC period start of the deduplicated event time ``ts``, per period type (hours and
#: days are DateTime, weeks (ISO, Monday), months and years are Date).
BUCKETS: Mapping[PeriodType, str] = {
    PeriodType.HOURLY: "toStartOfHour(ts)",
    PeriodType.DAILY: "toStartOfDay(ts)",
    PeriodType.WEEKLY: "toMonday(ts)",
    PeriodType.MONTHLY: "toStartOfMonth(ts)",
    PeriodType.YEARLY: "toStartOfYear(ts)",
}

_PROP = "JSONExtractString(properties, '{}')"
_UNITS = "JSONExtractInt(properties, 'units')"
_HAS_UNITS = "JSONHas(properties, 'units')"
_PRECISION = "JSONExtractInt(properties, 'precision')"
_QUANTITY = "JSONExtractFloat(properties, 'quantity')"
_SUBJECT_TYPE = _PROP.format("subjectType")
_SUBJECT_ID = _PROP.format("subjectId")


@dataclass(frozen=True)
class HogQLQuery:
    """A HogQL query and the values bound to its ``{placeholders}``.

    Example: ``reader.run(records_query(...))``; :meth:`request` is the JSON body.
    """

    text: str
    values: Mapping[str, QueryValue] = field(default_factory=dict)

    def request(self, *, refresh: str = "force_blocking") -> dict[str, Any]:
        """The body of ``POST /api/projects/{id}/query/`` for this query.

        >>> HogQLQuery("SELECT 1 LIMIT 1").request()["query"]["modifiers"]
        {'convertToProjectTimezone': False}
        """
        return {
            "query": {
                "kind": "HogQLQuery",
                "query": self.text,
                "values": dict(self.values),
                "modifiers": {"convertToProjectTimezone": False},
            },
            "refresh": refresh,
        }


def check_prefix(prefix: object) -> str:
    """``prefix`` if it matches the strict event-prefix pattern; ValidationError otherwise.

    >>> check_prefix("metering")
    'metering'
    >>> check_prefix("x' OR 1=1")
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: eventPrefix: must match ^[a-z][a-z0-9_]{0,31}$, got "x' OR 1=1"
    """
    if not isinstance(prefix, str) or not PREFIX_PATTERN.match(prefix):
        raise ValidationError("eventPrefix", f"must match {PREFIX_PATTERN.pattern}, got {prefix!r}")
    return prefix


def event_name(prefix: str, kind: str = "usage_recorded") -> str:
    """The event name ``{prefix}.{kind}`` after checking the prefix.

    >>> event_name("metering")
    'metering.usage_recorded'
    """
    return f"{check_prefix(prefix)}.{kind}"


def utc_text(value: datetime) -> str:
    """An aware time as the UTC text placed in ``values`` (microseconds, ``Z``), which
    ``toDateTime`` parses exactly whatever the project's time zone.

    >>> from datetime import timedelta, timezone
    >>> utc_text(datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))))
    '2026-01-01T00:00:00.000000Z'
    """
    if value.tzinfo is None:
        raise ValidationError("time", f"must be timezone-aware, got {value.isoformat()}")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class EventFilter:
    """Which ``usage_recorded`` events to read: one event name, one metric (in one org scope:
    ``org_id`` None is the global metric), ``[start, end)``, optionally one subject."""

    event: str
    metric_key: str
    start: datetime
    end: datetime
    org_id: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None

    def where(self) -> tuple[list[str], dict[str, QueryValue]]:
        """The WHERE conditions (text) and their values."""
        conditions = [
            "event = {event}",
            "timestamp >= toDateTime({start})",
            "timestamp < toDateTime({end})",
            f"{_PROP.format('metricKey')} = {{metric_key}}",
            f"{_PROP.format('orgId')} = {{org_id}}",
        ]
        values: dict[str, QueryValue] = {
            "event": self.event,
            "start": utc_text(self.start),
            "end": utc_text(self.end),
            "metric_key": self.metric_key,
            # a global metric's events carry orgId null (or none): JSONExtractString gives ''
            "org_id": self.org_id or "",
        }
        if self.subject_type is not None:
            conditions.append(f"{_SUBJECT_TYPE} = {{subject_type}}")
            values["subject_type"] = self.subject_type
        if self.subject_id is not None:
            conditions.append(f"{_SUBJECT_ID} = {{subject_id}}")
            values["subject_id"] = self.subject_id
        return conditions, values


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_ROWS:
        raise ValidationError("limit", f"must be an integer from 1 to {MAX_ROWS}, got {limit!r}")
    return limit


def _and(conditions: list[str], indent: str) -> str:
    return f"\n{indent}AND ".join(conditions)


#: The columns of :func:`records_query`, in order.
RECORD_COLUMNS = (
    "event_uuid", "event_time", "record_id", "subject_type", "subject_id", "quantity", "units",
    "has_units", "precision", "source", "org_id",
)  # fmt: skip


def _page_after(
    filt: EventFilter, after_time: datetime, after_uuid: str
) -> tuple[list[str], dict[str, QueryValue]]:
    """The filter's conditions and values, and the keyset condition of a page: events after
    (``after_time``, ``after_uuid``), the last row of the previous page."""
    conditions, values = filt.where()
    conditions.append(
        "(timestamp > toDateTime({after_time})"
        " OR (timestamp = toDateTime({after_time}) AND toString(uuid) > {after_uuid}))"
    )
    values["after_time"] = utc_text(after_time)
    values["after_uuid"] = after_uuid
    return conditions, values


def records_query(
    filt: EventFilter, *, after_time: datetime, after_uuid: str, limit: int
) -> HogQLQuery:
    """One page of raw events, oldest first, ordered by ``(timestamp, uuid)``: the events
    after the key ``(after_time, after_uuid)`` (first page: ``(start, "")``).

    ``after_time`` must be the exact timestamp of the last row of the previous page.
    ``units`` and ``precision`` are the exact quantity (0 where ``has_units`` is 0: an event
    of an earlier version, whose only quantity is the float ``quantity``).
    """
    conditions, values = _page_after(filt, after_time, after_uuid)
    text = f"""SELECT
    toString(uuid) AS event_uuid,
    toTimeZone(timestamp, 'UTC') AS event_time,
    {_PROP.format("recordId")} AS record_id,
    {_SUBJECT_TYPE} AS subject_type,
    {_SUBJECT_ID} AS subject_id,
    {_QUANTITY} AS quantity,
    {_UNITS} AS units,
    {_HAS_UNITS} AS has_units,
    {_PRECISION} AS precision,
    {_PROP.format("source")} AS source,
    {_PROP.format("orgId")} AS org_id
FROM events
WHERE {_and(conditions, "    ")}
ORDER BY event_time ASC, event_uuid ASC
LIMIT 1 BY event_uuid
LIMIT {_limit(limit)}"""
    return HogQLQuery(text, values)


#: The columns of :func:`corrections_query`, in order.
CORRECTION_COLUMNS = (
    "event_uuid", "event_time", "record_id", "correction_id", "kind", "quantity_before",
    "quantity_after", "corrected_at",
)  # fmt: skip


def corrections_query(
    filt: EventFilter, *, after_time: datetime, after_uuid: str, limit: int
) -> HogQLQuery:
    """One page of ``usage_corrected`` events (``filt.event`` names them), paged like
    :func:`records_query`. A correction is timed at its record's timestamp and carries its
    subject, metric and org, so ``filt`` finds the corrections of the records it finds.
    ``quantity_before``/``quantity_after`` are the exact decimal strings sent.

    >>> jan, feb = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    >>> f = EventFilter(event="metering.usage_corrected", metric_key="api_calls", start=jan,
    ...                 end=feb)
    >>> "'quantityAfter'" in corrections_query(f, after_time=f.start, after_uuid="", limit=5).text
    True
    """
    conditions, values = _page_after(filt, after_time, after_uuid)
    text = f"""SELECT
    toString(uuid) AS event_uuid,
    toTimeZone(timestamp, 'UTC') AS event_time,
    {_PROP.format("recordId")} AS record_id,
    {_PROP.format("correctionId")} AS correction_id,
    {_PROP.format("kind")} AS kind,
    {_PROP.format("quantityBefore")} AS quantity_before,
    {_PROP.format("quantityAfter")} AS quantity_after,
    {_PROP.format("correctedAt")} AS corrected_at
FROM events
WHERE {_and(conditions, "    ")}
ORDER BY event_time ASC, event_uuid ASC
LIMIT 1 BY event_uuid
LIMIT {_limit(limit)}"""
    return HogQLQuery(text, values)


def _deduplicated(conditions: list[str]) -> str:
    """One row per event uuid (its UTC time, record id, subject, units, whether it has them,
    precision, and the float quantity)."""
    return f"""SELECT
        uuid,
        any(toTimeZone(timestamp, 'UTC')) AS ts,
        any({_PROP.format("recordId")}) AS record_id,
        any({_SUBJECT_TYPE}) AS subject_type,
        any({_SUBJECT_ID}) AS subject_id,
        any({_UNITS}) AS units,
        any({_HAS_UNITS}) AS has_units,
        any({_PRECISION}) AS precision,
        any({_QUANTITY}) AS quantity
    FROM events
    WHERE {_and(conditions, "        ")}
    GROUP BY uuid"""


#: The columns of :func:`summaries_query`, in order.
SUMMARY_COLUMNS = (
    "subject_type", "subject_id", "period_start", "records", "legacy", "precision_low",
    "precision_high", "total", "float_total", "lowest", "highest", "last_value", "last_time",
)  # fmt: skip

#: The aggregates every component query returns: the count, the events without ``units``,
#: the lowest and highest precision, the integer sum of the units (Int64: it wraps around on
#: overflow, see the module's docs), the float sum of ``quantity`` (only a check), and the
#: lowest and highest units.
_COMPONENTS = """count() AS records,
    countIf(has_units = 0) AS legacy,
    min(precision) AS precision_low,
    max(precision) AS precision_high,
    sum(units) AS total,
    sum(quantity) AS float_total,
    min(units) AS lowest,
    max(units) AS highest"""


def summaries_query(
    filt: EventFilter,
    period: PeriodType,
    *,
    after_subject: tuple[str, str] = ("", ""),
    after_time: datetime | None = None,
    limit: int = MAX_ROWS,
) -> HogQLQuery:
    """One page of per-subject, per-UTC-period components (count, sum, min, max, last, in
    units), ordered by ``(subject_type, subject_id, period_start)``.

    The page starts after the key: subjects greater than ``after_subject``, or that subject
    from ``after_time`` on (the start of the period after the last one received). The
    first page uses the default key (no subject is empty).
    """
    conditions, values = filt.where()
    conditions.append(
        f"(({_SUBJECT_TYPE}, {_SUBJECT_ID}) > ({{after_subject_type}}, {{after_subject_id}})"
        f" OR ({_SUBJECT_TYPE} = {{after_subject_type}} AND {_SUBJECT_ID} = {{after_subject_id}}"
        " AND timestamp >= toDateTime({after_time})))"
    )
    values["after_subject_type"], values["after_subject_id"] = after_subject
    values["after_time"] = utc_text(after_time or filt.start)
    text = f"""SELECT
    subject_type,
    subject_id,
    {BUCKETS[period]} AS period_start,
    {_COMPONENTS},
    argMax(units, (ts, record_id)) AS last_value,
    max(ts) AS last_time
FROM (
    {_deduplicated(conditions)}
)
GROUP BY subject_type, subject_id, period_start
ORDER BY subject_type ASC, subject_id ASC, period_start ASC
LIMIT {_limit(limit)}"""
    return HogQLQuery(text, values)


#: The columns of :func:`trend_query`, in order.
TREND_COLUMNS = (
    "period_start", "records", "legacy", "precision_low", "precision_high", "total",
    "float_total", "lowest", "highest",
)  # fmt: skip


def trend_query(filt: EventFilter, period: PeriodType, *, limit: int = MAX_ROWS) -> HogQLQuery:
    """One page of per-UTC-period components over all matching subjects, oldest first
    (the next page: the same query with ``start`` moved to the period after the last)."""
    conditions, values = filt.where()
    text = f"""SELECT
    {BUCKETS[period]} AS period_start,
    {_COMPONENTS}
FROM (
    {_deduplicated(conditions)}
)
GROUP BY period_start
ORDER BY period_start ASC
LIMIT {_limit(limit)}"""
    return HogQLQuery(text, values)
