"""A threshold's window and the usage in it, shared by the monitor and the quota view.

A threshold's window is the period containing "now" of the threshold's period
type, else of its metric's reset period; a metric that never resets has one
lifetime window. :class:`Totals` holds the roll-up components of a window, so
the usage of any aggregation type can be read off it and a new record added. The usage of a
UNIQUE_COUNT or TIME_WEIGHTED_SUM metric is not made of components: it is measured from the
window's records (:mod:`tsmeter.metering.measures`) and held as the window's value.
"""

from __future__ import annotations

import logging
import time

from tsmeter.domain import (
    AggregationType,
    MetricDefinition,
    PeriodType,
    ResetPeriod,
    UsageThreshold,
)
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import aggregate_units, avg_units
from tsmeter.domain.validation import EPOCH, to_ns
from tsmeter.errors import SeriesError
from tsmeter.metering.measures import measure
from tsmeter.ports import SummaryQuery, SummaryRow, UsageStore

__all__ = [
    "LIFETIME_END",
    "Totals",
    "threshold_period",
    "window",
    "window_totals",
]

log = logging.getLogger("tsmeter.quotas")

# a lifetime window adds up yearly summaries from 1970 to the last whole year a record may have
LIFETIME_END = to_ns(EPOCH.replace(year=2261))


def threshold_period(metric: MetricDefinition, threshold: UsageThreshold) -> PeriodType | None:
    """The threshold's period type, else the metric's reset period; None for a lifetime."""
    if threshold.period_type is not None:
        return threshold.period_type
    if metric.reset_period is ResetPeriod.NEVER:
        return None
    return PeriodType(metric.reset_period.value)


def window(calendar: Calendar, period: PeriodType | None, now: int) -> tuple[int, int]:
    """``[start, end)`` of the window containing ``now`` (0 .. the end of time: lifetime)."""
    return (0, LIFETIME_END) if period is None else calendar.bounds(period, now)


class Totals:
    """Roll-up components of one subject's usage in one window, in the metric's units
    (integers: exact, whatever the number of records)."""

    __slots__ = ("last_ts", "last_value", "max", "measured", "min", "record_count", "sum")

    def __init__(self) -> None:
        #: a record-level metric's usage in the window, measured from its records (units;
        #: UNIQUE_COUNT: a count); None for the composable types
        self.measured: int | None = None
        self.record_count = 0
        self.sum = 0
        self.min = 0
        self.max = 0
        self.last_ts = -1
        self.last_value = 0

    def merge(self, row: SummaryRow) -> None:
        """Add a summary's components."""
        if row.record_count == 0:
            return
        first = self.record_count == 0
        self.record_count += row.record_count
        self.sum += row.sum
        self.min = row.min if first else min(self.min, row.min)
        self.max = row.max if first else max(self.max, row.max)
        if row.last_ts >= self.last_ts:
            self.last_ts, self.last_value = row.last_ts, row.last_value

    def add(self, units: int, ts: int) -> None:
        """Add one record of ``units``."""
        first = self.record_count == 0
        self.record_count += 1
        self.sum += units
        self.min = units if first else min(self.min, units)
        self.max = units if first else max(self.max, units)
        if ts >= self.last_ts:
            self.last_ts, self.last_value = ts, units

    def value(self, aggregation: AggregationType) -> int:
        """The usage as the metric measures it, in units (COUNT: the number of records;
        AVG: rounded half to even; 0 with no records; a record-level metric: as measured)."""
        if self.measured is not None:
            return self.measured
        if self.record_count == 0:
            return 0
        return aggregate_units(aggregation.value, self)

    def projected(self, aggregation: AggregationType, records: int, units: int) -> int:
        """The usage after ``records`` more records adding up to ``units`` (a record-level
        metric's usage cannot be projected from a quantity: its value as measured)."""
        if records <= 0 or self.measured is not None:
            return self.value(aggregation)
        if aggregation is AggregationType.COUNT:
            return self.record_count + records
        if aggregation is AggregationType.SUM:
            return self.sum + units
        if aggregation is AggregationType.AVG:
            return avg_units(self.sum + units, self.record_count + records)
        each = avg_units(units, records)
        if aggregation is AggregationType.MAX:
            return max(self.max, each) if self.record_count else each
        if aggregation is AggregationType.MIN:
            return min(self.min, each) if self.record_count else each
        return each


def window_totals(
    store: UsageStore,
    calendar: Calendar,
    metric: MetricDefinition,
    period: PeriodType | None,
    bounds: tuple[int, int],
    subject_type: str,
    subject_id: str | None,
    failures: list[SeriesError] | None = None,
    *,
    as_of: int | None = None,
) -> dict[str, Totals]:
    """Per subject (one, or every subject of the type): its totals in the window ``bounds``.
    Lifetime windows add up the yearly summaries. For every subject, a subject whose usage
    cannot be summed (SeriesError) is left out and its error appended to ``failures`` (logged
    when no list is given); for one subject, the error is raised. A UNIQUE_COUNT or
    TIME_WEIGHTED_SUM metric is measured from the window's records (its readings held until
    ``as_of``, default now)."""
    if metric.record_level:
        return _measured_totals(store, metric, bounds, subject_type, subject_id, as_of)
    query_period = PeriodType.YEARLY if period is None else period
    query = SummaryQuery(metric.key, query_period, bounds[0], bounds[1], metric.org_id,
                         subject_type, subject_id)  # fmt: skip
    out: dict[str, Totals] = {}
    try:
        rows = store.summaries(query, calendar)
    except SeriesError as exc:  # every subject of the type: the others are still evaluated
        if subject_id is not None:
            raise
        if failures is None:
            log.error("%s (left out of this window's totals)", exc)
        else:
            failures.append(exc)
        rows = exc.rows
    for row in rows:
        totals = out.get(row.subject_id)
        if totals is None:
            totals = out[row.subject_id] = Totals()
        totals.merge(row)
    return out


def _measured_totals(
    store: UsageStore,
    metric: MetricDefinition,
    bounds: tuple[int, int],
    subject_type: str,
    subject_id: str | None,
    as_of: int | None,
) -> dict[str, Totals]:
    """Per subject: a record-level metric's usage over the window, as one period."""
    out: dict[str, Totals] = {}
    instant = time.time_ns() if as_of is None else as_of
    for m in measure(store, metric, list(bounds), subject_type=subject_type,
                     subject_id=subject_id, as_of=instant):  # fmt: skip
        totals = out[m.subject_id] = Totals()
        totals.record_count, totals.sum = m.record_count, m.sum
        if m.record_count:
            totals.min, totals.max = m.min, m.max
            totals.last_ts, totals.last_value = m.last_ts, m.last_value
        totals.measured = m.value(metric)
    return out
