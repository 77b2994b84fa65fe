"""The monitor on a real influxd reads a ``*`` threshold's window with as many queries for
200 subjects as for 20 (one read of the window, however many subjects), before and after
the window is aggregated, and opens one alert per crossing subject."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tsmeter
from tests.fault_proxy import FaultProxy
from tests.influx_server import InfluxServer

START = datetime(2026, 5, 4, tzinfo=UTC)
NOW = datetime(2026, 5, 20, tzinfo=UTC)


@pytest.fixture
def proxied(influx_db: tuple[InfluxServer, str], tmp_path: Path) -> Iterator[FaultProxy]:
    """A proxy in front of the test's influxd (it logs every request)."""
    server, _ = influx_db
    proxy = FaultProxy(server.url).start()
    yield proxy
    proxy.close()


def queries_to_evaluate(
    meter: tsmeter.Meter, proxy: FaultProxy, metric: str, n: int, *, aggregated: bool
) -> int:
    """Record usage over the limit for ``n`` subjects of ``metric`` (then aggregate it, if
    ``aggregated``), evaluate a fresh ``*`` threshold on it, and return how many queries the
    evaluation sent; every subject must get one exceeded alert."""
    meter.define_metric(metric, aggregation_type="SUM", reset_period="MONTHLY")
    meter.record_batch([
        {"id": f"{metric}-{i}-{k}", "metricKey": metric, "subjectType": "org",
         "subjectId": f"org {i}, \"x\"=y", "quantity": 7.5, "timestamp": START + timedelta(
             minutes=i, seconds=k)}
        for i in range(n) for k in range(2)
    ])  # fmt: skip
    meter.flush(30)
    if aggregated:
        meter.aggregate("MONTHLY")
    for t in meter.list_thresholds():
        meter.delete_threshold(t.id)
    threshold = meter.create_threshold(metric, "org", 10)
    before = len(proxy.log)
    result = meter.evaluate_thresholds(now=NOW)
    sent = sum(1 for path, _ in proxy.log[before:] if path == "/query")
    assert (result.exceeded, result.failed) == (n, 0)
    alerts = [a for a in meter.list_alerts() if a.threshold_id == threshold.id]
    assert sorted(a.subject_id for a in alerts) == sorted(f'org {i}, "x"=y' for i in range(n))
    assert {a.actual_value for a in alerts} == {15.0}
    return sent


def test_one_read_per_window_whatever_the_subjects(
    influx_db: tuple[InfluxServer, str], proxied: FaultProxy, tmp_path: Path
) -> None:
    """The queries one evaluation sends do not grow with the subjects: fresh from raw
    records, and from stored summaries after a MONTHLY aggregate."""
    _, db = influx_db
    url = f"influxdb://127.0.0.1:{proxied.port}/{db}?writer=m&state={tmp_path}/s.db"
    with tsmeter.connect(url, outbox=False, mirror=False) as meter:
        # the store's first sum asks once whether points of an earlier version remain
        queries_to_evaluate(meter, proxied, "warm", 1, aggregated=False)
        few = queries_to_evaluate(meter, proxied, "few", 20, aggregated=False)
        many = queries_to_evaluate(meter, proxied, "many", 200, aggregated=False)
        assert 0 < many == few
        few = queries_to_evaluate(meter, proxied, "few_after", 20, aggregated=True)
        many = queries_to_evaluate(meter, proxied, "many_after", 200, aggregated=True)
        assert 0 < many == few
