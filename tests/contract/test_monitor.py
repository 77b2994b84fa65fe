"""The threshold monitor, alerts, quotas and the event log, on every store adapter."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.contract.stores import Store
from tests.hostile import NASTY_NAMES as HOSTILE
from tsmeter.domain import AlertStatus
from tsmeter.domain.events import ThresholdEvent
from tsmeter.domain.validation import to_ns
from tsmeter.errors import NotFoundError, QuotaExceededError
from tsmeter.metering.meter import Meter
from tsmeter.ports import EventRow

NOV = datetime(2026, 11, 10, 12, tzinfo=UTC)
DEC = datetime(2026, 12, 3, 12, tzinfo=UTC)


def open_meter(open_same: Callable[[], Store], seen: list[ThresholdEvent]) -> Meter:
    """A new Meter (a restarted monitor) on the test's backing store, collecting events."""
    store = open_same()
    meter = Meter(store, store, timezone="UTC", capabilities=store.capabilities())
    meter.subscribe(ThresholdEvent, seen.append)
    return meter


def record(meter: Meter, subject: str, n: int, at: datetime, prefix: str) -> None:
    """``n`` api calls of ``subject`` one second apart from ``at``."""
    meter.record_batch([
        {"id": f"{prefix}-{i}", "metricKey": "api_calls", "subjectType": "org",
         "subjectId": subject, "timestamp": at + timedelta(seconds=i)}
        for i in range(n)
    ])  # fmt: skip


def test_each_level_fires_once_per_window_across_restarts(
    open_same: Callable[[], Store],
) -> None:
    """Usage driven over 80 % and 100 % in November and again in December, with the monitor
    restarted before every evaluation: one approaching and one exceeded event per window,
    in the bus, the alert table and the store's event log."""
    seen: list[ThresholdEvent] = []
    meter = open_meter(open_same, seen)
    meter.define_metric("api_calls", aggregation_type="COUNT", reset_period="MONTHLY")
    meter.create_threshold("api_calls", "org", 100, subject_id="acme")
    steps = [(NOV, 50), (NOV, 35), (NOV, 5), (NOV, 20), (NOV, 30), (DEC, 81), (DEC, 1),
             (DEC, 30), (DEC, 5)]  # fmt: skip
    for step, (month, n) in enumerate(steps):
        record(meter, "acme", n, month + timedelta(minutes=step), f"s{step}")
        meter.close()
        meter = open_meter(open_same, seen)  # a restart between every evaluation
        meter.evaluate_thresholds(now=month + timedelta(hours=1))
        meter.evaluate_thresholds(now=month + timedelta(hours=2))
    kinds = [(e.name, e.alert.period_start) for e in seen]
    nov, dec = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    assert kinds == [
        ("threshold.approaching", nov), ("threshold.exceeded", nov),
        ("threshold.approaching", dec), ("threshold.exceeded", dec),
    ]  # fmt: skip
    exceeded = [e.alert for e in seen if e.name == "threshold.exceeded"]
    assert [(a.actual_value, a.percentage) for a in exceeded] == [(110.0, 110.0), (112.0, 112.0)]
    assert len(meter.list_alerts()) == 4
    logged = meter.list_events(name="threshold")
    assert [(e.name, e.subject_id, e.data["level"]) for e in logged] == [
        (e.name, "acme", e.alert.level) for e in seen
    ]
    meter.close()


def test_raised_threshold_and_corrections_resolve_and_may_fire_again(
    meter: Meter,
) -> None:
    """A raised limit resolves the open alerts (an event each); crossing the new limit in the
    same window fires again; an alert resolved by hand stays quiet for its window."""
    seen: list[ThresholdEvent] = []
    meter.subscribe(ThresholdEvent, seen.append)
    meter.define_metric("storage", aggregation_type="MAX", reset_period="MONTHLY")
    limit = meter.create_threshold("storage", "org", 10.0)  # "*": every org
    for subject, value in (("a", 9.0), ("b", 12.0)):
        meter.record("storage", "org", subject, value, timestamp=NOV, id=f"{subject}-1")
    result = meter.evaluate_thresholds(now=NOV)
    assert (result.subjects, result.approaching, result.exceeded) == (2, 1, 1)
    meter.update_threshold(limit.id, threshold=20.0)
    assert meter.evaluate_thresholds(now=NOV).resolved == 2
    assert {e.name for e in seen[-2:]} == {"threshold.resolved"}
    meter.record("storage", "org", "b", 25.0, timestamp=NOV, id="b-2")
    assert meter.evaluate_thresholds(now=NOV).exceeded == 1
    (open_b,) = meter.list_alerts("PENDING", subject_id="b")
    assert meter.resolve_alert(open_b.id).status is AlertStatus.RESOLVED
    assert meter.evaluate_thresholds(now=NOV).exceeded == 0  # resolved by hand: quiet
    assert [a.status for a in meter.list_alerts(subject_id="a")] == [AlertStatus.RESOLVED]


def test_alert_commands(meter: Meter) -> None:
    """Alerts are acknowledged and resolved by id; unknown ids are a NotFoundError."""
    meter.define_metric("api_calls", aggregation_type="COUNT")
    meter.create_threshold("api_calls", "user", 1, subject_id=HOSTILE[0])
    meter.record("api_calls", "user", HOSTILE[0])
    assert meter.evaluate_thresholds().exceeded == 1
    (alert,) = meter.list_alerts()
    assert alert.subject_id == HOSTILE[0]
    assert meter.acknowledge_alert(alert.id).status is AlertStatus.ACKNOWLEDGED
    assert meter.list_alerts("pending") == []
    assert meter.resolve_alert(alert.id).resolved_at is not None
    with pytest.raises(NotFoundError):
        meter.acknowledge_alert("no-such-alert")


def test_lifetime_window_for_metrics_that_never_reset(meter: Meter) -> None:
    """A NEVER-resetting metric's threshold counts usage of all time."""
    meter.define_metric("seats", aggregation_type="SUM", reset_period="NEVER")
    meter.create_threshold("seats", "org", 10, subject_id="o1")
    meter.record("seats", "org", "o1", 6, timestamp=datetime(2025, 1, 2, tzinfo=UTC))
    meter.record("seats", "org", "o1", 5, timestamp=NOV)
    (alert,) = [a for a in meter.list_alerts()] or [None]  # nothing yet: not evaluated
    assert alert is None
    assert meter.evaluate_thresholds(now=NOV).exceeded == 1
    (alert,) = meter.list_alerts()
    assert (alert.actual_value, alert.period_start, alert.period_end) == (11.0, None, None)


def test_enforce_blocks_at_the_limit_and_check_reports_it(meter: Meter) -> None:
    """``record(enforce=True)`` stores up to the limit and raises beyond it, storing nothing;
    ``check`` says how much is left; a retried id is not new usage; another subject and
    another window are not affected."""
    meter.define_metric("api_calls", aggregation_type="COUNT", reset_period="MONTHLY")
    meter.create_threshold("api_calls", "org", 3, action="BLOCK")
    now = datetime.now(UTC)
    for i in range(3):
        meter.record("api_calls", "org", "acme", id=f"r{i}", enforce=True)
    decision = meter.check("api_calls", "org", "acme")
    assert (decision.allowed, decision.used, decision.remaining) == (False, 3.0, 0.0)
    assert decision.window_end is not None and decision.window_end > now
    with pytest.raises(QuotaExceededError, match="3 of 3") as caught:
        meter.record("api_calls", "org", "acme", id="r3", enforce=True)
    assert caught.value.decision.limit == 3.0  # type: ignore[attr-defined]
    assert meter.record("api_calls", "org", "acme", id="r1", enforce=True).id == "r1"
    assert meter.get_usage_summary("api_calls", "org", "acme").total_quantity == 3
    meter.record("api_calls", "org", "other", enforce=True)
    last_year = now - timedelta(days=400)
    meter.record("api_calls", "org", "acme", timestamp=last_year, enforce=True)
    with pytest.raises(QuotaExceededError, match=r"records\[1\]"):
        meter.record_batch(
            [
                {"metricKey": "api_calls", "subjectType": "org", "subjectId": s}
                for s in ("other", "acme")
            ],
            enforce=True,
        )
    assert meter.get_usage_summary("api_calls", "org", "other").total_quantity == 1


def test_threads_never_overshoot_a_quota_together(meter: Meter) -> None:
    """Eight threads recording against one limit of 50 store exactly 50."""
    meter.define_metric("api_calls", aggregation_type="COUNT", reset_period="DAILY")
    meter.create_threshold("api_calls", "org", 50, subject_id="acme", action="BLOCK")
    refused = []

    def work(n: int) -> None:
        for i in range(20):
            try:
                meter.record("api_calls", "org", "acme", id=f"t{n}-{i}", enforce=True)
            except QuotaExceededError:
                refused.append(1)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(refused) == 160 - 50
    assert meter.get_usage_summary("api_calls", "org", "acme").total_quantity == 50


def test_event_log_keeps_hostile_strings_and_filters_by_name(store: Store) -> None:
    """Events round-trip with hostile series strings; a name selects one kind or a family."""
    t = to_ns(NOV)
    rows = [EventRow(t + i, name, "api_calls", "org", HOSTILE[i % len(HOSTILE)], None,
                     f'{{"n": {i}}}')
            for i, name in enumerate(["threshold.exceeded", "threshold.resolved",
                                      "usage.aggregated", "thresholds.other"])]  # fmt: skip
    store.append_events(rows)
    assert store.list_events(t, t + 10) == rows
    assert [e.name for e in store.list_events(name="threshold")] == [
        "threshold.exceeded",
        "threshold.resolved",
    ]
    assert store.list_events(t + 1, t + 2) == rows[1:2]
