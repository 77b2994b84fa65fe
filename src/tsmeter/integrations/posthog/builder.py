"""What the mirror buffers, and how it becomes PostHog events (on the sender thread, so the
meter's record path and event bus only append to a buffer)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from tsmeter.domain import MetricDefinition, PeriodType, RecordRow
from tsmeter.domain.events import ThresholdEvent
from tsmeter.errors import NotFoundError
from tsmeter.integrations.posthog.events import (
    CaptureEvent,
    correction_event,
    record_event,
    summary_event,
    threshold_event,
)
from tsmeter.integrations.posthog.settings import PostHogSettings

if TYPE_CHECKING:
    from tsmeter.metering.meter import Meter

__all__ = [
    "CorrectionItem",
    "EventBuilder",
    "MetricInfo",
    "Source",
    "SummaryRequest",
    "describe_source",
]

_UNIT_TTL = 30.0


@dataclass(frozen=True)
class SummaryRequest:
    """Send the summaries of one aggregation run: every metric, one period type, a range."""

    period_type: PeriodType
    start: datetime
    end: datetime


@dataclass(frozen=True)
class CorrectionItem:
    """Send the ``usage.corrected`` event of one correction (a ``Correction``)."""

    correction: Any


#: What the mirror buffers before events are built.
Source = RecordRow | ThresholdEvent | SummaryRequest | CorrectionItem


def describe_source(item: Source | CaptureEvent) -> str:
    """A few words for a log line: ``record 'req-1'``."""
    if isinstance(item, RecordRow):
        return f"record {item.id!r}"
    if isinstance(item, ThresholdEvent):
        return f"{item.name} of alert {item.alert.id!r}"
    if isinstance(item, SummaryRequest):
        return f"{item.period_type.value.lower()} summaries from {item.start.isoformat()}"
    if isinstance(item, CorrectionItem):
        return f"correction {item.correction.id!r} of record {item.correction.record_id!r}"
    return f"event {item.name} {item.uuid}"


class MetricInfo(NamedTuple):
    """What the events of a metric need from its definition."""

    unit: str
    precision: int
    dimensions: tuple[str, ...] = ()


class EventBuilder:
    """Builds events from buffered items, looking metric units and precisions up in
    ``meter`` (cached 30 s; an expired entry still serves while the store cannot answer).

    A record's row holds its quantity in units of its metric's precision, so a record whose
    metric cannot be found (no meter, or the metric is gone) cannot be built: that is an
    error (the event is counted as failed), never a guessed precision. When the store cannot
    answer (a meter closed before its mirror), the definitions the builder learnt from the
    meter (:meth:`prime`, :meth:`learn`: the mirror feeds it the meter's metric events)
    still give the precision: it never changes for a defined metric.
    Example: ``EventBuilder(settings, meter).build(row)`` → ``[CaptureEvent(...)]``.
    """

    def __init__(self, settings: PostHogSettings, meter: Meter | None = None) -> None:
        self.settings = settings
        self.meter = meter
        self._metrics: dict[tuple[str, str | None], tuple[float, MetricInfo | None]] = {}
        self._known: dict[tuple[str, str | None], MetricInfo] = {}

    def prime(self) -> None:
        """Learn every metric of the meter (one read; nothing if the store cannot answer)."""
        if self.meter is None:
            return
        try:
            metrics = self.meter.list_metrics(all_orgs=True)
        except Exception:  # the store is unreachable: lookups will ask again
            return
        for metric in metrics:
            self.learn(metric)

    def learn(self, metric: MetricDefinition) -> None:
        """Remember a definition (from the meter's metric events)."""
        self._known[(metric.key, metric.org_id)] = _info(metric)

    def forget(self, metric: MetricDefinition) -> None:
        """Forget a deleted definition."""
        self._known.pop((metric.key, metric.org_id), None)

    def build(self, item: Source) -> list[CaptureEvent]:
        """The events of one buffered item (a summary request reads the store)."""
        if isinstance(item, RecordRow):
            info = self.metric(item.metric_key, item.org_id)
            if info is None:
                raise NotFoundError(
                    f"metric {item.metric_key!r} (org {item.org_id!r}): its precision is"
                    f" needed to send record {item.id!r}"
                )
            return [record_event(item, self.settings, unit=info.unit, precision=info.precision,
                                 dimensions=info.dimensions)]  # fmt: skip
        if isinstance(item, CorrectionItem):
            c = item.correction
            info = self.metric(c.metric_key, c.org_id)
            if info is None:
                raise NotFoundError(
                    f"metric {c.metric_key!r} (org {c.org_id!r}): its precision is needed to"
                    f" send correction {c.id!r}"
                )
            return [correction_event(c, info, self.settings)]
        if isinstance(item, ThresholdEvent):
            unit = self.unit(item.alert.metric_key, item.threshold.org_id)
            return [
                threshold_event(
                    item.name,
                    item.alert,
                    item.threshold,
                    self.settings,
                    unit=unit,
                    occurred_at=item.occurred_at,
                )
            ]
        return self.summaries(item)

    def unit(self, metric_key: str, org_id: str | None) -> str:
        """A metric's unit: the org's own definition, else the global one ('' if neither)."""
        try:
            info = self.metric(metric_key, org_id)
        except Exception:  # the store is gone (shutting down): the unit is only informative
            return ""
        return "" if info is None else info.unit

    def metric(self, metric_key: str, org_id: str | None) -> MetricInfo | None:
        """A metric's unit and precision: the org's own definition, else the global one (None
        if neither). Raises what the store raises when it cannot answer and nothing is
        cached."""
        key = (metric_key, org_id)
        hit = self._metrics.get(key)
        if hit is not None and time.monotonic() - hit[0] < _UNIT_TTL:
            return hit[1]
        if self.meter is None:
            return None
        for scope in dict.fromkeys([org_id, None]):
            try:
                metric = self.meter.get_metric(metric_key, scope)
            except NotFoundError:
                continue
            except Exception:
                if hit is not None:  # the store is gone (shutting down): the last answer
                    return hit[1]
                known = self._known.get(key) or self._known.get((metric_key, None))
                if known is not None:  # or what the meter told before
                    return known
                raise
            info = _info(metric)
            self._metrics[key] = (time.monotonic(), info)
            return info
        self._metrics[key] = (time.monotonic(), None)
        return None

    def summaries(self, request: SummaryRequest) -> list[CaptureEvent]:
        """The events of every summary in the request's range, for every metric."""
        meter = self.meter
        if meter is None:
            return []
        events: list[CaptureEvent] = []
        for metric in meter.list_metrics(all_orgs=True):
            found = meter.get_usage_summaries(
                metric.key,
                request.period_type,
                start=request.start,
                end=request.end,
                org_id=metric.org_id,
            )
            events += [
                summary_event(s, self.settings, unit=metric.unit, precision=metric.precision)
                for s in found
            ]
        return events


def _info(metric: MetricDefinition) -> MetricInfo:
    return MetricInfo(metric.unit, metric.precision, metric.dimension_names)
