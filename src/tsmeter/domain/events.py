"""Typed in-process events and the bus that delivers them.

>>> bus = EventBus()
>>> seen = []
>>> unsubscribe = bus.subscribe(MetricDefined, seen.append)
>>> bus.publish(MetricDefined(metric=MetricDefinition(key="api_calls")))
>>> seen[0].name
'metric.defined'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from tsmeter.domain import (
    AggregationResult,
    BatchResult,
    MetricDefinition,
    UsageAlert,
    UsageRecord,
    UsageThreshold,
)
from tsmeter.domain.corrections import Correction

__all__ = [
    "Event",
    "EventBus",
    "MetricDefined",
    "MetricDeleted",
    "MetricUpdated",
    "ThresholdApproaching",
    "ThresholdEvent",
    "ThresholdExceeded",
    "ThresholdResolved",
    "UsageAggregated",
    "UsageBatchRecorded",
    "UsageCorrected",
    "UsageRecorded",
]

log = logging.getLogger("tsmeter.events")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event; ``name`` is the contract's dotted name."""

    name: ClassVar[str] = "event"
    occurred_at: datetime = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class MetricDefined(Event):
    """A metric was defined."""

    name: ClassVar[str] = "metric.defined"
    metric: MetricDefinition


@dataclass(frozen=True, kw_only=True)
class MetricUpdated(Event):
    """A metric definition changed."""

    name: ClassVar[str] = "metric.updated"
    metric: MetricDefinition


@dataclass(frozen=True, kw_only=True)
class MetricDeleted(Event):
    """A metric was deleted (``purged``: its records too)."""

    name: ClassVar[str] = "metric.deleted"
    metric: MetricDefinition
    purged_records: int = 0


@dataclass(frozen=True, kw_only=True)
class UsageRecorded(Event):
    """One record was stored by ``Meter.record`` (not sent for duplicates)."""

    name: ClassVar[str] = "usage.recorded"
    record: UsageRecord


@dataclass(frozen=True, kw_only=True)
class UsageBatchRecorded(Event):
    """A batch went through ``Meter.record_batch``."""

    name: ClassVar[str] = "usage.batch_recorded"
    result: BatchResult
    metric_keys: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class UsageCorrected(Event):
    """A stored record was cancelled or amended (published once, by the call that applied
    the correction; a repeated correction id publishes nothing)."""

    name: ClassVar[str] = "usage.corrected"
    correction: Correction


@dataclass(frozen=True, kw_only=True)
class UsageAggregated(Event):
    """An aggregation run finished."""

    name: ClassVar[str] = "usage.aggregated"
    result: AggregationResult


@dataclass(frozen=True, kw_only=True)
class ThresholdEvent(Event):
    """A subject's usage crossed (or fell back below) a threshold in one period window.

    Subscribe to this class for all three kinds. ``alert`` is the UsageAlert as
    stored after the change; ``threshold`` the limit as it was evaluated.
    """

    name: ClassVar[str] = "threshold"
    alert: UsageAlert
    threshold: UsageThreshold


@dataclass(frozen=True, kw_only=True)
class ThresholdApproaching(ThresholdEvent):
    """Usage reached the warn level (default 80 % of the threshold)."""

    name: ClassVar[str] = "threshold.approaching"


@dataclass(frozen=True, kw_only=True)
class ThresholdExceeded(ThresholdEvent):
    """Usage reached the threshold."""

    name: ClassVar[str] = "threshold.exceeded"


@dataclass(frozen=True, kw_only=True)
class ThresholdResolved(ThresholdEvent):
    """Usage fell below the level of an open alert (a raised limit or a correction)."""

    name: ClassVar[str] = "threshold.resolved"


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], None]


class EventBus:
    """Delivers events synchronously to subscribers of their class (or of ``Event``: all).

    A failing handler is logged and does not stop the others, nor the
    operation that published the event (which has already happened).
    """

    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Handler]] = {}
        self._lock = threading.Lock()

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call ``handler`` for every event of ``event_type``; returns an unsubscribe function."""
        with self._lock:
            self._handlers.setdefault(event_type, []).append(handler)

        def unsubscribe() -> None:
            with self._lock:
                handlers = self._handlers.get(event_type, [])
                if handler in handlers:
                    handlers.remove(handler)

        return unsubscribe

    def wants(self, event_type: type[Event]) -> bool:
        """Whether anyone listens to ``event_type`` (so costly events can be skipped)."""
        return any(self._handlers.get(cls) for cls in event_type.__mro__)

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to the subscribers of its class, then of each base class."""
        handlers = [h for cls in type(event).__mro__ for h in self._handlers.get(cls, ())]
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                log.exception("event handler %r failed on %s", handler, event.name)
