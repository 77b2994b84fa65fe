"""The Meter on each store adapter: what users see must not depend on the store behind it."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

from tests.contract.test_usage_store import HOSTILE
from tsmeter.metering.meter import Meter

T = datetime(2026, 3, 28, 23, tzinfo=UTC)  # midnight in Paris, starting a 23-hour day


def test_meter_round_trips_hostile_strings(meter: Meter) -> None:
    """Hostile metric keys, subjects, ids, sources and metadata come back exactly through record,
    get_usage, summaries and export."""
    for s in HOSTILE:
        meter.define_metric(s, aggregation_type="SUM", name=s, unit=s)
    batch = [
        {"metricKey": s, "subjectType": s, "subjectId": s, "id": s, "quantity": 2,
         "timestamp": T, "source": s, "metadata": {s: s}}
        for s in HOSTILE
    ]  # fmt: skip
    assert meter.record_batch(batch).recorded == len(HOSTILE)
    assert meter.record_batch(batch).duplicates == len(HOSTILE)
    for s in HOSTILE:
        (record,) = meter.get_usage(s)
        assert (record.id, record.subject_type, record.subject_id) == (s, s, s)
        assert (record.source, record.metadata) == (s, {s: s})
        summary = meter.get_usage_summary(s, s, s, "DAILY", at=T)
        assert (summary.metric_key, summary.subject_id, summary.total_quantity) == (s, s, 2.0)
    out = io.StringIO()
    assert meter.export_usage(out) == len(HOSTILE)
    assert sorted(json.loads(line)["id"] for line in out.getvalue().splitlines()) == sorted(HOSTILE)


def test_meter_late_records_on_a_dst_day(meter: Meter) -> None:
    """On Paris's 23-hour day, late records are counted at once and after re-aggregation,
    and a retried batch counts nothing twice."""
    meter.define_metric("api_calls", aggregation_type="COUNT")
    batch = [
        {"metricKey": "api_calls", "subjectType": "org", "subjectId": "o1", "id": f"r{i}",
         "timestamp": T + i * timedelta(minutes=30)}
        for i in range(46)  # every half hour of the 23-hour day
    ]  # fmt: skip
    meter.record_batch(batch)
    meter.aggregate("MONTHLY")
    day = meter.get_usage_summary("api_calls", "org", "o1", "DAILY", at=T)
    assert (day.period_end - day.period_start, day.total_quantity) == (timedelta(hours=23), 46)
    meter.record_batch([*batch, {**batch[0], "id": "late", "timestamp": T + timedelta(minutes=10)}])
    for rerun in (False, True):
        if rerun:
            meter.aggregate("MONTHLY")
        day = meter.get_usage_summary("api_calls", "org", "o1", "DAILY", at=T)
        month = meter.get_usage_summary("api_calls", "org", "o1", "MONTHLY", at=T)
        hours = meter.get_usage_summaries(
            "api_calls", "HOURLY", start=day.period_start, end=day.period_end
        )
        assert (day.total_quantity, month.total_quantity) == (47, 47)
        assert len(hours) == 23 and sum(h.record_count for h in hours) == 47
