"""The ports: what the service layer needs from a store, as Protocols.

One port per concern. Adapters in ``tsmeter.adapters`` implement them; the
service layer (:mod:`tsmeter.metering.meter`) is the only place that strings them
together, and :mod:`tsmeter.bootstrap` the only place that picks adapters.
Times are nanoseconds since the Unix epoch (UTC) throughout.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable

from tsmeter.domain import (
    AlertStatus,
    MetricDefinition,
    PeriodType,
    RecordRow,
    UsageAlert,
    UsageThreshold,
)
from tsmeter.domain.periods import Calendar

__all__ = [
    "Catalog",
    "DeliveryRow",
    "EventRow",
    "RecordQuery",
    "RollupStats",
    "SummaryQuery",
    "SummaryRow",
    "UsageStore",
]


@dataclass(frozen=True)
class RecordQuery:
    """Which raw records to read: one metric, optionally one subject, a time range."""

    metric_key: str
    org_id: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    start: int | None = None
    end: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class SummaryQuery:
    """Which summaries to read: one metric and period type over ``[start, end)``."""

    metric_key: str
    period_type: PeriodType
    start: int
    end: int
    org_id: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None


class SummaryRow(NamedTuple):
    """The roll-up components of one series over one period."""

    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None
    period_start: int
    period_end: int
    record_count: int
    sum: float
    min: float
    max: float
    last_ts: int
    last_value: float


class EventRow(NamedTuple):
    """One metering event as stored: what happened, when, to which series; details in
    ``data`` (a JSON object)."""

    ts: int
    name: str
    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None
    data: str


class DeliveryRow(NamedTuple):
    """A notification stored with the alert change that causes it, in the same transaction
    (``channel`` email or webhook; ``error`` set: recorded as failed, never attempted)."""

    id: str
    alert_id: str
    event: str
    channel: str
    target: str
    metric_key: str
    subject_type: str
    subject_id: str
    payload: str
    error: str | None = None


@dataclass(frozen=True)
class RollupStats:
    """What a roll-up run did."""

    summaries_written: int
    periods_recomputed: int
    records_seen: int
    range_start: int | None
    range_end: int | None


@runtime_checkable
class UsageStore(Protocol):
    """Where raw usage records and their summaries live."""

    def append(self, rows: Sequence[RecordRow], recorded_at: int) -> int:
        """Store rows whose id is new; return how many were new. Atomic per call."""
        ...

    def get_record(self, record_id: str) -> RecordRow | None:
        """The stored record with this id, or None."""
        ...

    def iter_records(self, query: RecordQuery) -> Iterator[RecordRow]:
        """Records matching ``query`` ordered by time, streamed."""
        ...

    def rollup(
        self,
        period: PeriodType,
        calendar: Calendar,
        start: int | None = None,
        end: int | None = None,
    ) -> RollupStats:
        """Bring summaries of ``period`` up to date.

        Without a range: every period touched by records stored since the last
        run (late records included). With a range: recompute every period that
        overlaps it. Re-running gives identical summaries.
        """
        ...

    def summaries(self, query: SummaryQuery, calendar: Calendar) -> list[SummaryRow]:
        """Fresh summaries over the query's range: stored ones where no record arrived since
        they were computed, computed from raw records where one did."""
        ...

    def purge_metric(self, metric_key: str, org_id: str | None) -> int:
        """Delete every record and summary of a metric; return the records deleted."""
        ...

    def append_events(self, events: Sequence[EventRow]) -> None:
        """Store metering events (threshold crossings, aggregation runs)."""
        ...

    def list_events(
        self, start: int | None = None, end: int | None = None, name: str | None = None
    ) -> list[EventRow]:
        """Events in ``[start, end)`` (optionally of one name, or names starting with
        ``name`` + "."), oldest first."""
        ...

    def close(self) -> None:
        """Release connections; everything acknowledged stays stored."""
        ...


@runtime_checkable
class Catalog(Protocol):
    """Metric definitions and thresholds (the state store)."""

    def add_metric(self, metric: MetricDefinition) -> None:
        """Store a new metric; ConflictError if its key exists in its org scope."""
        ...

    def replace_metric(self, metric: MetricDefinition) -> None:
        """Overwrite a stored metric (same id)."""
        ...

    def remove_metric(self, metric_id: str) -> None:
        """Delete a metric definition by id."""
        ...

    def find_metric(self, key: str, org_id: str | None) -> MetricDefinition | None:
        """The metric with this key in exactly this org scope (None = global)."""
        ...

    def list_metrics(self) -> list[MetricDefinition]:
        """Every metric, global and org-scoped, ordered by org then key."""
        ...

    def add_threshold(self, threshold: UsageThreshold) -> None:
        """Store a new threshold."""
        ...

    def replace_threshold(self, threshold: UsageThreshold) -> None:
        """Overwrite a stored threshold (same id)."""
        ...

    def remove_threshold(self, threshold_id: str) -> bool:
        """Delete a threshold; False if there was none."""
        ...

    def get_threshold(self, threshold_id: str) -> UsageThreshold | None:
        """The threshold with this id, or None."""
        ...

    def list_thresholds(self) -> list[UsageThreshold]:
        """Every threshold."""
        ...

    def open_alert(
        self, alert: UsageAlert, window_start: int, deliveries: Sequence[DeliveryRow] = ()
    ) -> bool:
        """Store a new PENDING alert unless its (threshold, subject, window, level) has an
        open alert, or one resolved by hand; return whether it was stored. ``deliveries``
        are queued (pending) in the same transaction, only if the alert is stored."""
        ...

    def set_alert_status(
        self,
        alert_id: str,
        status: AlertStatus,
        at: datetime,
        *,
        automatic: bool = False,
        deliveries: Sequence[DeliveryRow] = (),
    ) -> UsageAlert | None:
        """Acknowledge or resolve an alert (``automatic``: resolved by the monitor); the
        updated alert, or None if there is none. ``deliveries`` are queued in the same
        transaction, only if the alert exists."""
        ...

    def open_alerts(self, threshold_id: str, window_start: int) -> list[UsageAlert]:
        """The alerts of a threshold and window that are not resolved."""
        ...

    def get_alert(self, alert_id: str) -> UsageAlert | None:
        """The alert with this id, or None."""
        ...

    def list_alerts(self, status: AlertStatus | None = None) -> list[UsageAlert]:
        """Alerts (optionally of one status), newest first."""
        ...
