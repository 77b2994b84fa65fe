"""A ``*`` threshold over many subjects, on every store adapter: one alert, one event and one
notification per target for each subject that crosses, nothing more when nothing changed,
resolutions once each when usage falls back; the monitor reads each window's usage once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.contract.stores import Store, open_deliveries
from tests.hostile import NASTY_NAMES
from tsmeter.domain.events import ThresholdEvent
from tsmeter.metering.meter import Meter
from tsmeter.ports import SummaryQuery, SummaryRow

SUBJECTS = 300
START = datetime(2026, 11, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 20, tzinfo=UTC)
EMAIL, HOOK = "ops@example.com", "https://hooks.example.com/usage?k=1"


def subject(i: int) -> str:
    """Subject ``i``: every tenth one a hostile string."""
    return f"{NASTY_NAMES[i // 10 % len(NASTY_NAMES)][:240]}#{i}" if i % 10 == 0 else f"org-{i:04d}"


def planned_usage(i: int) -> list[str]:
    """The quantities recorded for subject ``i``: under the warn level (80), approaching, or
    over the limit (100), a third each."""
    return [["30", "19.5"], ["40.25", "44.5"], ["99.75", "0.5", "12"]][i % 3]


class CountingStore:
    """The store under test, counting the calls of ``summaries`` (the monitor's reads)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.reads: list[SummaryQuery] = []

    def summaries(self, query: SummaryQuery, calendar: Any) -> list[SummaryRow]:
        """Count, then read through."""
        self.reads.append(query)
        return self._store.summaries(query, calendar)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def queued(adapter: str, location: str) -> Iterator[Callable[[], list[tuple[str, str, str]]]]:
    """What the catalog's delivery queue holds: (alert id, event, target)."""
    queue, close = open_deliveries(adapter, location)
    yield lambda: [(d.alert_id, d.event, d.target) for d in queue.entries()]
    close()


def open_meter(
    open_same: Callable[[], Store], seen: list[ThresholdEvent]
) -> tuple[Meter, CountingStore]:
    """A new Meter (a restarted monitor) on the test's backing store, collecting bus events."""
    store = open_same()
    counting = CountingStore(store)
    meter = Meter(counting, store, timezone="UTC", capabilities=store.capabilities())
    meter.subscribe(ThresholdEvent, seen.append)
    return meter, counting


def record(meter: Meter, quantities: dict[str, list[str]], prefix: str) -> None:
    """Record the quantities of each subject, a minute apart."""
    meter.record_batch([
        {"id": f"{prefix}-{n}-{k}", "metricKey": "usage", "subjectType": "org", "subjectId": s,
         "quantity": float(q), "timestamp": START + timedelta(minutes=n * 3 + k)}
        for n, (s, qs) in enumerate(sorted(quantities.items())) for k, q in enumerate(qs)
    ])  # fmt: skip


def test_star_threshold_over_many_subjects(
    open_same: Callable[[], Store], queued: Callable[[], list[tuple[str, str, str]]]
) -> None:
    """300 subjects under one ``*`` threshold: each crossing subject gets one alert of its
    level (usage as Python's decimal adds it up), one event in the log and on the bus, one
    delivery per target; a restarted monitor opens nothing more; corrections that bring usage
    back under the levels resolve each alert once; each evaluation reads the window once."""
    seen: list[ThresholdEvent] = []
    meter, counting = open_meter(open_same, seen)
    meter.define_metric("usage", aggregation_type="SUM", reset_period="MONTHLY")
    threshold = meter.create_threshold("usage", "org", 100, notify_emails=[EMAIL],
                                       notify_webhook=HOOK)  # fmt: skip
    usage = {subject(i): planned_usage(i) for i in range(SUBJECTS)}
    record(meter, usage, "a")
    totals = {s: sum(map(Decimal, qs)) for s, qs in usage.items()}
    want = {s: "exceeded" if t >= 100 else "approaching" for s, t in totals.items() if t >= 80}
    assert len(want) == 200

    result = meter.evaluate_thresholds(now=NOW)
    assert (result.subjects, result.approaching, result.exceeded, result.failed) == (
        SUBJECTS, 100, 100, 0)  # fmt: skip
    assert len(counting.reads) == 1 and counting.reads[0].subject_id is None
    alerts = meter.list_alerts()
    assert sorted((a.subject_id, a.level) for a in alerts) == sorted(want.items())
    assert all(Decimal(str(a.actual_value)) == totals[a.subject_id] for a in alerts)
    assert all(a.threshold_id == threshold.id for a in alerts)
    assert Counter((e.alert.subject_id, e.name) for e in seen) == Counter(
        (s, f"threshold.{level}") for s, level in want.items())  # fmt: skip
    logged = meter.list_events(name="threshold")
    assert sorted((e.subject_id, e.name) for e in logged) == sorted(
        (s, f"threshold.{level}") for s, level in want.items())  # fmt: skip
    by_alert = {a.id: a for a in alerts}
    deliveries = queued()
    assert len(deliveries) == len(set(deliveries)) == 2 * len(want)
    assert Counter(alert_id for alert_id, _, _ in deliveries) == {a: 2 for a in by_alert}
    assert {(e, t) for _, e, t in deliveries} <= {
        (f"threshold.{lv}", t) for lv in ("exceeded", "approaching") for t in (EMAIL, HOOK)
    }
    meter.close()

    meter, counting = open_meter(open_same, seen)  # a restart: nothing new
    again = meter.evaluate_thresholds(now=NOW + timedelta(hours=1))
    assert (again.subjects, again.approaching, again.exceeded, again.resolved) == (
        SUBJECTS, 0, 0, 0)  # fmt: skip
    assert len(counting.reads) == 1
    assert len(seen) == len(want) and len(meter.list_alerts()) == len(want)
    assert len(meter.list_events(name="threshold")) == len(want) and queued() == deliveries

    # corrections: every crossing subject back to 10 below the warn level
    record(meter, {s: [str(70 - totals[s])] for s in want}, "fix")
    seen.clear()
    fixed = meter.evaluate_thresholds(now=NOW + timedelta(hours=2))
    assert (fixed.approaching, fixed.exceeded, fixed.resolved) == (0, 0, len(want))
    assert sorted(e.alert.subject_id for e in seen) == sorted(want)
    assert {e.name for e in seen} == {"threshold.resolved"}
    assert meter.list_alerts("PENDING") == []
    resolved = [d for d in queued() if d[1] == "threshold.resolved"]
    assert len(resolved) == len(set(resolved)) == 2 * len(want)
    assert meter.evaluate_thresholds(now=NOW + timedelta(hours=3)).resolved == 0
    assert len(queued()) == 4 * len(want)
    meter.close()
