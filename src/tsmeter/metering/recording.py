"""Recording usage: usage.record / usage.recordBatch, one unit of work per call.

:class:`Recorder` validates records into rows (:mod:`tsmeter.metering.intake`) and runs them
through a :class:`RecordingUnit`: with ``enforce`` it reserves the rows against the BLOCK
thresholds first; the recorder then queues or stores them and says how it went
(:meth:`RecordingUnit.queued` or :meth:`RecordingUnit.stored`), which counts them in the quota
view and hands them to the record sinks (the PostHog mirror). If anything fails before that,
leaving the ``with`` block rolls the reservation back, here and nowhere else.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from types import TracebackType
from typing import Any

from tsmeter.domain import BatchResult, MetricDefinition, RecordRow, UsageRecord
from tsmeter.domain.events import EventBus, UsageBatchRecorded, UsageRecorded
from tsmeter.domain.modelio import TimeLike
from tsmeter.errors import (
    QuotaExceededError,
    StorageUnavailableError,
    TsmeterError,
    ValidationError,
)
from tsmeter.limits.quotas import QuotaDecision, QuotaView
from tsmeter.metering.intake import Intake
from tsmeter.outbox.durable import Outbox
from tsmeter.ports import StreamingStore, UsageStore

__all__ = ["RecordSinks", "Recorder", "RecordingUnit"]

log = logging.getLogger("tsmeter.meter")

Sink = Callable[[Sequence[RecordRow]], None]


class RecordSinks:
    """The functions that get the rows of every recording once they are stored; calling the
    collection calls each. A failing sink is logged, never raised: it cannot fail recording.

    Example::

        sinks = RecordSinks()
        remove = sinks.add(mirror.rows)
        sinks(rows)
    """

    def __init__(self) -> None:
        self._sinks: list[Sink] = []

    def add(self, sink: Sink) -> Callable[[], None]:
        """Add ``sink``; return a function that removes it."""
        self._sinks.append(sink)

        def remove() -> None:
            if sink in self._sinks:
                self._sinks.remove(sink)

        return remove

    def __bool__(self) -> bool:
        return bool(self._sinks)

    def __call__(self, rows: Sequence[RecordRow]) -> None:
        for sink in list(self._sinks):
            try:
                sink(rows)
            except Exception:
                log.exception("record sink %r failed on %d rows", sink, len(rows))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is turned into rows.

    A batch allocates millions of small tuples that hold no cycles, and the collector's
    young-generation passes over them are a large part of the batch's cost. Reference
    counting still frees everything; the collector resumes after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class RecordingUnit:
    """The quota side of one ``record``/``record_batch`` call, as a context manager.

    Example::

        with RecordingUnit(quotas, rows, enforce=True, sinks=to_sinks) as unit:
            refused = unit.reserve()
            ...
            unit.stored(store.append(rows, now))
    """

    def __init__(
        self,
        quotas: QuotaView,
        rows: Sequence[RecordRow],
        *,
        enforce: bool,
        sinks: Callable[[Sequence[RecordRow]], None] | None = None,
    ) -> None:
        self._quotas = quotas
        self.rows = rows
        self.enforce = enforce
        self._sinks = sinks
        self._done = False

    def __enter__(self) -> RecordingUnit:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None and not self._done:
            self.rollback()

    def reserve(self) -> tuple[int, QuotaDecision] | None:
        """With ``enforce``: count the rows against the BLOCK thresholds; the index and
        decision of the first refused (nothing stays counted then), else None."""
        if not self.enforce:
            return None
        refused = self._quotas.reserve(self.rows)
        if refused is not None:
            self._done = True  # the view took the reservation back itself
        return refused

    def queued(self) -> None:
        """The rows are in the outbox: they count from now on (their sinks run on delivery)."""
        self._count(every_row_new=True)

    def stored(self, new: int, *, to_sinks: bool = True) -> None:
        """The store took the rows, ``new`` of them new: count them if all were new, else read
        the totals again (which ones were stored before is unknown); then the sinks, unless
        ``to_sinks`` is False (a single record found stored before)."""
        self._count(every_row_new=new == len(self.rows))
        if to_sinks and self._sinks is not None and self.rows:
            self._sinks(self.rows)

    def rollback(self) -> None:
        """Forget what the rows count in the quota view (read again from the store)."""
        self._done = True
        self._quotas.forget(self.rows)

    def _count(self, *, every_row_new: bool) -> None:
        self._done = True
        if not every_row_new:
            self._quotas.forget(self.rows)
        elif not self.enforce:  # reserved rows are counted already
            self._quotas.add(self.rows)


class Recorder:
    """Records usage into ``outbox`` when there is one (``durable``: each call returns once
    its rows are committed to the outbox file), else into ``store`` (through ``stream`` when
    the store takes one, else ``chunk_size`` rows per ``append``).

    Example::

        recorder = Recorder(store, Intake(metrics.resolve), quotas, EventBus(), RecordSinks(),
                            metric_of=metrics.resolve)
        recorder.record("api_calls", "org", "org-1", id="req-42")
    """

    def __init__(
        self,
        store: UsageStore,
        intake: Intake,
        quotas: QuotaView,
        bus: EventBus,
        sinks: RecordSinks,
        *,
        outbox: Outbox | None = None,
        durable: bool = True,
        stream: StreamingStore | None = None,
        chunk_size: int = 200_000,
        metric_of: Callable[[str, str | None], MetricDefinition],
    ) -> None:
        self._store = store
        self._metric_of = metric_of
        self._intake = intake
        self._quotas = quotas
        self._bus = bus
        self._sinks = sinks
        self._outbox = outbox
        self._durable = durable
        self._stream = stream
        self.chunk_size = chunk_size

    def record(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        quantity: int | float | str | Decimal | None = None,
        *,
        timestamp: TimeLike | None = None,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        org_id: str | None = None,
        enforce: bool = False,
    ) -> UsageRecord:
        """Record one usage event and return it as stored; a retried ``id`` returns the
        stored record and counts nothing again (see :meth:`tsmeter.Meter.record`)."""
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
                stored = self._store.get_record(row.id) if id is not None else None
                if stored is not None:  # a retry of a record stored before: not new usage
                    return self._record_of(stored)
                raise QuotaExceededError(_refusal(row, refused[1]), refused[1])
            if self._outbox is not None:  # queued: a duplicate id is dropped on delivery
                self._outbox.put([row], wait=self._durable)
                unit.queued()
                return self._recorded(row)
            new = self._store.append([row], time.time_ns())
            before = self._store.get_record(row.id) if new == 0 else None
            unit.stored(new, to_sinks=before is None)
            if before is not None:
                return self._record_of(before)
        return self._recorded(row)

    def record_batch(
        self, records: Iterable[Mapping[str, Any] | UsageRecord], *, enforce: bool = False
    ) -> BatchResult:
        """Record many events: all are validated first (one bad record stores nothing), then
        queued or written; ids already stored count once (see
        :meth:`tsmeter.Meter.record_batch`)."""
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
                if self._outbox is not None:
                    self._outbox.put(rows, wait=self._durable)
                    unit.queued()
                    result = BatchResult(recorded=0, duplicates=0, queued=len(rows))
                    self._batch_recorded(result, rows)
                    return result
                recorded = self._append_all(rows, now)
                unit.stored(recorded)
        result = BatchResult(recorded=recorded, duplicates=len(rows) - recorded)
        self._batch_recorded(result, rows)
        return result

    def validate_records(
        self, records: Iterable[Mapping[str, Any] | UsageRecord]
    ) -> list[ValidationError | None]:
        """Check records one by one without storing anything: ``None`` for each good record,
        else the error naming its field."""
        return self._intake.check(records)

    def _unit(self, rows: list[RecordRow], enforce: bool) -> RecordingUnit:
        return RecordingUnit(self._quotas, rows, enforce=enforce,
                             sinks=self._sinks if self._sinks else None)  # fmt: skip

    def _record_of(self, row: RecordRow) -> UsageRecord:
        """The record of a row (its quantity a Decimal at its metric's precision)."""
        return UsageRecord.from_row(row, self._metric_of(row.metric_key, row.org_id).precision)

    def _recorded(self, row: RecordRow) -> UsageRecord:
        record = self._record_of(row)
        if self._bus.wants(UsageRecorded):
            self._bus.publish(UsageRecorded(record=record))
        return record

    def _append_all(self, rows: list[RecordRow], now: int) -> int:
        """Write validated rows to the store; return how many were new. A store that takes a
        stream gets them in one call (its writes do not pause between chunks); others get
        one ``append`` per ``chunk_size`` rows. A failure says how many are known stored."""
        done = 0

        def stored(n: int) -> None:
            nonlocal done
            done = n

        recorded = 0
        try:
            if self._stream is not None:
                recorded = int(self._stream.append_stream([rows], stored))
            else:
                for i in range(0, len(rows), self.chunk_size):
                    recorded += self._store.append(rows[i : i + self.chunk_size], now)
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
        if self._bus.wants(UsageBatchRecorded):
            keys = frozenset(r.metric_key for r in rows)
            self._bus.publish(UsageBatchRecorded(result=result, metric_keys=keys))


def _refusal(row: RecordRow, decision: QuotaDecision) -> str:
    """Why a record was refused, for QuotaExceededError."""
    end = decision.window_end.isoformat() if decision.window_end else "never"
    return (
        f"quota exceeded: {row.metric_key} for {row.subject_type} {row.subject_id!r} has used"
        f" {decision.used} of {decision.limit} in the window ending {end}"
        f" (BLOCK threshold {decision.threshold_id})"
    )
