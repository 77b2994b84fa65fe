"""Reading usage back: usage.get (raw records), usage.export, usage.getSummary, and usage
broken down by a metric's dimensions.

Every read first lets the outbox deliver what this process accepted (``settle``), so a read
after a write sees it while the store is up. Running aggregation is
:mod:`tsmeter.metering.aggregation`. Summaries of the composable types come from the store's
summaries; those of UNIQUE_COUNT and TIME_WEIGHTED_SUM metrics, and every breakdown by
dimension, from the records of each period (:mod:`tsmeter.metering.measures`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import IO, Literal

from tsmeter.domain import (
    MetricDefinition,
    PeriodType,
    ResetPeriod,
    UsageRecord,
    UsageSummary,
)
from tsmeter.domain.modelio import TimeLike, ns
from tsmeter.domain.modelio import period_type as parse_period
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import aggregate_units
from tsmeter.domain.validation import from_ns
from tsmeter.errors import ValidationError
from tsmeter.metering.catalog import MetricCatalog
from tsmeter.metering.export import RecordWriter, neutralise_cell, restore_cell
from tsmeter.metering.measures import Measure, grouping, measure, period_edges
from tsmeter.ports import RecordQuery, SummaryQuery, SummaryRow, UsageStore

__all__ = ["Queries", "neutralise_cell", "restore_cell", "summary_period"]


@lru_cache(maxsize=4096)
def _instant(ns: int) -> datetime:
    """:func:`from_ns`, remembered: the measures of one period share its bounds."""
    return from_ns(ns)


def summary_period(metric: MetricDefinition, period_type: PeriodType | str | None) -> PeriodType:
    """The period type asked for, else the metric's reset period (MONTHLY for NEVER).

    >>> from tsmeter.domain import MetricDefinition
    >>> summary_period(MetricDefinition(key="x", reset_period="NEVER"), None).value
    'MONTHLY'
    """
    if period_type is not None:
        return parse_period(period_type)
    if metric.reset_period is ResetPeriod.NEVER:
        return PeriodType.MONTHLY
    return PeriodType(metric.reset_period.value)


class Queries:
    """Reads records and summaries of the metrics in ``metrics`` from ``store``, periods in
    ``calendar``'s zone; ``settle`` runs before each read.

    Example: ``Queries(store, metrics, Calendar("UTC")).get_usage("api_calls", "org", "org-1")``.
    """

    def __init__(
        self,
        store: UsageStore,
        metrics: MetricCatalog,
        calendar: Calendar,
        *,
        settle: Callable[[], object] = lambda: None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._calendar = calendar
        self._settle = settle

    def get_usage(
        self,
        metric_key: str,
        subject_type: str | None = None,
        subject_id: str | None = None,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        org_id: str | None = None,
        limit: int | None = 1000,
    ) -> list[UsageRecord]:
        """Raw records of a metric (optionally one subject) in ``[start, end)``, oldest first."""
        return list(self.iter_usage(metric_key, subject_type, subject_id, start=start, end=end,
                                    org_id=org_id, limit=limit))  # fmt: skip

    def iter_usage(
        self,
        metric_key: str,
        subject_type: str | None = None,
        subject_id: str | None = None,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        org_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[UsageRecord]:
        """Like :meth:`get_usage` but streamed and unlimited by default."""
        self._settle()
        metric = self._metrics.get_metric(metric_key, org_id)
        query = RecordQuery(
            metric.key, metric.org_id, subject_type, subject_id,
            ns("start", start), ns("end", end), limit,
        )  # fmt: skip
        for row in self._store.iter_records(query):
            yield UsageRecord.from_row(row, metric.precision)

    def export_usage(
        self,
        out: IO[str],
        metric_key: str | None = None,
        *,
        fmt: Literal["jsonl", "csv"] = "jsonl",
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
        neutralise: bool = True,
        progress: Callable[[int], object] | None = None,
    ) -> int:
        """Stream records (one metric, or every metric) to ``out`` as JSON Lines or CSV; return
        the count. ``org_id`` picks an org's own metric (with ``metric_key``) or limits the
        export to that org's metrics. Timestamps are in the calendar's zone with their offset.
        In CSV, ``neutralise`` (on by default) passes the text cells (not quantities or
        timestamps) through :func:`neutralise_cell`, so a spreadsheet never runs them as
        formulas. ``progress`` is called with the number of records written since its last
        call. Each metric is read from one snapshot of the store, in time order."""
        writer = RecordWriter(out, fmt, self._calendar.zone, neutralise=neutralise)
        count = 0
        for metric, query in self._export_queries(
            metric_key, start, end, subject_type, subject_id, org_id
        ):
            for written in writer.write(self._store.iter_records(query), metric.precision):
                count += written
                if progress is not None:
                    progress(written)
        return count

    def count_usage(
        self,
        metric_key: str | None = None,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
    ) -> int | None:
        """How many records :meth:`export_usage` with the same arguments would write, or None
        where the store cannot count them without reading them."""
        total = 0
        for _metric, query in self._export_queries(
            metric_key, start, end, subject_type, subject_id, org_id
        ):
            count = self._store.count_records(query)
            if count is None:
                return None
            total += count
        return total

    def _export_queries(
        self,
        metric_key: str | None,
        start: TimeLike | None,
        end: TimeLike | None,
        subject_type: str | None,
        subject_id: str | None,
        org_id: str | None,
    ) -> list[tuple[MetricDefinition, RecordQuery]]:
        """The metrics an export covers (one, or every metric, or an org's), each with its
        query; the outbox is settled first."""
        if metric_key:
            metrics = [self._metrics.get_metric(metric_key, org_id)]
        else:
            metrics = self._metrics.list_metrics(all_orgs=True)
            if org_id is not None:
                metrics = [m for m in metrics if m.org_id == org_id]
        lo, hi = ns("start", start), ns("end", end)
        self._settle()
        return [
            (m, RecordQuery(m.key, m.org_id, subject_type, subject_id, lo, hi)) for m in metrics
        ]

    def _summary(
        self, metric: MetricDefinition, period: PeriodType, row: SummaryRow
    ) -> UsageSummary:
        agg = metric.aggregation_type
        decimal = metric.decimal
        total = metric.usage(aggregate_units(agg, row))
        return UsageSummary.model_construct(
            metric_key=row.metric_key, subject_type=row.subject_type, subject_id=row.subject_id,
            org_id=row.org_id, period_type=period, period_start=from_ns(row.period_start),
            period_end=from_ns(row.period_end), timezone=self._calendar.timezone,
            aggregation_type=agg, total_quantity=total, record_count=row.record_count,
            sum=decimal(row.sum), min=decimal(row.min), max=decimal(row.max),
            last_value=decimal(row.last_value), last_timestamp=from_ns(row.last_ts),
        )  # fmt: skip

    def _measured(
        self,
        metric: MetricDefinition,
        period: PeriodType,
        m: Measure,
        group_by: Sequence[str] | None = None,
    ) -> UsageSummary:
        """A summary from a measure (components None where the period has no record of its
        own: a time-weighted reading carried in); ``group_by`` names its group's values."""
        decimal = metric.decimal
        has = m.record_count > 0
        return UsageSummary.model_construct(
            metric_key=metric.key, subject_type=m.subject_type, subject_id=m.subject_id,
            org_id=metric.org_id, period_type=period, period_start=_instant(m.start),
            period_end=_instant(m.end), timezone=self._calendar.timezone,
            aggregation_type=metric.aggregation_type, total_quantity=metric.usage(m.value(metric)),
            record_count=m.record_count, sum=decimal(m.sum),
            min=decimal(m.min) if has else None, max=decimal(m.max) if has else None,
            last_value=decimal(m.last_value) if has else None,
            last_timestamp=from_ns(m.last_ts) if has else None,
            dimensions=None if group_by is None else dict(zip(group_by, m.group, strict=True)),
        )  # fmt: skip

    def get_usage_breakdown(
        self,
        metric_key: str,
        period_type: PeriodType | str | None = None,
        *,
        start: TimeLike,
        end: TimeLike,
        group_by: Sequence[str] = (),
        where: Mapping[str, object] | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
        as_of: TimeLike | None = None,
    ) -> list[UsageSummary]:
        """Summaries per period overlapping ``[start, end)``, subject and group of the values
        of the dimensions ``group_by`` (in that order), of the records whose dimensions match
        ``where`` (``{name: value}``; None: records without it); each summary's
        ``dimensions`` names its group's values (None: records without the property).
        ``as_of`` (default now) ends the readings of a TIME_WEIGHTED_SUM."""
        self._settle()
        metric = self._metrics.get_metric(metric_key, org_id)
        period = summary_period(metric, period_type)
        lo, hi = self._range(start, end)
        group = grouping(metric, group_by, where)
        instant = ns("asOf", as_of) if as_of is not None else time.time_ns()
        if not metric.record_level and not group.group_by and not group.where:
            query = SummaryQuery(metric.key, period, lo, hi, metric.org_id, subject_type,
                                 subject_id)  # fmt: skip
            rows = self._store.summaries(query, self._calendar)
            return [
                self._summary(metric, period, r).model_copy(update={"dimensions": {}}) for r in rows
            ]
        found = measure(self._store, metric, period_edges(self._calendar, period, lo, hi),
                        subject_type=subject_type, subject_id=subject_id, group=group,
                        as_of=instant)  # fmt: skip
        return [self._measured(metric, period, m, group.group_by) for m in found]

    @staticmethod
    def _range(start: TimeLike, end: TimeLike) -> tuple[int, int]:
        lo, hi = ns("start", start), ns("end", end)
        assert lo is not None and hi is not None
        if hi <= lo:
            raise ValidationError("end", "must be after start")
        return lo, hi

    def get_usage_summaries(
        self,
        metric_key: str,
        period_type: PeriodType | str | None = None,
        *,
        start: TimeLike,
        end: TimeLike,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
    ) -> list[UsageSummary]:
        """Summaries of every period overlapping ``[start, end)`` that has records, always fresh
        (records that arrived since the last aggregation are included)."""
        self._settle()
        metric = self._metrics.get_metric(metric_key, org_id)
        period = summary_period(metric, period_type)
        lo, hi = self._range(start, end)
        if metric.record_level:
            found = measure(self._store, metric, period_edges(self._calendar, period, lo, hi),
                            subject_type=subject_type, subject_id=subject_id)  # fmt: skip
            return [self._measured(metric, period, m) for m in found]
        query = SummaryQuery(metric.key, period, lo, hi, metric.org_id, subject_type, subject_id)
        return [
            self._summary(metric, period, r) for r in self._store.summaries(query, self._calendar)
        ]

    def get_usage_summary(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        period_type: PeriodType | str | None = None,
        *,
        at: TimeLike | None = None,
        org_id: str | None = None,
    ) -> UsageSummary:
        """The summary of one subject for the period containing ``at`` (default: now);
        zero usage if nothing was recorded. ``period_type`` defaults to the metric's reset
        period."""
        self._settle()
        metric = self._metrics.get_metric(metric_key, org_id)
        period = summary_period(metric, period_type)
        instant = ns("at", at) if at is not None else time.time_ns()
        assert instant is not None
        start, end = self._calendar.bounds(period, instant)
        if metric.record_level:
            found = measure(self._store, metric, [start, end], subject_type=subject_type,
                            subject_id=subject_id)  # fmt: skip
            if found:
                return self._measured(metric, period, found[0])
            return self._measured(metric, period, Measure(start, end, subject_type, subject_id, ()))
        query = SummaryQuery(
            metric.key, period, start, end, metric.org_id, subject_type, subject_id
        )
        rows = self._store.summaries(query, self._calendar)
        if rows:
            return self._summary(metric, period, rows[0])
        empty = SummaryRow(metric.key, subject_type, subject_id, metric.org_id, start, end, 0,
                           0, 0, 0, 0, 0)  # fmt: skip
        summary = self._summary(metric, period, empty)
        none = {"min": None, "max": None, "last_value": None, "last_timestamp": None}
        return summary.model_copy(update=none)
