"""MeterBase: what every part of the Meter shares (ports, calendar, events, metric lookup)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from tsmeter.domain import MetricDefinition, PeriodType, RecordRow, ResetPeriod
from tsmeter.domain.events import Event, EventBus
from tsmeter.domain.modelio import period_type as parse_period
from tsmeter.domain.periods import Calendar
from tsmeter.errors import NotFoundError, ValidationError
from tsmeter.limits.quotas import QuotaView
from tsmeter.metering.intake import Intake
from tsmeter.outbox.durable import Outbox
from tsmeter.ports import Capabilities, Catalog, UsageStore

__all__ = ["MeterBase"]

log = logging.getLogger("tsmeter.meter")

E = TypeVar("E", bound=Event)
B = TypeVar("B", bound="MeterBase")


class MeterBase:
    """Holds the ports and the calendar; :class:`tsmeter.metering.meter.Meter` adds the
    operations."""

    def __init__(
        self,
        store: UsageStore,
        catalog: Catalog,
        *,
        timezone: str = "UTC",
        chunk_size: int = 200_000,
        bus: EventBus | None = None,
        metric_cache_seconds: float = 30.0,
        outbox: str | None = None,
        durability: str = "outbox",
        outbox_options: dict[str, Any] | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        #: what the store can do beyond the UsageStore port, as bootstrap wired it
        self.capabilities = capabilities or Capabilities()
        self.calendar = Calendar(timezone)
        self.timezone = timezone
        self.chunk_size = chunk_size
        self.events = bus or EventBus()
        self._metric_ttl = metric_cache_seconds
        self._metrics: dict[tuple[str, str | None], tuple[float, MetricDefinition]] = {}
        self._intake = Intake(self._resolve_metric)
        self._quotas = QuotaView(store, catalog, self.calendar, self._resolve_metric)
        self._closed = False
        self._sinks: list[Callable[[Sequence[RecordRow]], None]] = []
        self._close_hooks: list[Callable[[], object]] = []
        #: the PostHog mirror attached by :func:`tsmeter.connect`, if one is configured
        self.mirror: Any = None
        if durability not in ("outbox", "memory"):
            raise ValidationError("durability", f"must be 'outbox' or 'memory', got {durability!r}")
        self.durability = durability
        self.outbox: Outbox | None = None
        if outbox is not None:
            # a store that takes a stream of parts gets the outbox's batches as one
            streams = self.capabilities.stream is not None
            probe = self.capabilities.probe
            self.outbox = Outbox(outbox, self._deliver, after=self._to_sinks,
                                 stream=self._deliver_stream if streams else None,
                                 reachable=probe.reachable if probe is not None else None,
                                 **(outbox_options or {}))  # fmt: skip

    def _deliver(self, rows: list[RecordRow]) -> None:
        """The outbox's way into the store."""
        self.store.append(rows, time.time_ns())

    def _deliver_stream(
        self, parts: Iterator[list[RecordRow]], stored: Callable[[int], None]
    ) -> None:
        """The outbox's way into a store that takes a stream of parts."""
        assert self.capabilities.stream is not None  # only handed to the outbox then
        self.capabilities.stream.append_stream(parts, stored)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every record accepted so far is in the store (with an outbox; at once
        without); return whether that happened within ``timeout`` seconds.
        Example: ``meter.flush()``."""
        return self.outbox is None or self.outbox.drain(timeout)

    def _settle(self) -> None:
        """Before a read: let the outbox deliver what this process accepted (bounded), so a
        read after a write sees it while the store is up."""
        if self.outbox is not None:
            self.outbox.drain(10.0)

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self: B) -> B:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    #: how long ``close`` lets the outbox deliver before it leaves the rest for a later process
    close_timeout = 30.0

    def close(self) -> None:
        """Release the store. Without an outbox every record acknowledged so far is stored;
        with one, ``close`` delivers for up to ``close_timeout`` seconds and what remains
        stays in the outbox file for the next process on it."""
        if not self._closed:
            self._closed = True
            if self.outbox is not None:
                self.outbox.close(self.close_timeout)
            for hook in reversed(self._close_hooks):
                try:
                    hook()
                except Exception:
                    log.exception("a close hook of the meter failed")
            self.store.close()
            store: object = self.store
            if self.catalog is not store:  # one object for both ports: closed once
                self.catalog.close()

    def on_close(self, hook: Callable[[], object]) -> None:
        """Call ``hook`` when the meter closes: after the outbox delivered, before the store
        closes (hooks run last-added first). Example: ``meter.on_close(mirror.shutdown)``."""
        self._close_hooks.append(hook)

    def add_record_sink(self, sink: Callable[[Sequence[RecordRow]], None]) -> Callable[[], None]:
        """Call ``sink`` with the rows of every ``record``/``record_batch`` call once they are
        stored (a batch may include ids that were stored before: sinks must be idempotent
        by record id). A failing sink is logged, never raised: it cannot fail recording.
        Returns a function that removes it. Example: ``meter.add_record_sink(mirror.rows)``.
        """
        self._sinks.append(sink)

        def remove() -> None:
            if sink in self._sinks:
                self._sinks.remove(sink)

        return remove

    def _to_sinks(self, rows: Sequence[RecordRow]) -> None:
        for sink in list(self._sinks):
            try:
                sink(rows)
            except Exception:
                log.exception("record sink %r failed on %d rows", sink, len(rows))

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call ``handler`` for each event of ``event_type`` (``Event`` for all).

        Example: ``meter.subscribe(UsageRecorded, lambda e: print(e.record.id))``.
        Returns a function that unsubscribes.
        """
        return self.events.subscribe(event_type, handler)

    # -- metric lookup ----------------------------------------------------------------
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

    def get_metric(self, key: str, org_id: str | None = None) -> MetricDefinition:
        """The metric ``key`` in ``org_id``'s scope (None: global); NotFoundError if none.

        Example: ``meter.get_metric("api_calls").aggregation_type``.
        """
        metric = self.catalog.find_metric(key, org_id)
        if metric is None:
            scope = f" in org {org_id!r}" if org_id else ""
            raise NotFoundError(f"metric {key!r} not found{scope}")
        return metric

    def _period(self, metric: MetricDefinition, period_type: PeriodType | str | None) -> PeriodType:
        """The period type asked for, else the metric's reset period (MONTHLY for NEVER)."""
        if period_type is not None:
            return parse_period(period_type)
        if metric.reset_period is ResetPeriod.NEVER:
            return PeriodType.MONTHLY
        return PeriodType(metric.reset_period.value)

    def list_metrics(
        self, org_id: str | None = None, *, all_orgs: bool = False
    ) -> list[MetricDefinition]:
        """Metrics of one scope (global by default), or of every scope with ``all_orgs``.

        Example: ``[m.key for m in meter.list_metrics()]``.
        """
        metrics = self.catalog.list_metrics()
        return metrics if all_orgs else [m for m in metrics if m.org_id == org_id]
