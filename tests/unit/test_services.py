"""The Meter's services stand on their own: each is built from the ports and collaborators its
constructor names, and works without a Meter."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tsmeter.adapters.sqlite import SQLiteStore
from tsmeter.domain import RecordRow
from tsmeter.domain.events import EventBus, ThresholdExceeded, UsageAggregated
from tsmeter.domain.periods import Calendar
from tsmeter.errors import QuotaExceededError
from tsmeter.limits.alerts import Alerts
from tsmeter.limits.event_log import EventLog
from tsmeter.limits.monitor import Monitor
from tsmeter.limits.quotas import QuotaView
from tsmeter.limits.thresholds import Thresholds
from tsmeter.metering.aggregation import Aggregation
from tsmeter.metering.catalog import MetricCatalog
from tsmeter.metering.intake import Intake
from tsmeter.metering.meter import Meter
from tsmeter.metering.reading import Queries
from tsmeter.metering.recording import Recorder, RecordingUnit, RecordSinks

SERVICES = [Alerts, EventLog, Monitor, QuotaView, Thresholds, Aggregation, MetricCatalog,
            Queries, Recorder, RecordingUnit, RecordSinks, Meter]  # fmt: skip


@pytest.fixture
def store() -> Iterator[SQLiteStore]:
    """An embedded store in memory, serving as usage store and catalog."""
    opened = SQLiteStore(":memory:")
    yield opened
    opened.close()


def test_meter_composes_rather_than_inherits() -> None:
    """Meter has no base class of its own: its parts are services it holds."""
    assert Meter.__bases__ == (object,)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.__name__)
def test_services_touch_only_their_own_state(service: type) -> None:
    """A service (and the Meter over them) reads no other object's private attributes
    (``x._y`` with ``x`` not ``self``): what it needs comes in through its constructor."""
    source = Path(inspect.getfile(service)).read_text()
    tree = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef) and node.name == service.__name__
    )
    foreign = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert foreign == []


def test_services_work_from_their_ports_alone(store: SQLiteStore) -> None:
    """Metric, threshold, recording, quota, monitor, alert, event-log, query and aggregation
    services wired by hand do what the Meter does with them."""
    bus, calendar = EventBus(), Calendar("UTC")
    exceeded: list[ThresholdExceeded] = []
    aggregated: list[UsageAggregated] = []
    bus.subscribe(ThresholdExceeded, exceeded.append)
    bus.subscribe(UsageAggregated, aggregated.append)
    metrics = MetricCatalog(store, store, bus)
    metrics.define_metric("api_calls", aggregation_type="COUNT")
    quotas = QuotaView(store, store, calendar, metrics.resolve)
    thresholds = Thresholds(store, metrics.get_metric, quotas)
    threshold = thresholds.create_threshold("api_calls", "org", 2, "org-1", action="BLOCK")
    seen: list[Sequence[RecordRow]] = []
    sinks = RecordSinks()
    sinks.add(seen.append)
    recorder = Recorder(
        store, Intake(metrics.resolve), quotas, bus, sinks, metric_of=metrics.resolve
    )

    recorder.record("api_calls", "org", "org-1", id="a", enforce=True)
    recorder.record_batch([{"metricKey": "api_calls", "subjectType": "org",
                            "subjectId": "org-1", "id": "b"}], enforce=True)  # fmt: skip
    with pytest.raises(QuotaExceededError):
        recorder.record("api_calls", "org", "org-1", id="c", enforce=True)
    assert [r.id for rows in seen for r in rows] == ["a", "b"]
    assert quotas.check("api_calls", "org", "org-1").allowed is False

    log = EventLog(store)
    result = Monitor(store, store, calendar, log, bus).evaluate_thresholds()
    assert (result.exceeded, len(exceeded)) == (1, 1)
    (alert,) = Alerts(store).list_alerts(metric_key="api_calls")
    assert alert.threshold_id == threshold.id
    assert Alerts(store).resolve_alert(alert.id).status.value == "RESOLVED"
    assert [e.name for e in log.list_events(name="threshold")] == ["threshold.exceeded"]

    summary = Queries(store, metrics, calendar).get_usage_summary("api_calls", "org", "org-1")
    assert summary.total_quantity == 2.0
    assert Aggregation(store, calendar, bus).aggregate("DAILY").summaries_written == 1
    assert len(aggregated) == 1
