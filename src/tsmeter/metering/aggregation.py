"""Running aggregation: the store rolls records up into summaries, ``usage.aggregated`` is
published.

The roll-up itself belongs to each store (:meth:`tsmeter.ports.UsageStore.rollup`); this
service turns its statistics into an :class:`~tsmeter.domain.AggregationResult` and tells
the bus.
"""

from __future__ import annotations

from collections.abc import Callable

from tsmeter.domain import AggregationResult, PeriodType
from tsmeter.domain.events import EventBus, UsageAggregated
from tsmeter.domain.modelio import TimeLike, ns
from tsmeter.domain.modelio import period_type as parse_period
from tsmeter.domain.periods import Calendar
from tsmeter.domain.validation import from_ns
from tsmeter.ports import UsageStore

__all__ = ["Aggregation"]


class Aggregation:
    """Rolls ``store``'s records up into summaries of periods in ``calendar``'s zone;
    ``settle`` runs first (the Meter lets its outbox deliver what it accepted).

    Example: ``Aggregation(store, Calendar("UTC"), EventBus()).aggregate("DAILY")``.
    """

    def __init__(
        self,
        store: UsageStore,
        calendar: Calendar,
        bus: EventBus,
        *,
        settle: Callable[[], object] = lambda: None,
    ) -> None:
        self._store = store
        self._calendar = calendar
        self._bus = bus
        self._settle = settle

    def aggregate(
        self,
        period_type: PeriodType | str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> AggregationResult:
        """Roll records up into summaries of ``period_type``: without a range every period
        touched since the last run, with one every period overlapping it."""
        self._settle()
        period = parse_period(period_type)
        stats = self._store.rollup(period, self._calendar, ns("start", start), ns("end", end))
        result = AggregationResult(
            period_type=period,
            summaries_written=stats.summaries_written,
            periods_recomputed=stats.periods_recomputed,
            records_seen=stats.records_seen,
            range_start=None if stats.range_start is None else from_ns(stats.range_start),
            range_end=None if stats.range_end is None else from_ns(stats.range_end),
        )
        self._bus.publish(UsageAggregated(result=result))
        return result
