"""The threshold monitor: usage in each threshold's window against its levels.

``evaluate_thresholds`` compares each threshold with its subjects' usage in the
current window and keeps one alert per (threshold, subject, window, level):

* ``approaching`` opens when usage reaches the warn level (default 80 %) while
  still under the threshold, ``exceeded`` when it reaches the threshold;
* an open alert is resolved (by the monitor) once usage is back under its level,
  after a raised threshold or a correction; the level may then fire again if
  usage crosses it again in the same window;
* an alert resolved by hand stays resolved for the rest of its window;
* a new window starts with no alerts.

A threshold is evaluated in bulk, whatever the number of subjects: one read of its window's
usage (for ``*``, every subject of the type at once), one transaction resolving the alerts
whose usage fell, one opening the new ones (subjects whose alert of the level is open already
cost nothing more), one write of their events.

Alerts live in the catalog, so a restarted monitor neither repeats nor forgets
them, and two monitors running at once open each alert once. An alert's notifications
(one per notify email and one for the webhook) are queued in the transaction that opens or
resolves it; a delivery worker sends them (:mod:`tsmeter.integrations.notify`). Each change is
published on the event bus (``ThresholdApproaching``, ``ThresholdExceeded``,
``ThresholdResolved``) and written to the store's metering-event log
(:mod:`tsmeter.limits.event_log`). What people do with alerts is in :mod:`tsmeter.limits.alerts`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, localcontext

from tsmeter.domain import (
    AlertStatus,
    EvaluationResult,
    MetricDefinition,
    UsageAlert,
    UsageThreshold,
)
from tsmeter.domain.events import (
    EventBus,
    ThresholdApproaching,
    ThresholdEvent,
    ThresholdExceeded,
    ThresholdResolved,
)
from tsmeter.domain.modelio import TimeLike, ns
from tsmeter.domain.periods import Calendar
from tsmeter.domain.validation import from_ns
from tsmeter.errors import SeriesError
from tsmeter.integrations.notify.plan import deliveries_for
from tsmeter.limits.event_log import EventLog
from tsmeter.limits.windows import (
    LIFETIME_END,
    threshold_period,
    window,
    window_totals,
)
from tsmeter.ports import AlertOpening, AlertResolution, Catalog, UsageStore

__all__ = ["Monitor"]

log = logging.getLogger("tsmeter.monitor")

APPROACHING = "approaching"
EXCEEDED = "exceeded"


class Monitor:
    """Evaluates thresholds against the store's usage and keeps their alerts in the catalog.

    ``settle`` runs before usage is read (the Meter lets its outbox deliver first).
    Example::

        monitor = Monitor(store, catalog, Calendar("UTC"), EventLog(store), EventBus())
        monitor.evaluate_thresholds().exceeded
    """

    def __init__(
        self,
        store: UsageStore,
        catalog: Catalog,
        calendar: Calendar,
        event_log: EventLog,
        bus: EventBus,
        *,
        settle: Callable[[], object] = lambda: None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._calendar = calendar
        self._event_log = event_log
        self._bus = bus
        self._settle = settle

    def evaluate_thresholds(self, now: TimeLike | None = None) -> EvaluationResult:
        """Compare every threshold with usage in its current window; open and resolve alerts
        (see the module docstring). ``now`` defaults to the current time."""
        self._settle()
        instant = ns("now", now) if now is not None else time.time_ns()
        assert instant is not None
        counts = {"thresholds": 0, "subjects": 0, APPROACHING: 0, EXCEEDED: 0, "resolved": 0}
        errors: list[str] = []
        for threshold in self._catalog.list_thresholds():
            metric = self._catalog.find_metric(threshold.metric_key, threshold.org_id)
            if metric is None:
                continue  # the metric was deleted; the threshold is inert
            counts["thresholds"] += 1
            failures: list[SeriesError] = []
            try:
                self._evaluate(threshold, metric, instant, counts, failures)
            except SeriesError as exc:  # one subject's usage cannot be read: its error only
                failures.append(exc)
            errors.extend(f"threshold {threshold.id}: {exc}" for exc in failures)
        for error in errors:
            log.error("%s", error)
        return EvaluationResult(**counts, failed=len(errors), errors=errors)

    def _evaluate(
        self, threshold: UsageThreshold, metric: MetricDefinition, now: int,
        counts: dict[str, int], failures: list[SeriesError],
    ) -> None:  # fmt: skip
        """One threshold in bulk: one read of its window's usage (every subject of a ``*``
        threshold at once), then the alerts to resolve in one batch and those to open in
        another, each one transaction with its deliveries."""
        period = threshold_period(metric, threshold)
        start, end = window(self._calendar, period, now)
        one = None if threshold.subject_id == "*" else threshold.subject_id
        totals = window_totals(self._store, self._calendar, metric, period, (start, end),
                               threshold.subject_type, one, failures, as_of=now)  # fmt: skip
        usage = {s: metric.usage(t.value(metric.aggregation_type))
                 for s, t in totals.items()}  # fmt: skip
        if one is not None:
            usage.setdefault(one, _ZERO)
        warn = threshold.warn_threshold or threshold.threshold
        events: list[ThresholdEvent] = []
        still_open: set[tuple[str, str]] = set()  # (subject, level) with an open alert
        resolving: list[tuple[AlertResolution, ThresholdEvent]] = []
        for alert in self._catalog.open_alerts(threshold.id, start):
            value = usage.get(alert.subject_id, _ZERO)
            floor = threshold.threshold if alert.level == EXCEEDED else warn
            if alert.subject_type != threshold.subject_type or value >= floor:
                if alert.subject_type == threshold.subject_type:
                    still_open.add((alert.subject_id, alert.level))
                continue
            at = datetime.now(UTC)
            done = alert.model_copy(update={"status": AlertStatus.RESOLVED, "resolved_at": at})
            event: ThresholdEvent = ThresholdResolved(alert=done, threshold=threshold)
            resolving.append((AlertResolution(alert.id, at, deliveries_for(event)), event))
        if resolving:
            resolved = self._catalog.resolve_alert_batch([r for r, _ in resolving])
            for (_, event), result in zip(resolving, resolved, strict=True):
                if result is not None:
                    counts["resolved"] += 1
                    events.append(event)
        opening: list[tuple[AlertOpening, ThresholdEvent]] = []
        for subject_id, value in sorted(usage.items()):
            counts["subjects"] += 1
            if value >= threshold.threshold:
                level = EXCEEDED
            elif value >= warn:
                level = APPROACHING
            else:
                continue
            if (subject_id, level) in still_open:
                continue  # the catalog would refuse it: not worth building
            alert = UsageAlert(
                threshold_id=threshold.id, metric_key=metric.key,
                subject_type=threshold.subject_type, subject_id=subject_id, level=level,
                period_start=from_ns(start) if start > 0 else None,
                period_end=from_ns(end) if end < LIFETIME_END else None,
                actual_value=value, threshold_value=threshold.threshold,
                percentage=_percentage(value, threshold.threshold),
                created_at=datetime.now(UTC),
            )  # fmt: skip
            kind = ThresholdExceeded if level == EXCEEDED else ThresholdApproaching
            event = kind(alert=alert, threshold=threshold)
            # The alert and its notifications are stored in one transaction: an alert never
            # exists without its deliveries, whoever opened it and whether a worker runs.
            opening.append((AlertOpening(alert, start, deliveries_for(event)), event))
        if opening:
            stored = self._catalog.open_alert_batch([o for o, _ in opening])
            for (o, event), ok in zip(opening, stored, strict=True):
                if ok:
                    counts[o.alert.level] += 1
                    events.append(event)
        self._emit(events, metric)

    def _emit(self, events: list[ThresholdEvent], metric: MetricDefinition) -> None:
        """Write events to the store's event log, then publish them on the bus."""
        self._event_log.append(events, metric)
        for event in events:
            self._bus.publish(event)


_ZERO = Decimal(0)


def _percentage(value: Decimal, threshold: Decimal) -> float:
    """``value`` as a percentage of ``threshold``, to two places (for display; the crossing
    itself is decided on the exact decimals).

    >>> _percentage(Decimal("0.3"), Decimal("0.4"))
    75.0
    """
    with localcontext(prec=60):
        return float((value * 100 / threshold).quantize(Decimal("0.01")))
