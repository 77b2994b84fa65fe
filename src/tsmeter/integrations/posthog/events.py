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
========================================  ==================================================

>>> from tsmeter.domain import RecordRow
>>> from tsmeter.integrations.posthog.settings import PostHogSettings
>>> row = RecordRow("req-1", "api_calls", "org", "acme", None, 1.0,
...                 1_767_225_600_000_000_000, None, "api")
>>> event = record_event(row, PostHogSettings(), unit="calls")
>>> event.name, event.distinct_id, event.timestamp.isoformat(), event.groups
('metering.usage_recorded', 'org:acme', '2026-01-01T00:00:00+00:00', {'company': 'acme'})
>>> event.uuid == record_event(row, PostHogSettings(), unit="calls").uuid
True
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tsmeter.domain import RecordRow, UsageAlert, UsageSummary, UsageThreshold
from tsmeter.domain.validation import from_ns, load_metadata, to_ns
from tsmeter.integrations.posthog.settings import PostHogSettings

__all__ = [
    "NAMESPACE",
    "CaptureEvent",
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


def record_event(row: RecordRow, settings: PostHogSettings, *, unit: str = "") -> CaptureEvent:
    """``{prefix}.usage_recorded`` for one stored record; uuid from the record id."""
    name = settings.event_name("usage_recorded")
    properties = _base(row.subject_type, row.subject_id, row.metric_key, row.org_id, unit)
    properties.update(quantity=row.quantity, recordId=row.id, source=row.source)
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


def summary_event(
    summary: UsageSummary,
    settings: PostHogSettings,
    *,
    unit: str = "",
    computed_at: datetime | None = None,
) -> CaptureEvent:
    """``{prefix}.usage_aggregated`` for one summary, timestamped at the period start.

    The uuid covers the summary's identity and values, so sending the same summary again
    is the same event, and a recomputed summary with other values a new one (take the
    latest ``computedAt`` per ``summaryId``).
    """
    name = settings.event_name("usage_aggregated")
    sid = summary_id(summary)
    values = json.dumps(
        [
            repr(summary.total_quantity),
            summary.record_count,
            repr(summary.sum),
            repr(summary.min),
            repr(summary.max),
            repr(summary.last_value),
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
        totalQuantity=summary.total_quantity,
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
        actualValue=alert.actual_value,
        thresholdValue=alert.threshold_value,
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
