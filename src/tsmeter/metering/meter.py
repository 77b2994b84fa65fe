"""The Meter: tsmeter's service API, named after the metering contracts.

The Meter is assembled from parts: :mod:`tsmeter.metering.base` (ports, lookup),
:mod:`tsmeter.metering.reading` (queries, export, aggregation), :mod:`tsmeter.limits.thresholds`
and, here, metric definitions and recording.

>>> import tsmeter
>>> with tsmeter.connect("sqlite:///:memory:") as meter:
...     _ = meter.define_metric("api_calls", aggregation_type="COUNT")
...     _ = meter.record("api_calls", "org", "org-1", timestamp="2026-01-05T10:00:00Z")
...     meter.get_usage_summary("api_calls", "org", "org-1", "MONTHLY",
...                             at="2026-01-20T00:00:00Z").total_quantity
1.0
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from tsmeter.domain import BatchResult, MetricDefinition, RecordRow, UsageRecord
from tsmeter.domain.events import (
    MetricDefined,
    MetricDeleted,
    MetricUpdated,
    UsageBatchRecorded,
    UsageRecorded,
)
from tsmeter.domain.modelio import TimeLike, build, changed
from tsmeter.errors import (
    QuotaExceededError,
    StorageUnavailableError,
    TsmeterError,
    ValidationError,
)
from tsmeter.limits.monitor import MonitorMixin
from tsmeter.limits.quotas import QuotaDecision
from tsmeter.limits.thresholds import ThresholdsMixin
from tsmeter.metering.reading import ReadingMixin
from tsmeter.metering.recording import RecordingUnit

__all__ = ["Meter"]


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


class Meter(ThresholdsMixin, MonitorMixin, ReadingMixin):
    """Records usage, defines metrics and thresholds, aggregates and answers queries.

    Build one with :func:`tsmeter.connect`; it is a context manager and
    thread-safe. ``timezone`` is the IANA zone periods are computed in.
    """

    # -- metrics ----------------------------------------------------------------------
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
        data = {**changed(metric, changes), "updated_at": datetime.now(UTC)}
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
        enforce: bool = False,
    ) -> UsageRecord:
        """Record one usage event and return it as stored.

        ``id`` is the idempotency key: if a record with this id exists, that
        stored record is returned and nothing is counted again. ``quantity``
        defaults to 1 for COUNT metrics; ``timestamp`` to now (must be aware).
        With ``enforce``, QuotaExceededError is raised instead of recording past a BLOCK
        threshold (see :meth:`check`).
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
            raise exc.unprefixed("records[0]") from None
        with self._unit([row], enforce) as unit:
            refused = unit.reserve()
            if refused is not None:
                stored = self.store.get_record(row.id) if id is not None else None
                if stored is not None:  # a retry of a record stored before: not new usage
                    return UsageRecord.from_row(stored)
                raise QuotaExceededError(_refusal(row, refused[1]), refused[1])
            if self.outbox is not None:  # queued: a duplicate id is dropped on delivery
                self.outbox.put([row], wait=self.durability == "outbox")
                unit.queued()
                return self._recorded(row)
            new = self.store.append([row], time.time_ns())
            before = self.store.get_record(row.id) if new == 0 else None
            unit.stored(new, to_sinks=before is None)
            if before is not None:
                return UsageRecord.from_row(before)
        return self._recorded(row)

    def _unit(self, rows: list[RecordRow], enforce: bool) -> RecordingUnit:
        """The unit of work of one recording (see :mod:`tsmeter.metering.recording`)."""
        return RecordingUnit(self._quotas, rows, enforce=enforce,
                             sinks=self._to_sinks if self._sinks else None)  # fmt: skip

    def _recorded(self, row: RecordRow) -> UsageRecord:
        record = UsageRecord.from_row(row)
        if self.events.wants(UsageRecorded):
            self.events.publish(UsageRecorded(record=record))
        return record

    def record_batch(
        self, records: Iterable[Mapping[str, Any] | UsageRecord], *, enforce: bool = False
    ) -> BatchResult:
        """Record many events: all are validated first (one bad record stores nothing), then
        written (in transactions of ``chunk_size`` where the store has transactions). Ids
        already stored count once.

        Records are mappings with the fields of :class:`UsageRecord` (camelCase
        or snake_case) or UsageRecord objects. If the store fails part-way,
        StorageUnavailableError says how many were stored; retrying with the
        same ids is safe. With ``enforce``, the whole batch is refused with
        QuotaExceededError if one of its records would pass a BLOCK threshold.
        Example::

            meter.record_batch([{"metricKey": "api_calls", "subjectType": "org",
                                 "subjectId": "org-1", "id": "req-1"}])
        """
        now = time.time_ns()
        with _gc_paused():
            rows = self._intake.rows(records, now)
            with self._unit(rows, enforce) as unit:
                refused = unit.reserve()
                if refused is not None:
                    index, decision = refused
                    raise QuotaExceededError(
                        f"records[{index}]: {_refusal(rows[index], decision)}; nothing recorded",
                        decision,
                    )
                if self.outbox is not None:
                    self.outbox.put(rows, wait=self.durability == "outbox")
                    unit.queued()
                    result = BatchResult(recorded=0, duplicates=0, queued=len(rows))
                    self._batch_recorded(result, rows)
                    return result
                recorded = self._append_all(rows, now)
                unit.stored(recorded)
        result = BatchResult(recorded=recorded, duplicates=len(rows) - recorded)
        self._batch_recorded(result, rows)
        return result

    def _append_all(self, rows: list[RecordRow], now: int) -> int:
        """Write validated rows to the store; return how many were new. A store that takes a
        stream gets them in one call (its writes do not pause between chunks); others get
        one ``append`` per ``chunk_size`` rows. A failure says how many are known stored."""
        done = 0

        def stored(n: int) -> None:
            nonlocal done
            done = n

        stream = self.capabilities.stream
        recorded = 0
        try:
            if stream is not None:
                recorded = int(stream.append_stream([rows], stored))
            else:
                for i in range(0, len(rows), self.chunk_size):
                    recorded += self.store.append(rows[i : i + self.chunk_size], now)
                    done = min(len(rows), i + self.chunk_size)
        except TsmeterError as exc:
            held = exc.records_stored if isinstance(exc, StorageUnavailableError) else None
            if held is not None:  # the store checked which records it holds
                stored_text = f"{held} of {len(rows)} records are stored"
            else:
                stored_text = f"{done} of {len(rows)} records were stored before the failure"
            error = StorageUnavailableError(
                f"{exc} ({stored_text}; retry with the same ids to record the rest exactly once)"
            )
            error.records_stored = held if held is not None else done
            raise error from exc
        return recorded

    def _batch_recorded(self, result: BatchResult, rows: list[RecordRow]) -> None:
        if self.events.wants(UsageBatchRecorded):
            keys = frozenset(r.metric_key for r in rows)
            self.events.publish(UsageBatchRecorded(result=result, metric_keys=keys))

    def validate_records(
        self, records: Iterable[Mapping[str, Any] | UsageRecord]
    ) -> list[ValidationError | None]:
        """Check records one by one without storing anything: ``None`` for each good record,
        else the error naming its field. Example: ``meter.validate_records([{"metricKey": "x"}])``.
        """
        return self._intake.check(records)


def _refusal(row: RecordRow, decision: QuotaDecision) -> str:
    """Why a record was refused, for QuotaExceededError."""
    end = decision.window_end.isoformat() if decision.window_end else "never"
    return (
        f"quota exceeded: {row.metric_key} for {row.subject_type} {row.subject_id!r} has used"
        f" {decision.used:g} of {decision.limit:g} in the window ending {end}"
        f" (BLOCK threshold {decision.threshold_id})"
    )
