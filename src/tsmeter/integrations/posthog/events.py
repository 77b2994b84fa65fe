"""What tsmeter sends to PostHog: pure functions from records, summaries and threshold events
to PostHog capture events.

Every event has a deterministic ``uuid`` (UUIDv5 in :data:`NAMESPACE`), so a retry, a
restart or a backfill sends the *same* event, an aware UTC ``timestamp``, a deterministic
``distinct_id`` (``{subjectType}:{subjectId}``), ``$process_person_profile: false`` (no
person profiles are created) and, through the group mapping, PostHog groups.

========================================  ==================================================
event                                     uuid derived from
========================================  ==================================================
``{prefix}.usage_recorded``               the record id
``{prefix}.usage_aggregated``             the summary's identity (metric, org, subject,
                                          period type, zone, period start) *and* its values:
                                          a recomputed summary with other values is a new
                                          event; ``summaryId`` (identity only) links them and
                                          ``computedAt`` orders them
``{prefix}.threshold_approaching`` …      the alert id (one alert per threshold, subject,
``_exceeded``, ``_resolved``              window and level)
``{prefix}.usage_corrected``              the correction id (a cancel or an amendment of
                                          one record, timed at the record's timestamp)
========================================  ==================================================

A record of a metric with dimensions carries each dimension's value as property
``dim_<name>`` (the text tsmeter keeps: ``property_value``), null where the record has none.
A correction carries ``recordId``, ``correctionId``, ``kind`` (``CANCEL`` or ``AMEND``) and
``quantityBefore``/``quantityAfter`` as exact decimal strings (a cancel's after is ``0``), so
a reader nets it against the record's event (see
:mod:`~tsmeter.integrations.posthog.reader`).

Quantities: a record's event carries ``units`` (the exact quantity times ``10 **
precision``, an integer), ``precision``, and ``quantity`` as a JSON number for PostHog's own
charts (the nearest float: never read back as the quantity). Summary and threshold events
carry their values as numbers too, with the exact ones beside them (``totalUnits``,
``actualValueExact``). No property is a Decimal: the posthog SDK would turn it into a float,
and the journal's JSON could not hold it.

>>> from tsmeter.domain import RecordRow
>>> from tsmeter.integrations.posthog.settings import PostHogSettings
>>> row = RecordRow("req-1", "api_calls", "org", "acme", None, 1_500_000,
...                 1_767_225_600_000_000_000, None, "api")
>>> event = record_event(row, PostHogSettings(), unit="calls", precision=6)
>>> event.name, event.distinct_id, event.timestamp.isoformat(), event.groups
('metering.usage_recorded', 'org:acme', '2026-01-01T00:00:00+00:00', {'company': 'acme'})
>>> [event.properties[k] for k in ("quantity", "units", "precision")]
[1.5, 1500000, 6]
>>> event.uuid == record_event(row, PostHogSettings(), unit="calls", precision=6).uuid
True
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from tsmeter.domain import (
    AggregationType,
    RecordRow,
    UsageAlert,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.properties import property_value
from tsmeter.domain.quantities import MAX_PRECISION, from_units, to_units
from tsmeter.domain.validation import from_ns, load_metadata, to_ns
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog.settings import PostHogSettings

__all__ = [
    "NAMESPACE",
    "CaptureEvent",
    "chart_number",
    "correction_event",
    "dimension_properties",
    "distinct_id",
    "event_uuid",
    "group_map",
    "record_event",
    "summary_event",
    "summary_id",
    "threshold_event",
]

#: The UUIDv5 namespace of every event uuid tsmeter sends (never change it: uuids would move).
NAMESPACE = uuidlib.UUID("6f2b8d0e-4c1a-5e7f-9a3b-2d4c6e8f0a1b")

_THRESHOLD_KINDS = {
    "threshold.approaching": "threshold_approaching",
    "threshold.exceeded": "threshold_exceeded",
    "threshold.resolved": "threshold_resolved",
}


@dataclass(frozen=True)
class CaptureEvent:
    """One PostHog event as the mirror sends it (the arguments of ``Client.capture``).

    ``kind`` is ``record``, ``summary`` or ``threshold``; for records ``record_ts`` is
    the record's time in ns (used to report ranges that could not be mirrored).
    """

    name: str
    uuid: str
    distinct_id: str
    timestamp: datetime
    properties: Mapping[str, Any]
    groups: Mapping[str, str] = field(default_factory=dict)
    kind: str = "record"
    record_ts: int | None = None

    def capture_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``posthog.Client.capture(name, **kwargs)``."""
        return {
            "distinct_id": self.distinct_id,
            "properties": dict(self.properties),
            "timestamp": self.timestamp,
            "uuid": self.uuid,
            "groups": dict(self.groups) or None,
        }

    def to_json(self) -> str:
        """The event as JSON text (for the mirror's journal)."""
        return json.dumps(
            {
                "name": self.name,
                "uuid": self.uuid,
                "distinctId": self.distinct_id,
                "timestamp": self.timestamp.isoformat(),
                "properties": dict(self.properties),
                "groups": dict(self.groups),
                "kind": self.kind,
                "recordTs": self.record_ts,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> CaptureEvent:
        """Rebuild an event saved with :meth:`to_json`."""
        doc = json.loads(text)
        return cls(
            name=doc["name"],
            uuid=doc["uuid"],
            distinct_id=doc["distinctId"],
            timestamp=datetime.fromisoformat(doc["timestamp"]).astimezone(UTC),
            properties=doc["properties"],
            groups=doc["groups"],
            kind=doc["kind"],
            record_ts=doc["recordTs"],
        )


def event_uuid(name: str, key: str) -> str:
    """The deterministic uuid of the event ``name`` about ``key``.

    >>> event_uuid("metering.usage_recorded", "req-1") == event_uuid(
    ...     "metering.usage_recorded", "req-1")
    True
    """
    return str(uuidlib.uuid5(NAMESPACE, f"{name}:{key}"))


def distinct_id(subject_type: str, subject_id: str) -> str:
    """The PostHog distinct id of a subject: ``org:acme``."""
    return f"{subject_type}:{subject_id}"


def group_map(
    groups: Mapping[str, str], subject_type: str, subject_id: str, org_id: str | None
) -> dict[str, str]:
    """PostHog groups of an event: the org of an org-scoped metric under ``groups["org"]``,
    and the subject under ``groups[subject_type]`` (the subject wins on a clash).

    >>> group_map({"org": "company", "team": "team"}, "team", "t1", "acme")
    {'company': 'acme', 'team': 't1'}
    >>> group_map({"org": "company"}, "user", "u1", None)
    {}
    """
    result: dict[str, str] = {}
    if org_id is not None and "org" in groups:
        result[groups["org"]] = org_id
    if subject_type in groups:
        result[groups[subject_type]] = subject_id
    return result


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat()


def _base(
    subject_type: str, subject_id: str, metric_key: str, org_id: str | None, unit: str
) -> dict[str, Any]:
    return {
        "metricKey": metric_key,
        "subjectType": subject_type,
        "subjectId": subject_id,
        "orgId": org_id,
        "unit": unit,
        "$process_person_profile": False,
    }


def _precision(precision: object) -> int:
    if isinstance(precision, bool) or not isinstance(precision, int):
        raise TypeError(f"precision must be an int, got {precision!r}")
    if not 0 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be from 0 to {MAX_PRECISION}, got {precision}")
    return precision


def chart_number(value: Decimal) -> int | float:
    """A quantity as the JSON number PostHog charts: an int when it is whole and a float holds
    it exactly, else the nearest float (whose shortest repr is the decimal itself for up to 15
    significant digits).

    >>> chart_number(Decimal("500.100000")), chart_number(Decimal("3.000"))
    (500.1, 3)
    >>> chart_number(Decimal(2**60))
    1.152921504606847e+18
    """
    if value == value.to_integral_value() and abs(value) <= 2**53:
        return int(value)
    return float(value)


def dimension_properties(names: Sequence[str], metadata: str | None) -> dict[str, str | None]:
    """The ``dim_<name>`` properties of a record whose metric declares dimensions ``names``:
    each value as tsmeter keeps it (text; integers in decimal; ``true``/``false``), None
    where the record has none (or one recording would have refused).

    >>> dimension_properties(("model", "seats", "region"), '{"model": "gpt-4o", "seats": 3}')
    {'dim_model': 'gpt-4o', 'dim_seats': '3', 'dim_region': None}
    """
    try:
        found = load_metadata(metadata)
    except ValueError:  # not JSON: stores keep valid JSON text only
        found = {}
    out: dict[str, str | None] = {}
    for name in names:
        value = found.get(name) if isinstance(found, dict) else None
        try:
            out[f"dim_{name}"] = None if value is None else property_value(name, value)
        except ValidationError:
            out[f"dim_{name}"] = None
    return out


def record_event(
    row: RecordRow,
    settings: PostHogSettings,
    *,
    unit: str = "",
    precision: int,
    dimensions: Sequence[str] = (),
) -> CaptureEvent:
    """``{prefix}.usage_recorded`` for one stored record (``row.quantity`` in units of a metric
    of ``precision``, declaring ``dimensions``: properties ``dim_<name>``); uuid from the
    record id."""
    units = row.quantity
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError(f"RecordRow.quantity must be int units, got {units!r}")
    places = _precision(precision)
    name = settings.event_name("usage_recorded")
    properties = _base(row.subject_type, row.subject_id, row.metric_key, row.org_id, unit)
    properties.update(
        quantity=chart_number(from_units(units, places)),
        units=units,
        precision=places,
        recordId=row.id,
        source=row.source,
    )
    if dimensions:
        properties.update(dimension_properties(dimensions, row.metadata))
    if settings.include_metadata and row.metadata:
        properties["metadata"] = load_metadata(row.metadata)
    return CaptureEvent(
        name=name,
        uuid=event_uuid(name, row.id),
        distinct_id=distinct_id(row.subject_type, row.subject_id),
        timestamp=from_ns(row.ts),
        properties=properties,
        groups=group_map(settings.groups, row.subject_type, row.subject_id, row.org_id),
        kind="record",
        record_ts=row.ts,
    )


def summary_id(summary: UsageSummary) -> str:
    """The identity of a summary (same metric, org, subject, period type, zone and start):
    the ``summaryId`` property, equal for every recomputation of one period."""
    key = json.dumps(
        [
            summary.metric_key,
            summary.org_id,
            summary.subject_type,
            summary.subject_id,
            summary.period_type.value,
            summary.timezone,
            to_ns(_utc(summary.period_start)),
        ]
    )
    return str(uuidlib.uuid5(NAMESPACE, f"summary:{key}"))


def _value_key(value: Decimal | float | None) -> str:
    """A summary value in the key of its event uuid: the repr of the float that versions
    before exact decimals sent, when that float is the value exactly (so an unchanged summary
    keeps its uuid), else the decimal's digits.

    >>> _value_key(Decimal("2.500000")), _value_key(Decimal("0.1")), _value_key(None)
    ('2.5', '0.1', 'None')
    >>> _value_key(Decimal("0.10000000000000000001"))
    '0.10000000000000000001'
    """
    if value is None or isinstance(value, float):
        return repr(value)
    number = float(value)
    text = repr(number)
    return text if Decimal(text) == value else str(value.normalize())


def summary_event(
    summary: UsageSummary,
    settings: PostHogSettings,
    *,
    unit: str = "",
    precision: int | None = None,
    computed_at: datetime | None = None,
) -> CaptureEvent:
    """``{prefix}.usage_aggregated`` for one summary, timestamped at the period start.

    The uuid covers the summary's identity and values, so sending the same summary again
    is the same event, and a recomputed summary with other values a new one (take the
    latest ``computedAt`` per ``summaryId``). ``totalQuantity`` is a number for charts;
    ``totalUnits`` is it exactly, times ``10 ** precision`` (``precision``: the metric's;
    None: the places of the summary's ``sum``).
    """
    name = settings.event_name("usage_aggregated")
    sid = summary_id(summary)
    total = Decimal(summary.total_quantity)
    if precision is None:
        exponent = Decimal(summary.sum).as_tuple().exponent
        precision = min(max(-exponent, 0), MAX_PRECISION) if isinstance(exponent, int) else 0
    places = _precision(precision)
    if summary.aggregation_type is AggregationType.COUNT:
        total_units = summary.record_count * 10**places
    else:
        total_units = to_units("totalQuantity", total, places, None)
    values = json.dumps(
        [
            _value_key(summary.total_quantity),
            summary.record_count,
            _value_key(summary.sum),
            _value_key(summary.min),
            _value_key(summary.max),
            _value_key(summary.last_value),
            _iso(summary.last_timestamp),
        ]
    )
    properties = _base(
        summary.subject_type, summary.subject_id, summary.metric_key, summary.org_id, unit
    )
    properties.update(
        summaryId=sid,
        periodType=summary.period_type.value,
        periodStart=_iso(summary.period_start),
        periodEnd=_iso(summary.period_end),
        timezone=summary.timezone,
        aggregationType=summary.aggregation_type.value,
        totalQuantity=chart_number(total),
        totalUnits=total_units,
        precision=places,
        recordCount=summary.record_count,
        computedAt=_iso(computed_at or datetime.now(UTC)),
    )
    return CaptureEvent(
        name=name,
        uuid=event_uuid(name, f"{sid}:{values}"),
        distinct_id=distinct_id(summary.subject_type, summary.subject_id),
        timestamp=_utc(summary.period_start),
        properties=properties,
        groups=group_map(settings.groups, summary.subject_type, summary.subject_id, summary.org_id),
        kind="summary",
    )


def _exact(value: Decimal | float) -> str:
    """A value as exact decimal text (a float by its shortest repr)."""
    return str(Decimal(repr(value)) if isinstance(value, float) else value)


def threshold_event(
    event_name: str,
    alert: UsageAlert,
    threshold: UsageThreshold,
    settings: PostHogSettings,
    *,
    unit: str = "",
    occurred_at: datetime | None = None,
) -> CaptureEvent:
    """``{prefix}.threshold_approaching`` / ``_exceeded`` / ``_resolved`` for a threshold event
    (``event_name`` is tsmeter's, e.g. ``threshold.exceeded``); uuid from the alert id.

    The timestamp is when the alert opened (or was resolved), so a repeat is identical.
    """
    kind = _THRESHOLD_KINDS.get(event_name)
    if kind is None:
        raise ValueError(f"not a threshold event: {event_name!r}")
    name = settings.event_name(kind)
    at = alert.resolved_at if kind == "threshold_resolved" else alert.created_at
    when = _utc(at or occurred_at or datetime.now(UTC))
    properties = _base(
        alert.subject_type, alert.subject_id, alert.metric_key, threshold.org_id, unit
    )
    properties.update(
        alertId=alert.id,
        thresholdId=alert.threshold_id,
        level=alert.level,
        status=alert.status.value,
        actualValue=chart_number(Decimal(alert.actual_value)),
        actualValueExact=_exact(alert.actual_value),
        thresholdValue=chart_number(Decimal(alert.threshold_value)),
        thresholdValueExact=_exact(alert.threshold_value),
        percentage=alert.percentage,
        periodStart=_iso(alert.period_start),
        periodEnd=_iso(alert.period_end),
        action=threshold.action.value,
    )
    return CaptureEvent(
        name=name,
        uuid=event_uuid(name, alert.id),
        distinct_id=distinct_id(alert.subject_type, alert.subject_id),
        timestamp=when,
        properties=properties,
        groups=group_map(settings.groups, alert.subject_type, alert.subject_id, threshold.org_id),
        kind="threshold",
    )


class _MetricLike(Protocol):
    """What a correction's event needs of its metric (a MetricDefinition, or the mirror's
    MetricInfo)."""

    @property
    def unit(self) -> str: ...

    @property
    def precision(self) -> int: ...


def _decimal_text(field_name: str, value: object, places: int) -> str:
    """A quantity as exact decimal text at ``places`` (no exponent): ``"2.500000"``."""
    if value is None:
        value = 0
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    return format(from_units(to_units(field_name, exact, places, None), places), "f")


def _when_ns(value: object) -> datetime:
    """A time given as ns since the epoch or as a datetime, as aware UTC."""
    if isinstance(value, int) and not isinstance(value, bool):
        return from_ns(value)
    if isinstance(value, datetime):
        return _utc(value)
    raise TypeError(f"a correction's time must be a datetime or ns, got {value!r}")


def correction_event(
    correction: Any, metric: _MetricLike, settings: PostHogSettings | None = None
) -> CaptureEvent:
    """``{prefix}.usage_corrected`` for one correction of a record of ``metric``.

    ``correction`` is a ``Correction`` (id, record_id, kind CANCEL/AMEND, quantity_before,
    quantity_after, reason, corrected_at, metric_key, subject_type, subject_id, org_id,
    record_timestamp). The uuid comes from the correction id, so sending it again is the
    same event; the timestamp is the *record's*, so a read over a time range finds the
    corrections of the records it finds. ``quantityBefore``/``quantityAfter`` are exact
    decimal strings at the metric's precision (a cancel's after: ``0``); ``correctedAt``
    orders the corrections of one record. The actor is not sent (it names a person).

    >>> from types import SimpleNamespace as NS
    >>> c = NS(id="c1", record_id="req-1", kind="AMEND", quantity_before=Decimal("5"),
    ...        quantity_after=Decimal("2.5"), reason="dup", metric_key="api_calls",
    ...        subject_type="org", subject_id="acme", org_id=None,
    ...        corrected_at=datetime(2026, 1, 2, tzinfo=UTC),
    ...        record_timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    >>> e = correction_event(c, NS(unit="calls", precision=2))
    >>> e.name, e.timestamp.isoformat(), e.uuid == event_uuid(e.name, "c1")
    ('metering.usage_corrected', '2026-01-01T00:00:00+00:00', True)
    >>> [e.properties[k] for k in ("kind", "quantityBefore", "quantityAfter", "recordId")]
    ['AMEND', '5.00', '2.50', 'req-1']
    """
    settings = settings or PostHogSettings()
    places = _precision(metric.precision)
    kind = str(getattr(correction.kind, "value", correction.kind)).upper()
    if kind not in ("CANCEL", "AMEND"):
        raise ValueError(f"a correction's kind must be CANCEL or AMEND, got {kind!r}")
    name = settings.event_name("usage_corrected")
    org_id = correction.org_id
    properties = _base(correction.subject_type, correction.subject_id, correction.metric_key,
                       org_id, metric.unit)  # fmt: skip
    after = 0 if kind == "CANCEL" else correction.quantity_after
    properties.update(
        recordId=correction.record_id,
        correctionId=correction.id,
        kind=kind,
        quantityBefore=_decimal_text("quantityBefore", correction.quantity_before, places),
        quantityAfter=_decimal_text("quantityAfter", after, places),
        precision=places,
        correctedAt=_iso(_when_ns(correction.corrected_at)),
        reason=getattr(correction, "reason", None) or "",
    )
    return CaptureEvent(
        name=name,
        uuid=event_uuid(name, correction.id),
        distinct_id=distinct_id(correction.subject_type, correction.subject_id),
        timestamp=_when_ns(correction.record_timestamp),
        properties=properties,
        groups=group_map(settings.groups, correction.subject_type, correction.subject_id, org_id),
        kind="correction",
    )
