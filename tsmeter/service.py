"""The Meter: tsmeter's service API, named after the metering contracts.

>>> import tsmeter
>>> with tsmeter.connect("sqlite:///:memory:") as meter:
...     _ = meter.define_metric("api_calls", aggregation_type="COUNT")
...     _ = meter.record("api_calls", "org", "org-1", timestamp="2026-01-05T10:00:00Z")
...     meter.get_usage_summary("api_calls", "org", "org-1", "MONTHLY",
...                             at="2026-01-20T00:00:00Z").total_quantity
1.0
"""

from __future__ import annotations

import csv
import gc
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any, Literal, TypeVar

import pydantic

from tsmeter.domain import (
    AggregationResult,
    AggregationType,
    BatchResult,
    MetricDefinition,
    Model,
    PeriodType,
    ResetPeriod,
    UsageRecord,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.validation import from_ns, parse_timestamp, to_ns
from tsmeter.errors import NotFoundError, StorageUnavailableError, TsmeterError, ValidationError
from tsmeter.events import (
    Event,
    EventBus,
    MetricDefined,
    MetricDeleted,
    MetricUpdated,
    UsageAggregated,
    UsageBatchRecorded,
    UsageRecorded,
)
from tsmeter.intake import Intake
from tsmeter.periods import Calendar
from tsmeter.ports import Catalog, RecordQuery, SummaryQuery, SummaryRow, UsageStore

__all__ = ["Meter"]

M = TypeVar("M", bound=Model)
E = TypeVar("E", bound=Event)
TimeLike = datetime | str
_EXPORT_COLUMNS = (
    "id", "metricKey", "subjectType", "subjectId", "quantity", "timestamp", "metadata",
    "source", "orgId",
)  # fmt: skip


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is turned into rows.

    A batch allocates millions of small tuples that hold no cycles; with the
    collector on, its young-generation passes cost about 40 % of the batch.
    Reference counting still frees everything; the collector resumes after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build(model: type[M], data: Mapping[str, Any]) -> M:
    """Validate ``data`` into ``model``, translating pydantic's error into ours."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        if field in model.model_fields:
            field = model.model_fields[field].alias or field
        message = str(err["msg"]).removeprefix("Value error, ")
        message = message.removeprefix(f"{field}: ")
        raise ValidationError(field, message) from None


def _changed(current: M, changes: Mapping[str, Any]) -> dict[str, Any]:
    """``current``'s fields by attribute name, with ``changes`` (camelCase or snake_case) applied.

    One spelling throughout: the model rejects a field given under both names.
    """
    names = {field.alias or name: name for name, field in type(current).model_fields.items()}
    data = current.model_dump(by_alias=False)
    data.update({names.get(key, key): value for key, value in changes.items()})
    return data


def _ns(field: str, value: TimeLike | None) -> int | None:
    return None if value is None else to_ns(parse_timestamp(field, value))


class Meter:
    """Records usage, defines metrics and thresholds, aggregates and answers queries.

    Build one with :func:`tsmeter.connect`; it is a context manager and
    thread-safe. ``timezone`` is the IANA zone periods are computed in.
    """

    def __init__(
        self,
        store: UsageStore,
        catalog: Catalog,
        *,
        timezone: str = "UTC",
        chunk_size: int = 50_000,
        bus: EventBus | None = None,
        metric_cache_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.calendar = Calendar(timezone)
        self.timezone = timezone
        self.chunk_size = chunk_size
        self.events = bus or EventBus()
        self._metric_ttl = metric_cache_seconds
        self._metrics: dict[tuple[str, str | None], tuple[float, MetricDefinition]] = {}
        self._lock = threading.Lock()
        self._intake = Intake(self._resolve_metric)
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store; every record acknowledged so far is already stored."""
        if not self._closed:
            self._closed = True
            self.store.close()
            close = getattr(self.catalog, "close", None)
            if close is not None and close != self.store.close:
                close()

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call ``handler`` for each event of ``event_type`` (``Event`` for all).

        Example: ``meter.subscribe(UsageRecorded, lambda e: print(e.record.id))``.
        Returns a function that unsubscribes.
        """
        return self.events.subscribe(event_type, handler)

    # -- metrics ----------------------------------------------------------------------
    def _resolve_metric(self, key: str, org_id: str | None) -> MetricDefinition:
        """The metric a record refers to: the org's own definition, else the global one."""
        now = time.monotonic()
        hit = self._metrics.get((key, org_id))
        if hit is not None and now - hit[0] < self._metric_ttl:
            return hit[1]
        metric = self.catalog.find_metric(key, org_id)
        if metric is None and org_id is not None:
            metric = self.catalog.find_metric(key, None)
        if metric is None:
            where = f" (org {org_id!r} or global)" if org_id else ""
            raise ValidationError("metricKey", f"unknown metric {key!r}{where}")
        self._metrics[(key, org_id)] = (now, metric)
        return metric

    def define_metric(self, key: str, **fields: Any) -> MetricDefinition:
        """Define a metric; ConflictError if the key exists in that org scope.

        Example: ``meter.define_metric("storage_gb", aggregation_type="MAX", unit="GB")``.
        """
        now = datetime.now(UTC)
        metric = build(
            MetricDefinition, {**fields, "key": key, "created_at": now, "updated_at": now}
        )
        self.catalog.add_metric(metric)
        self._metrics.clear()  # an org's new definition replaces a cached global fallback
        self.events.publish(MetricDefined(metric=metric))
        return metric

    def get_metric(self, key: str, org_id: str | None = None) -> MetricDefinition:
        """The metric ``key`` in ``org_id``'s scope (None: global); NotFoundError if none.

        Example: ``meter.get_metric("api_calls").aggregation_type``.
        """
        metric = self.catalog.find_metric(key, org_id)
        if metric is None:
            scope = f" in org {org_id!r}" if org_id else ""
            raise NotFoundError(f"metric {key!r} not found{scope}")
        return metric

    def list_metrics(
        self, org_id: str | None = None, *, all_orgs: bool = False
    ) -> list[MetricDefinition]:
        """Metrics of one scope (global by default), or of every scope with ``all_orgs``.

        Example: ``[m.key for m in meter.list_metrics()]``.
        """
        metrics = self.catalog.list_metrics()
        return metrics if all_orgs else [m for m in metrics if m.org_id == org_id]

    def update_metric(
        self, key: str, org_id: str | None = None, **changes: Any
    ) -> MetricDefinition:
        """Change a metric's name, description, unit, aggregation type or reset period.

        Summaries keep their components, so a new aggregation type applies to
        past periods too. Example: ``meter.update_metric("api_calls", unit="calls")``.
        """
        metric = self.get_metric(key, org_id)
        frozen = {"id", "key", "org_id", "orgId", "created_at", "createdAt"} & changes.keys()
        if frozen:
            raise ValidationError(sorted(frozen)[0], "cannot be changed")
        data = {**_changed(metric, changes), "updated_at": datetime.now(UTC)}
        updated = build(MetricDefinition, data)
        self.catalog.replace_metric(updated)
        self._metrics.clear()
        self.events.publish(MetricUpdated(metric=updated))
        return updated

    def delete_metric(self, key: str, org_id: str | None = None, *, purge: bool = False) -> int:
        """Delete a metric; with ``purge=True`` its records and summaries go too.

        Without ``purge`` the records stay (ConflictError is not raised: the
        definition can be re-created and the history is still there). Returns
        the number of records purged. Example: ``meter.delete_metric("old", purge=True)``.
        """
        metric = self.get_metric(key, org_id)
        purged = self.store.purge_metric(key, metric.org_id) if purge else 0
        self.catalog.remove_metric(metric.id)
        self._metrics.clear()
        self.events.publish(MetricDeleted(metric=metric, purged_records=purged))
        return purged

    # -- recording --------------------------------------------------------------------
    def record(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        quantity: float | None = None,
        *,
        timestamp: TimeLike | None = None,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        org_id: str | None = None,
    ) -> UsageRecord:
        """Record one usage event and return it as stored.

        ``id`` is the idempotency key: if a record with this id exists, that
        stored record is returned and nothing is counted again. ``quantity``
        defaults to 1 for COUNT metrics; ``timestamp`` to now (must be aware).
        Example: ``meter.record("api_calls", "org", "org-123", id="req-42")``.
        """
        item: dict[str, Any] = {
            "metric_key": metric_key, "subject_type": subject_type, "subject_id": subject_id,
            "quantity": quantity, "timestamp": timestamp, "id": id, "metadata": metadata,
            "source": source, "org_id": org_id,
        }  # fmt: skip
        try:
            row = self._intake.rows([item])[0]
        except ValidationError as exc:  # one record, not a batch: name the bare field
            raise ValidationError(exc.field.removeprefix("records[0]."), exc.problem) from None
        if self.store.append([row], time.time_ns()) == 0:
            stored = self.store.get_record(row.id)
            if stored is not None:
                return UsageRecord.from_row(stored)
        record = UsageRecord.from_row(row)
        if self.events.wants(UsageRecorded):
            self.events.publish(UsageRecorded(record=record))
        return record

    def record_batch(self, records: Iterable[Mapping[str, Any] | UsageRecord]) -> BatchResult:
        """Record many events: all are validated first (one bad record stores nothing), then
        written in transactions of ``chunk_size``. Ids already stored count once.

        Records are mappings with the fields of :class:`UsageRecord` (camelCase
        or snake_case) or UsageRecord objects. If the store fails part-way,
        StorageUnavailableError says how many were stored; retrying with the
        same ids is safe. Example::

            meter.record_batch([{"metricKey": "api_calls", "subjectType": "org",
                                 "subjectId": "org-1", "id": "req-1"}])
        """
        now = time.time_ns()
        recorded = 0
        with _gc_paused():
            rows = self._intake.rows(records, now)
            for i in range(0, len(rows), self.chunk_size):
                try:
                    recorded += self.store.append(rows[i : i + self.chunk_size], now)
                except TsmeterError as exc:
                    raise StorageUnavailableError(
                        f"{exc} ({i} of {len(rows)} records were written before the failure;"
                        " retry with the same ids to record the rest exactly once)"
                    ) from exc
        result = BatchResult(recorded=recorded, duplicates=len(rows) - recorded)
        if self.events.wants(UsageBatchRecorded):
            keys = frozenset(r.metric_key for r in rows)
            self.events.publish(UsageBatchRecorded(result=result, metric_keys=keys))
        return result

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
        metric = self.get_metric(metric_key, org_id)
        query = RecordQuery(
            metric.key, metric.org_id, subject_type, subject_id,
            _ns("start", start), _ns("end", end), limit,
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
    ) -> int:
        """Stream records (one metric, or every metric) to ``out`` as JSON Lines or CSV; return
        the count. Example: ``meter.export_usage(sys.stdout, "api_calls", fmt="csv")``.
        """
        metrics = [self.get_metric(metric_key)] if metric_key else self.list_metrics(all_orgs=True)
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
                    writer.writerow(["" if doc[c] is None else doc[c] for c in _EXPORT_COLUMNS])
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

    def _period(self, metric: MetricDefinition, period_type: PeriodType | str | None) -> PeriodType:
        if period_type is not None:
            try:
                return PeriodType(str(period_type).upper())
            except ValueError:
                choices = ", ".join(p.value for p in PeriodType)
                raise ValidationError("periodType", f"must be one of {choices}") from None
        if metric.reset_period is ResetPeriod.NEVER:
            return PeriodType.MONTHLY
        return PeriodType(metric.reset_period.value)

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
        metric = self.get_metric(metric_key, org_id)
        period = self._period(metric, period_type)
        lo, hi = _ns("start", start), _ns("end", end)
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
        metric = self.get_metric(metric_key, org_id)
        period = self._period(metric, period_type)
        instant = _ns("at", at) if at is not None else time.time_ns()
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
        try:
            period = PeriodType(str(period_type).upper())
        except ValueError:
            choices = ", ".join(p.value for p in PeriodType)
            raise ValidationError("periodType", f"must be one of {choices}") from None
        stats = self.store.rollup(period, self.calendar, _ns("start", start), _ns("end", end))
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

    # -- thresholds -------------------------------------------------------------------
    def create_threshold(self, metric_key: str, subject_type: str, threshold: float,
                         subject_id: str = "*", **fields: Any) -> UsageThreshold:  # fmt: skip
        """Create a limit for one subject (or ``*``: every subject of the type).

        Example: ``meter.create_threshold("api_calls", "org", 10_000, action="BLOCK")``.
        """
        metric = self.get_metric(metric_key, fields.get("org_id"))
        now = datetime.now(UTC)
        item = build(UsageThreshold, {
            **fields, "metric_key": metric.key, "subject_type": subject_type,
            "subject_id": subject_id, "threshold": threshold, "created_at": now, "updated_at": now,
        })  # fmt: skip
        self.catalog.add_threshold(item)
        return item

    def get_threshold(self, threshold_id: str) -> UsageThreshold:
        """The threshold with this id; NotFoundError if none."""
        item = self.catalog.get_threshold(threshold_id)
        if item is None:
            raise NotFoundError(f"threshold {threshold_id!r} not found")
        return item

    def update_threshold(self, threshold_id: str, **changes: Any) -> UsageThreshold:
        """Change a threshold's limit, warn level, action or notification targets.

        Example: ``meter.update_threshold(t.id, threshold=20_000)``.
        """
        current = self.get_threshold(threshold_id)
        frozen = {"id", "metric_key", "metricKey", "created_at", "createdAt"} & changes.keys()
        if frozen:
            raise ValidationError(sorted(frozen)[0], "cannot be changed")
        data = _changed(current, changes)
        if "threshold" in changes and not {"warn_threshold", "warnThreshold"} & changes.keys():
            data["warn_threshold"] = None  # keep the default 80 % of the new limit
        updated = build(UsageThreshold, {**data, "updated_at": datetime.now(UTC)})
        self.catalog.replace_threshold(updated)
        return updated

    def delete_threshold(self, threshold_id: str) -> None:
        """Delete a threshold; NotFoundError if none. Example: ``meter.delete_threshold(t.id)``."""
        if not self.catalog.remove_threshold(threshold_id):
            raise NotFoundError(f"threshold {threshold_id!r} not found")

    def list_thresholds(self, metric_key: str | None = None, subject_type: str | None = None,
                        subject_id: str | None = None) -> list[UsageThreshold]:  # fmt: skip
        """Thresholds, optionally for one metric / subject type / subject.

        Example: ``meter.list_thresholds("api_calls")``.
        """
        return [
            t for t in self.catalog.list_thresholds()
            if (metric_key is None or t.metric_key == metric_key)
            and (subject_type is None or t.subject_type == subject_type)
            and (subject_id is None or t.subject_id in (subject_id, "*"))
        ]  # fmt: skip
