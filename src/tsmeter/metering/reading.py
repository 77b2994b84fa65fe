"""Reading usage back: raw records, exports, summaries, and running aggregation."""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Iterator
from typing import IO, Literal

from tsmeter.domain import (
    AggregationResult,
    AggregationType,
    MetricDefinition,
    PeriodType,
    UsageRecord,
    UsageSummary,
)
from tsmeter.domain.events import UsageAggregated
from tsmeter.domain.modelio import TimeLike, ns
from tsmeter.domain.modelio import period_type as parse_period
from tsmeter.domain.validation import from_ns
from tsmeter.errors import ValidationError
from tsmeter.metering.base import MeterBase
from tsmeter.ports import RecordQuery, SummaryQuery, SummaryRow

__all__ = ["ReadingMixin", "neutralise_cell", "restore_cell"]

_EXPORT_COLUMNS = (
    "id", "metricKey", "subjectType", "subjectId", "quantity", "timestamp", "metadata",
    "source", "orgId",
)  # fmt: skip
_NUMERIC_COLUMNS = frozenset({"quantity", "timestamp"})  # never neutralised
_RISKY = re.compile(r"'*[=+\-@\t\r]")
_NEUTRALISED = re.compile(r"'+[=+\-@\t\r]")


def neutralise_cell(text: str) -> str:
    """A CSV text cell made safe to open in a spreadsheet (OWASP CSV injection): ``'`` put
    before a cell that starts, after any ``'``, with ``= + - @``, TAB or CR. Reversible:
    :func:`restore_cell` gives the value back, so a re-import gets the original.

    >>> neutralise_cell("=HYPERLINK(1)"), neutralise_cell("'=x"), neutralise_cell("'abc")
    ("'=HYPERLINK(1)", "''=x", "'abc")
    """
    return "'" + text if _RISKY.match(text) else text


def restore_cell(text: str) -> str:
    """The value a cell had before :func:`neutralise_cell`: one leading ``'`` removed where
    it is followed by any more ``'`` and then ``= + - @``, TAB or CR.

    >>> restore_cell("'=HYPERLINK(1)"), restore_cell("''=x"), restore_cell("'abc")
    ('=HYPERLINK(1)', "'=x", "'abc")
    """
    return text[1:] if _NEUTRALISED.match(text) else text


def _csv_cell(column: str, value: object, neutralise: bool) -> object:
    if value is None:
        return ""
    if neutralise and column not in _NUMERIC_COLUMNS and isinstance(value, str):
        return neutralise_cell(value)
    return value


class ReadingMixin(MeterBase):
    """The Meter's queries: usage.get, usage.export, usage.getSummary, and aggregation."""

    # -- reading ----------------------------------------------------------------------
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
        """Raw records of a metric (optionally one subject) in ``[start, end)``, oldest first.

        Example: ``meter.get_usage("api_calls", "org", "org-1", start="2026-01-01T00:00:00Z")``.
        """
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
        metric = self.get_metric(metric_key, org_id)
        query = RecordQuery(
            metric.key, metric.org_id, subject_type, subject_id,
            ns("start", start), ns("end", end), limit,
        )  # fmt: skip
        for row in self.store.iter_records(query):
            yield UsageRecord.from_row(row)

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
    ) -> int:
        """Stream records (one metric, or every metric) to ``out`` as JSON Lines or CSV; return
        the count. ``org_id`` picks an org's own metric (with ``metric_key``) or limits the
        export to that org's metrics. In CSV, ``neutralise`` (on by default) passes the text
        cells (not quantities or timestamps) through :func:`neutralise_cell`, so a spreadsheet
        never runs them as formulas. Example: ``meter.export_usage(sys.stdout, "api_calls")``.
        """
        if metric_key:
            metrics = [self.get_metric(metric_key, org_id)]
        else:
            metrics = self.list_metrics(all_orgs=True)
            if org_id is not None:
                metrics = [m for m in metrics if m.org_id == org_id]
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(_EXPORT_COLUMNS)
        count = 0
        for metric in metrics:
            for record in self.iter_usage(metric.key, subject_type, subject_id, start=start,
                                          end=end, org_id=metric.org_id):  # fmt: skip
                doc = record.to_json_dict()
                if writer is None:
                    out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                else:
                    doc["metadata"] = json.dumps(doc["metadata"]) if doc["metadata"] else ""
                    writer.writerow([_csv_cell(c, doc[c], neutralise) for c in _EXPORT_COLUMNS])
                count += 1
        return count

    def _summary(
        self, metric: MetricDefinition, period: PeriodType, row: SummaryRow
    ) -> UsageSummary:
        agg = metric.aggregation_type
        total = {
            AggregationType.COUNT: float(row.record_count),
            AggregationType.SUM: row.sum,
            AggregationType.AVG: row.sum / row.record_count if row.record_count else 0.0,
            AggregationType.MAX: row.max,
            AggregationType.MIN: row.min,
            AggregationType.LAST: row.last_value,
        }[agg]
        return UsageSummary.model_construct(
            metric_key=row.metric_key, subject_type=row.subject_type, subject_id=row.subject_id,
            org_id=row.org_id, period_type=period, period_start=from_ns(row.period_start),
            period_end=from_ns(row.period_end), timezone=self.timezone, aggregation_type=agg,
            total_quantity=total, record_count=row.record_count, sum=row.sum, min=row.min,
            max=row.max,
            last_value=row.last_value, last_timestamp=from_ns(row.last_ts),
        )  # fmt: skip

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
        (records that arrived since the last aggregation are included).

        Example: ``meter.get_usage_summaries("api_calls", "DAILY", start=s, end=e)``.
        """
        self._settle()
        metric = self.get_metric(metric_key, org_id)
        period = self._period(metric, period_type)
        lo, hi = ns("start", start), ns("end", end)
        assert lo is not None and hi is not None
        if hi <= lo:
            raise ValidationError("end", "must be after start")
        query = SummaryQuery(metric.key, period, lo, hi, metric.org_id, subject_type, subject_id)
        return [
            self._summary(metric, period, r) for r in self.store.summaries(query, self.calendar)
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
        period. Example: ``meter.get_usage_summary("api_calls", "org", "org-1", "MONTHLY")``.
        """
        self._settle()
        metric = self.get_metric(metric_key, org_id)
        period = self._period(metric, period_type)
        instant = ns("at", at) if at is not None else time.time_ns()
        assert instant is not None
        start, end = self.calendar.bounds(period, instant)
        query = SummaryQuery(
            metric.key, period, start, end, metric.org_id, subject_type, subject_id
        )
        rows = self.store.summaries(query, self.calendar)
        if rows:
            return self._summary(metric, period, rows[0])
        empty = SummaryRow(metric.key, subject_type, subject_id, metric.org_id, start, end, 0,
                           0.0, 0.0, 0.0, 0, 0.0)  # fmt: skip
        summary = self._summary(metric, period, empty)
        none = {"min": None, "max": None, "last_value": None, "last_timestamp": None}
        return summary.model_copy(update=none)

    # -- aggregation ------------------------------------------------------------------
    def aggregate(
        self,
        period_type: PeriodType | str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> AggregationResult:
        """Roll records up into summaries of ``period_type`` in the meter's time zone.

        Without a range it is incremental: every period touched since the last
        run, late records included. With a range, every period overlapping it
        is recomputed. Running it again gives identical summaries.
        Example: ``meter.aggregate("DAILY")``.
        """
        self._settle()
        period = parse_period(period_type)
        stats = self.store.rollup(period, self.calendar, ns("start", start), ns("end", end))
        result = AggregationResult(
            period_type=period,
            summaries_written=stats.summaries_written,
            periods_recomputed=stats.periods_recomputed,
            records_seen=stats.records_seen,
            range_start=None if stats.range_start is None else from_ns(stats.range_start),
            range_end=None if stats.range_end is None else from_ns(stats.range_end),
        )
        self.events.publish(UsageAggregated(result=result))
        return result
