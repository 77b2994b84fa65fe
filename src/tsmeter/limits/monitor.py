"""The threshold monitor, alerts, quota checks and the metering-event log.

``evaluate_thresholds`` compares each threshold with its subjects' usage in the
current window and keeps one alert per (threshold, subject, window, level):

* ``approaching`` opens when usage reaches the warn level (default 80 %) while
  still under the threshold, ``exceeded`` when it reaches the threshold;
* an open alert is resolved (by the monitor) once usage is back under its level,
  after a raised threshold or a correction; the level may then fire again if
  usage crosses it again in the same window;
* an alert resolved by hand stays resolved for the rest of its window;
* a new window starts with no alerts.

Alerts live in the catalog, so a restarted monitor neither repeats nor forgets
them, and two monitors running at once open each alert once. An alert's notifications
(one per notify email and one for the webhook) are queued in the transaction that opens or
resolves it; a delivery worker sends them (:mod:`tsmeter.integrations.notify`). Each change is
published on the event bus (``ThresholdApproaching``, ``ThresholdExceeded``,
``ThresholdResolved``) and written to the store's metering-event log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tsmeter.domain import (
    AggregationType,
    AlertStatus,
    EvaluationResult,
    MeteringEvent,
    MetricDefinition,
    UsageAlert,
    UsageThreshold,
)
from tsmeter.domain.events import (
    ThresholdApproaching,
    ThresholdEvent,
    ThresholdExceeded,
    ThresholdResolved,
)
from tsmeter.domain.modelio import TimeLike, ns
from tsmeter.domain.validation import from_ns, to_ns
from tsmeter.errors import NotFoundError, SeriesError, TsmeterError, ValidationError
from tsmeter.integrations.notify.plan import deliveries_for
from tsmeter.limits.quotas import (
    LIFETIME_END,
    QuotaDecision,
    threshold_period,
    window,
    window_totals,
)
from tsmeter.metering.base import MeterBase
from tsmeter.ports import EventRow

__all__ = ["MonitorMixin"]

log = logging.getLogger("tsmeter.monitor")

APPROACHING = "approaching"
EXCEEDED = "exceeded"


class MonitorMixin(MeterBase):
    """The Meter's threshold monitor, alert commands, quota checks and event log."""

    # -- quotas -----------------------------------------------------------------------
    def check(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        quantity: float = 1,
        *,
        org_id: str | None = None,
    ) -> QuotaDecision:
        """Whether recording ``quantity`` more (for a COUNT metric: that many records) stays
        within the subject's BLOCK thresholds, from memory (see :mod:`tsmeter.limits.quotas`).

        Example: ``if not meter.check("api_calls", "org", "acme").allowed: ...``.
        """
        metric = self._resolve_metric(metric_key, org_id)
        records = max(1, int(quantity)) if metric.aggregation_type is AggregationType.COUNT else 1
        return self._quotas.decide(metric, subject_type, subject_id, quantity, records=records)

    # -- the monitor ------------------------------------------------------------------
    def evaluate_thresholds(self, now: TimeLike | None = None) -> EvaluationResult:
        """Compare every threshold with usage in its current window; open and resolve alerts
        (see the module docstring). ``now`` defaults to the current time.

        Example: ``meter.evaluate_thresholds().exceeded``.
        """
        self._settle()
        instant = ns("now", now) if now is not None else time.time_ns()
        assert instant is not None
        counts = {"thresholds": 0, "subjects": 0, APPROACHING: 0, EXCEEDED: 0, "resolved": 0}
        errors: list[str] = []
        for threshold in self.catalog.list_thresholds():
            metric = self.catalog.find_metric(threshold.metric_key, threshold.org_id)
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
        period = threshold_period(metric, threshold)
        start, end = window(self.calendar, period, now)
        one = None if threshold.subject_id == "*" else threshold.subject_id
        totals = window_totals(self.store, self.calendar, metric, period, (start, end),
                               threshold.subject_type, one, failures)  # fmt: skip
        usage = {s: t.value(metric.aggregation_type) for s, t in totals.items()}
        if one is not None:
            usage.setdefault(one, 0.0)
        warn = threshold.warn_threshold or threshold.threshold
        events: list[ThresholdEvent] = []
        for alert in self.catalog.open_alerts(threshold.id, start):
            value = usage.get(alert.subject_id, 0.0)
            floor = threshold.threshold if alert.level == EXCEEDED else warn
            if alert.subject_type == threshold.subject_type and value < floor:
                at = datetime.now(UTC)
                done = alert.model_copy(update={"status": AlertStatus.RESOLVED, "resolved_at": at})
                event: ThresholdEvent = ThresholdResolved(alert=done, threshold=threshold)
                resolved = self.catalog.set_alert_status(
                    alert.id, AlertStatus.RESOLVED, at, automatic=True,
                    deliveries=deliveries_for(event),
                )  # fmt: skip
                if resolved is not None:
                    counts["resolved"] += 1
                    events.append(event)
        for subject_id, value in sorted(usage.items()):
            counts["subjects"] += 1
            if value >= threshold.threshold:
                level = EXCEEDED
            elif value >= warn:
                level = APPROACHING
            else:
                continue
            alert = UsageAlert(
                threshold_id=threshold.id, metric_key=metric.key,
                subject_type=threshold.subject_type, subject_id=subject_id, level=level,
                period_start=from_ns(start) if start > 0 else None,
                period_end=from_ns(end) if end < LIFETIME_END else None,
                actual_value=value, threshold_value=threshold.threshold,
                percentage=round(value / threshold.threshold * 100, 2),
                created_at=datetime.now(UTC),
            )  # fmt: skip
            kind = ThresholdExceeded if level == EXCEEDED else ThresholdApproaching
            event = kind(alert=alert, threshold=threshold)
            # The alert and its notifications are stored in one transaction: an alert never
            # exists without its deliveries, whoever opened it and whether a worker runs.
            if self.catalog.open_alert(alert, start, deliveries_for(event)):
                counts[level] += 1
                events.append(event)
        self._emit(events, metric)

    def _emit(self, events: Sequence[ThresholdEvent], metric: MetricDefinition) -> None:
        """Write events to the store's event log, then publish them on the bus. A store that
        cannot take them is logged, not raised: the alerts are in the catalog already."""
        if not events:
            return
        rows = [
            EventRow(to_ns(e.occurred_at), e.name, metric.key, e.alert.subject_type,
                     e.alert.subject_id, metric.org_id, json.dumps(_event_data(e)))
            for e in events
        ]  # fmt: skip
        try:
            self.store.append_events(rows)
        except TsmeterError as exc:
            log.warning("could not store %d threshold events: %s", len(rows), exc)
        for event in events:
            self.events.publish(event)

    # -- alerts -----------------------------------------------------------------------
    def list_alerts(
        self,
        status: AlertStatus | str | None = None,
        *,
        metric_key: str | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
    ) -> list[UsageAlert]:
        """Alerts, newest first, optionally filtered. Example: ``meter.list_alerts("PENDING")``."""
        wanted = _status(status) if status is not None else None
        return [
            a for a in self.catalog.list_alerts(wanted)
            if (metric_key is None or a.metric_key == metric_key)
            and (subject_type is None or a.subject_type == subject_type)
            and (subject_id is None or a.subject_id == subject_id)
        ]  # fmt: skip

    def acknowledge_alert(self, alert_id: str) -> UsageAlert:
        """Mark an alert as seen (it stays open). Example: ``meter.acknowledge_alert(a.id)``."""
        current = self._alert(alert_id)
        if current.status is AlertStatus.RESOLVED:
            raise ValidationError("status", f"alert {alert_id!r} is resolved already")
        updated = self.catalog.set_alert_status(alert_id, AlertStatus.ACKNOWLEDGED,
                                                datetime.now(UTC))  # fmt: skip
        assert updated is not None
        return updated

    def resolve_alert(self, alert_id: str) -> UsageAlert:
        """Close an alert by hand: its level does not fire again in its window.

        Example: ``meter.resolve_alert(a.id)``.
        """
        current = self._alert(alert_id)
        if current.status is AlertStatus.RESOLVED:
            return current
        updated = self.catalog.set_alert_status(alert_id, AlertStatus.RESOLVED, datetime.now(UTC))
        assert updated is not None
        return updated

    def _alert(self, alert_id: str) -> UsageAlert:
        found = self.catalog.get_alert(alert_id)
        if found is None:
            raise NotFoundError(f"alert {alert_id!r} not found")
        return found

    # -- the event log ----------------------------------------------------------------
    def list_events(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        name: str | None = None,
    ) -> list[MeteringEvent]:
        """Stored metering events in ``[start, end)``, oldest first; ``name`` keeps one kind
        (``threshold.exceeded``) or a family (``threshold``).

        Example: ``meter.list_events(name="threshold")``.
        """
        rows = self.store.list_events(ns("start", start), ns("end", end), name)
        return [
            MeteringEvent(name=r.name, occurred_at=from_ns(r.ts), metric_key=r.metric_key,
                          subject_type=r.subject_type, subject_id=r.subject_id,
                          org_id=r.org_id, data=json.loads(r.data))
            for r in rows
        ]  # fmt: skip


def _status(value: AlertStatus | str) -> AlertStatus:
    try:
        return AlertStatus(value.upper() if isinstance(value, str) else value)
    except ValueError:
        choices = ", ".join(s.value for s in AlertStatus)
        raise ValidationError("status", f"must be one of {choices}, got {value!r}") from None


def _event_data(event: ThresholdEvent) -> dict[str, Any]:
    alert = event.alert.to_json_dict()
    return {
        "alertId": alert["id"], "thresholdId": alert["thresholdId"], "level": alert["level"],
        "status": alert["status"], "actualValue": alert["actualValue"],
        "thresholdValue": alert["thresholdValue"], "percentage": alert["percentage"],
        "periodStart": alert["periodStart"], "periodEnd": alert["periodEnd"],
        "action": event.threshold.action.value,
    }  # fmt: skip
