"""What a report shows, gathered through the Meter's public API: exact Decimal values only.

For each metric over ``[start, end)`` in the Meter's time zone:

- usage over time: one value per period (hour, day, week, month or year), the metric's
  aggregation over every record of the period (a COUNT counts them, a MAX is the largest
  record, an AVG the mean of all records rounded half to even to the metric's precision);
- top subjects: the same aggregation over each subject's records of the range;
- usage against each threshold: every subject's usage in each of the threshold's windows
  that overlap the range, as the monitor compares it with the limit;
- the alerts of the metric opened or resolved in the range, or about a window overlapping it.

Values come from stored summaries combined by their components (count, sum, min, max, last),
as roll-ups combine them, so a day's value is the same whether read from hourly or daily
summaries. Summaries are read at the coarsest period type whose boundaries the range falls
on; a range that is not on whole hours is widened to them (:attr:`Report.widened`).

A UNIQUE_COUNT or TIME_WEIGHTED_SUM metric has no such components: its values are measured
from the records of each bucket, of each subject over the whole range and of each threshold
window (:mod:`tsmeter.metering.measures`). A bucket's or the range's UNIQUE_COUNT is the sum of
each subject's distinct values (each subject is billed for its own); a TIME_WEIGHTED_SUM adds
the integrals of every series, with readings held until the report's time at the latest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import Protocol

from tsmeter.domain import (
    AggregationType,
    MetricDefinition,
    PeriodType,
    UsageAlert,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.periods import Calendar
from tsmeter.domain.properties import NS_PER
from tsmeter.domain.quantities import aggregate_units, time_weighted_units
from tsmeter.domain.validation import EPOCH, from_ns, to_ns
from tsmeter.errors import ValidationError
from tsmeter.limits.windows import LIFETIME_END, threshold_period
from tsmeter.metering.measures import Measure, measure
from tsmeter.metering.meter import Meter

__all__ = [
    "Bucket",
    "MetricReport",
    "Report",
    "SubjectUsage",
    "ThresholdReport",
    "WindowUsage",
    "auto_period",
    "gather",
]

_HOUR_NS = 3_600_000_000_000
_DAY_NS = 24 * _HOUR_NS
# periods whose boundaries fall on those of the period type a bucket has (weeks do not nest
# in months or years), finest last: the source of a bucket's values
_NESTED = {
    PeriodType.HOURLY: (PeriodType.HOURLY,),
    PeriodType.DAILY: (PeriodType.DAILY, PeriodType.HOURLY),
    PeriodType.WEEKLY: (PeriodType.WEEKLY, PeriodType.DAILY, PeriodType.HOURLY),
    PeriodType.MONTHLY: (PeriodType.MONTHLY, PeriodType.DAILY, PeriodType.HOURLY),
    PeriodType.YEARLY: (PeriodType.YEARLY, PeriodType.MONTHLY, PeriodType.DAILY,
                        PeriodType.HOURLY),
}  # fmt: skip


_ZERO_WHEN_EMPTY = ("COUNT", "SUM")


@dataclass(frozen=True)
class Bucket:
    """One period of the usage-over-time chart (clipped to the report's range): its value
    under the metric's aggregation (None without records, unless a COUNT or SUM: 0)."""

    start: datetime
    end: datetime
    value: Decimal | None
    records: int


@dataclass(frozen=True)
class SubjectUsage:
    """One subject's usage over the report's range."""

    subject_type: str
    subject_id: str
    value: Decimal
    records: int


@dataclass(frozen=True)
class WindowUsage:
    """One subject's usage in one window of a threshold (``start``/``end`` None: lifetime)."""

    start: datetime | None
    end: datetime | None
    subject_type: str
    subject_id: str
    value: Decimal


@dataclass(frozen=True)
class ThresholdReport:
    """A threshold and the usage it is compared with: every subject it covers, in each of
    its windows that overlap the range (a lifetime window: all usage ever recorded)."""

    threshold: UsageThreshold
    window: PeriodType | None
    usage: list[WindowUsage]

    @property
    def warn(self) -> Decimal:
        """The usage at which the threshold warns (its limit when no warn level is set)."""
        return self.threshold.warn_threshold or self.threshold.threshold

    @property
    def exceeded(self) -> list[WindowUsage]:
        """The windows and subjects at or over the limit."""
        return [u for u in self.usage if u.value >= self.threshold.threshold]

    @property
    def approaching(self) -> list[WindowUsage]:
        """The windows and subjects at or over the warn level, under the limit."""
        return [u for u in self.usage if self.warn <= u.value < self.threshold.threshold]


@dataclass(frozen=True)
class MetricReport:
    """Everything the report shows about one metric."""

    metric: MetricDefinition
    period: PeriodType
    buckets: list[Bucket]
    total: Decimal | None
    records: int
    subjects: list[SubjectUsage]
    subject_count: int
    thresholds: list[ThresholdReport]
    alerts: list[UsageAlert]


@dataclass(frozen=True)
class Report:
    """A report over ``[start, end)`` in ``timezone``; ``widened`` when the asked range was
    not on whole hours and was widened to them."""

    start: datetime
    end: datetime
    timezone: str
    generated_at: datetime
    top: int
    metrics: list[MetricReport] = field(default_factory=list)
    widened: bool = False


@dataclass
class _Components:
    """Roll-up components in a metric's units (integers: exact whatever their number)."""

    record_count: int = 0
    sum: int = 0
    min: int = 0
    max: int = 0
    last_value: int = 0
    last_ts: datetime | None = None

    def merge(self, row: UsageSummary, metric: MetricDefinition) -> None:
        """Add one summary's components (as the roll-ups combine them)."""
        if not row.record_count:
            return
        low = metric.units("min", row.min if row.min is not None else 0)
        high = metric.units("max", row.max if row.max is not None else 0)
        first = self.record_count == 0
        self.min = low if first else min(self.min, low)
        self.max = high if first else max(self.max, high)
        self.record_count += row.record_count
        self.sum += metric.units("sum", row.sum)
        if row.last_timestamp is not None and (
            self.last_ts is None or row.last_timestamp >= self.last_ts
        ):
            self.last_ts = row.last_timestamp
            self.last_value = metric.units("lastValue", row.last_value or 0)

    def value(self, metric: MetricDefinition) -> Decimal | None:
        """The value under the metric's aggregation; without records 0 for a COUNT or a
        SUM, else None (no mean, peak or latest value)."""
        if not self.record_count and metric.aggregation_type.value not in _ZERO_WHEN_EMPTY:
            return None
        return metric.usage(aggregate_units(metric.aggregation_type.value, self))


@dataclass
class _Measured:
    """Record-level usage added up over subjects (or periods): distinct values counted per
    subject, held integrals (units × ns) summed before rounding once."""

    record_count: int = 0
    distinct: int = 0
    held: int = 0
    seen: bool = False

    def add(self, m: Measure) -> None:
        self.record_count += m.record_count
        self.distinct += len(m.distinct)
        self.held += m.held
        self.seen = True

    def value(self, metric: MetricDefinition) -> Decimal:
        if metric.aggregation_type is AggregationType.UNIQUE_COUNT:
            return Decimal(self.distinct)
        return metric.decimal(time_weighted_units(self.held, NS_PER[metric.time_unit]))


def auto_period(start: datetime, end: datetime) -> PeriodType:
    """The period type of the usage-over-time chart for a range: hours up to three days,
    days up to about three months, months up to three years, then years.

    >>> from datetime import UTC
    >>> auto_period(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    <PeriodType.DAILY: 'DAILY'>
    """
    span = to_ns(end) - to_ns(start)
    if span <= 3 * _DAY_NS:
        return PeriodType.HOURLY
    if span <= 93 * _DAY_NS:
        return PeriodType.DAILY
    if span <= 3 * 366 * _DAY_NS:
        return PeriodType.MONTHLY
    return PeriodType.YEARLY


def _on_hours(calendar: Calendar, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` widened to whole hours of the calendar's zone."""
    first = calendar.start_of(PeriodType.HOURLY, start)
    last = calendar.start_of(PeriodType.HOURLY, end - 1)
    return first, calendar.next_start(PeriodType.HOURLY, last)


def _source(calendar: Calendar, period: PeriodType, start: int, end: int) -> PeriodType:
    """The coarsest period type nested in ``period`` whose boundaries ``start`` and ``end``
    fall on (hours at worst: the range is on whole hours)."""
    for candidate in _NESTED[period]:
        if calendar.start_of(candidate, start) == start and (
            calendar.start_of(candidate, end) == end
        ):
            return candidate
    return PeriodType.HOURLY


def gather(
    meter: Meter,
    start: datetime,
    end: datetime,
    *,
    metrics: Sequence[str] = (),
    period: PeriodType | None = None,
    top: int = 10,
    now: datetime | None = None,
) -> Report:
    """The report's data for ``[start, end)``: every metric (of every org scope), or those
    keyed ``metrics`` (NotFoundError for an unknown key). ``period``: the usage-over-time
    chart's period type (default :func:`auto_period`); ``top``: how many subjects to list.

    Example: ``gather(meter, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))``.
    """
    calendar = meter.calendar
    asked = (to_ns(start), to_ns(end))
    if asked[0] >= asked[1]:
        raise ValidationError("to", f"must be after from ({start.isoformat()})")
    first, last = _on_hours(calendar, *asked)
    zone = calendar.zone
    report = Report(
        start=from_ns(first).astimezone(zone),
        end=from_ns(last).astimezone(zone),
        timezone=meter.timezone,
        generated_at=(now or datetime.now(zone)).astimezone(zone),
        top=top,
        widened=(first, last) != asked,
    )
    chosen = _metrics(meter, metrics)
    thresholds = meter.list_thresholds()
    alerts = meter.list_alerts()
    bucket_type = period or auto_period(report.start, report.end)
    for metric in chosen:
        report.metrics.append(
            _metric_report(meter, metric, report, bucket_type, thresholds, alerts)
        )
    return report


def _metrics(meter: Meter, keys: Sequence[str]) -> list[MetricDefinition]:
    """The metrics to report, global ones first, then by key and org."""
    every = sorted(
        meter.list_metrics(all_orgs=True), key=lambda m: (m.org_id is not None, m.key, m.org_id)
    )
    if not keys:
        return every
    chosen = []
    for key in dict.fromkeys(keys):
        found = [m for m in every if m.key == key]
        if not found:
            meter.get_metric(key)  # raises NotFoundError naming the key
        chosen += found
    return chosen


class _Parts(Protocol):
    """What a bucket, a subject or the whole range adds up to."""

    @property
    def record_count(self) -> int: ...

    def value(self, metric: MetricDefinition) -> Decimal | None: ...


def _metric_report(
    meter: Meter,
    metric: MetricDefinition,
    report: Report,
    bucket_type: PeriodType,
    thresholds: Sequence[UsageThreshold],
    alerts: Sequence[UsageAlert],
) -> MetricReport:
    calendar = meter.calendar
    first, last = to_ns(report.start), to_ns(report.end)
    bounds = calendar.boundaries(bucket_type, first, last)
    if metric.record_level:
        per_bucket, per_subject, overall = _measured(meter, metric, report, bucket_type, bounds)
    else:
        per_bucket, per_subject, overall = _combined(meter, metric, report, bucket_type, bounds)
    buckets = [
        Bucket(
            from_ns(max(b, first)).astimezone(calendar.zone),
            from_ns(min(b_end, last)).astimezone(calendar.zone),
            per_bucket[b].value(metric),
            per_bucket[b].record_count,
        )
        for b, b_end in pairwise(bounds)
    ]
    subjects = [
        SubjectUsage(kind, sid, value, parts.record_count)
        for (kind, sid), parts in per_subject.items()
        if (parts.record_count or metric.record_level)
        and (value := parts.value(metric)) is not None
    ]
    subjects.sort(key=lambda s: (-s.value, s.subject_type, s.subject_id))
    mine = [t for t in thresholds if t.metric_key == metric.key and t.org_id == metric.org_id]
    return MetricReport(
        metric=metric,
        period=bucket_type,
        buckets=buckets,
        total=overall.value(metric),
        records=overall.record_count,
        subjects=subjects[: report.top],
        subject_count=len(subjects),
        thresholds=[_threshold_report(meter, metric, t, report) for t in mine],
        alerts=_alerts(metric, mine, thresholds, alerts, report),
    )


_Tally = tuple[Mapping[int, _Parts], Mapping[tuple[str, str], _Parts], _Parts]


def _combined(
    meter: Meter,
    metric: MetricDefinition,
    report: Report,
    bucket_type: PeriodType,
    bounds: list[int],
) -> _Tally:
    """Per bucket, per subject and overall: stored summaries' components combined."""
    calendar = meter.calendar
    source = _source(calendar, bucket_type, to_ns(report.start), to_ns(report.end))
    rows = meter.get_usage_summaries(
        metric.key, source, start=report.start, end=report.end, org_id=metric.org_id
    )
    per_bucket = {b: _Components() for b in bounds[:-1]}
    per_subject: dict[tuple[str, str], _Components] = {}
    overall = _Components()
    for row in rows:
        at = to_ns(row.period_start)
        per_bucket[calendar.start_of(bucket_type, at)].merge(row, metric)
        key = (row.subject_type, row.subject_id)
        per_subject.setdefault(key, _Components()).merge(row, metric)
        overall.merge(row, metric)
    return per_bucket, per_subject, overall


def _measured(
    meter: Meter,
    metric: MetricDefinition,
    report: Report,
    bucket_type: PeriodType,
    bounds: list[int],
) -> _Tally:
    """Per bucket, per subject over the range and overall, of a UNIQUE_COUNT or
    TIME_WEIGHTED_SUM metric: measured from the records (the outbox delivered first)."""
    calendar = meter.calendar
    first, last = to_ns(report.start), to_ns(report.end)
    meter.flush()
    as_of = to_ns(report.generated_at)
    edges = [first, *[b for b in bounds if first < b < last], last]
    per_bucket = {b: _Measured() for b in bounds[:-1]}
    for m in measure(meter.store, metric, edges, as_of=as_of):
        per_bucket[calendar.start_of(bucket_type, m.start)].add(m)
    per_subject: dict[tuple[str, str], _Measured] = {}
    overall = _Measured()
    for m in measure(meter.store, metric, [first, last], as_of=as_of):
        per_subject.setdefault((m.subject_type, m.subject_id), _Measured()).add(m)
        overall.add(m)
    return per_bucket, per_subject, overall


def _threshold_report(
    meter: Meter, metric: MetricDefinition, threshold: UsageThreshold, report: Report
) -> ThresholdReport:
    """Each covered subject's usage in each window of ``threshold`` overlapping the range."""
    window = threshold_period(metric, threshold)
    one = None if threshold.subject_id == "*" else threshold.subject_id
    if window is None and metric.record_level:  # lifetime: measured from every record
        found = measure(
            meter.store, metric, [to_ns(EPOCH), LIFETIME_END],
            subject_type=threshold.subject_type, subject_id=one,
            as_of=to_ns(report.generated_at),
        )  # fmt: skip
        usage = [
            WindowUsage(None, None, threshold.subject_type, m.subject_id,
                        metric.usage(m.value(metric)))
            for m in found
        ]  # fmt: skip
    elif window is None:  # lifetime: yearly summaries from 1970 on, combined per subject
        rows = meter.get_usage_summaries(
            metric.key, PeriodType.YEARLY, start=EPOCH, end=from_ns(LIFETIME_END),
            subject_type=threshold.subject_type, subject_id=one, org_id=metric.org_id,
        )  # fmt: skip
        totals: dict[str, _Components] = {}
        for row in rows:
            totals.setdefault(row.subject_id, _Components()).merge(row, metric)
        usage = [
            WindowUsage(None, None, threshold.subject_type, sid, value)
            for sid, parts in totals.items()
            if parts.record_count and (value := parts.value(metric)) is not None
        ]
    else:
        rows = meter.get_usage_summaries(
            metric.key, window, start=report.start, end=report.end,
            subject_type=threshold.subject_type, subject_id=one, org_id=metric.org_id,
        )  # fmt: skip
        zone = meter.calendar.zone
        usage = [
            WindowUsage(
                r.period_start.astimezone(zone),
                r.period_end.astimezone(zone),
                r.subject_type,
                r.subject_id,
                r.total_quantity,
            )
            for r in rows
            if r.record_count or metric.record_level
        ]
    usage.sort(key=lambda u: (_instant(u.start), -u.value, u.subject_id))
    return ThresholdReport(threshold, window, usage)


def _instant(value: datetime | None) -> int:
    return 0 if value is None else to_ns(value)


def _alerts(
    metric: MetricDefinition,
    mine: Sequence[UsageThreshold],
    every: Iterable[UsageThreshold],
    alerts: Iterable[UsageAlert],
    report: Report,
) -> list[UsageAlert]:
    """The metric's alerts opened or resolved in the range, or about a window overlapping
    it (a lifetime window overlaps every range), oldest first. An alert whose threshold was
    deleted belongs to the global metric of its key."""
    own = {t.id for t in mine}
    known = {t.id for t in every}
    start, end = report.start, report.end

    def inside(at: datetime | None) -> bool:
        return at is not None and start <= at < end

    def overlaps(alert: UsageAlert) -> bool:
        if alert.period_start is None or alert.period_end is None:
            return True
        return alert.period_start < end and start < alert.period_end

    chosen = [
        a
        for a in alerts
        if a.metric_key == metric.key
        and (a.threshold_id in own or (a.threshold_id not in known and metric.org_id is None))
        and (inside(a.created_at) or inside(a.resolved_at) or overlaps(a))
    ]
    chosen.sort(key=lambda a: (_instant(a.created_at), a.subject_id, a.level))
    return chosen
