"""What the mirror buffers, and how it becomes PostHog events (on the sender thread, so the
meter's record path and event bus only append to a buffer)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.events import ThresholdEvent
from tsmeter.errors import NotFoundError
from tsmeter.integrations.posthog.events import (
    CaptureEvent,
    record_event,
    summary_event,
    threshold_event,
)
from tsmeter.integrations.posthog.settings import PostHogSettings

if TYPE_CHECKING:
    from tsmeter.metering.meter import Meter

__all__ = ["EventBuilder", "Source", "SummaryRequest", "describe_source"]

_UNIT_TTL = 30.0


@dataclass(frozen=True)
class SummaryRequest:
    """Send the summaries of one aggregation run: every metric, one period type, a range."""

    period_type: PeriodType
    start: datetime
    end: datetime


#: What the mirror buffers before events are built.
Source = RecordRow | ThresholdEvent | SummaryRequest


def describe_source(item: Source | CaptureEvent) -> str:
    """A few words for a log line: ``record 'req-1'``."""
    if isinstance(item, RecordRow):
        return f"record {item.id!r}"
    if isinstance(item, ThresholdEvent):
        return f"{item.name} of alert {item.alert.id!r}"
    if isinstance(item, SummaryRequest):
        return f"{item.period_type.value.lower()} summaries from {item.start.isoformat()}"
    return f"event {item.name} {item.uuid}"


class EventBuilder:
    """Builds events from buffered items, looking metric units up in ``meter`` (cached 30 s).

    Example: ``EventBuilder(settings, meter).build(row)`` → ``[CaptureEvent(...)]``.
    """

    def __init__(self, settings: PostHogSettings, meter: Meter | None = None) -> None:
        self.settings = settings
        self.meter = meter
        self._units: dict[tuple[str, str | None], tuple[float, str]] = {}

    def build(self, item: Source) -> list[CaptureEvent]:
        """The events of one buffered item (a summary request reads the store)."""
        if isinstance(item, RecordRow):
            unit = self.unit(item.metric_key, item.org_id)
            return [record_event(item, self.settings, unit=unit)]
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
        hit = self._units.get((metric_key, org_id))
        if hit is not None and time.monotonic() - hit[0] < _UNIT_TTL:
            return hit[1]
        if self.meter is None:
            return ""
        for scope in dict.fromkeys([org_id, None]):
            try:
                unit = self.meter.get_metric(metric_key, scope).unit
            except NotFoundError:
                continue
            except Exception:  # the store is gone (shutting down): the unit is only informative
                return hit[1] if hit is not None else ""
            self._units[(metric_key, org_id)] = (time.monotonic(), unit)
            return unit
        self._units[(metric_key, org_id)] = (time.monotonic(), "")
        return ""

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
            events += [summary_event(s, self.settings, unit=metric.unit) for s in found]
        return events
