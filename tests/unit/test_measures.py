"""The measures engine on random records against the brute force of ``bruteforce.py``, through
an in-memory embedded store: every type, grouping and filter, in three zones, with readings
carried in from before the range and records sharing an instant."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.bruteforce import PARIS, Prop, brute_measures, utc
from tsmeter.adapters.sqlite import SQLiteStore
from tsmeter.domain import MetricDefinition, PeriodType, RecordRow, UsageSummary
from tsmeter.domain.periods import Calendar
from tsmeter.domain.validation import from_ns, to_ns
from tsmeter.metering.measures import grouping, measure, measure_rows, period_edges

BASE = utc(2026, 3, 28, 12)  # the night Paris moves to summer time is in the span
ZONES = (PARIS, "Asia/Kathmandu", "UTC")
DIMS = ({"name": "model"}, {"name": "region"})


@st.composite
def props(draw: st.DrawFn) -> list[Prop]:
    """Up to 40 records over three days, a few at one instant, some without a property."""
    n = draw(st.integers(1, 40))
    out: list[Prop] = []
    for i in range(n):
        if out and draw(st.booleans()) and draw(st.booleans()):
            ts = out[-1].ts
        else:
            hour = draw(st.sampled_from([0, 30, 30, 30, 60]))  # before, in, after the range
            ts = BASE + timedelta(hours=hour, seconds=draw(st.integers(0, 30 * 3600)))
        meta = []
        for name, values in (("model", ["a", "b, c", 7]), ("region", ["eu", True]),
                             ("user", ["u1", "u2", "u3"])):  # fmt: skip
            value = draw(st.sampled_from([None, *values]))
            if value is not None:
                meta.append((name, value))
        quantity = str(draw(st.integers(-5_000_000, 5_000_000)) / Decimal(1000))
        subject = draw(st.sampled_from([("org", "a"), ("org", "b")]))
        out.append(Prop(f"r{draw(st.integers(0, 9))}-{i:02d}", subject, quantity, ts, tuple(meta)))
    return out


def as_rows(metric: str, records: list[Prop]) -> list[RecordRow]:
    """The records as the store keeps them (6 decimal places)."""
    return [
        RecordRow(p.id, metric, *p.subject, None, int(p.value * 10**6), to_ns(p.ts),
                  json.dumps(dict(p.metadata)) if p.metadata else None, None)
        for p in records
    ]  # fmt: skip


def shaped(found: list[UsageSummary] | list, metric: MetricDefinition) -> list[tuple]:
    """Measures in the brute force's shape (decimals at 6 places)."""
    d = metric.decimal
    return [
        (from_ns(m.start), from_ns(m.end), m.subject_type, m.subject_id, m.group,
         m.record_count, d(m.sum), d(m.min) if m.record_count else None,
         d(m.max) if m.record_count else None, d(m.last_value) if m.record_count else None,
         from_ns(m.last_ts) if m.record_count else None, metric.usage(m.value(metric)))
        for m in found
    ]  # fmt: skip


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=props(),
    agg=st.sampled_from(["UNIQUE_COUNT", "TIME_WEIGHTED_SUM", "SUM", "COUNT"]),
    zone=st.sampled_from(ZONES),
    period=st.sampled_from([PeriodType.HOURLY, PeriodType.DAILY, PeriodType.WEEKLY]),
    group_by=st.sampled_from([(), ("model",), ("region", "model")]),
    where=st.sampled_from([None, {"model": None}, {"region": "eu"}, {"model": 7}]),
    as_of_h=st.integers(0, 100),
)
def test_measures_equal_the_brute_force(
    records: list[Prop],
    agg: str,
    zone: str,
    period: PeriodType,
    group_by: tuple[str, ...],
    where: dict[str, object] | None,
    as_of_h: int,
) -> None:
    """Whatever the records, the engine over a store equals the brute force."""
    unique = "user" if agg == "UNIQUE_COUNT" else None
    metric = MetricDefinition(key="m", aggregation_type=agg, dimensions=DIMS,
                              unique_property=unique, time_unit="MINUTE")  # fmt: skip
    store = SQLiteStore(":memory:")
    store.append(as_rows("m", records), 0)
    start, end = BASE + timedelta(hours=30), BASE + timedelta(hours=60)
    as_of = BASE + timedelta(hours=as_of_h)
    edges = period_edges(Calendar(zone), period, to_ns(start), to_ns(end))
    found = measure(store, metric, edges, group=grouping(metric, group_by, where),
                    as_of=to_ns(as_of))  # fmt: skip
    kept = {k: None if v is None else str(v) for k, v in (where or {}).items()}
    expected = brute_measures(records, period, zone, agg, start, end, dimensions=("model",
                              "region"), group_by=group_by, where=kept, unique=unique,
                              time_unit="MINUTE", as_of=as_of)  # fmt: skip
    assert shaped(found, metric) == expected


def test_records_out_of_time_order_are_an_error() -> None:
    """A store that returns records out of time order is named, not silently summed."""
    metric = MetricDefinition(key="m", aggregation_type="TIME_WEIGHTED_SUM")
    rows = [RecordRow(f"r{i}", "m", "org", "a", None, 1, ts, None, None)
            for i, ts in enumerate([5, 3])]  # fmt: skip
    with pytest.raises(Exception, match="out of time order"):
        measure_rows(metric, rows, [0, 10], as_of=10)


def test_a_reading_holds_until_the_next_and_the_greatest_id_wins_a_tie() -> None:
    """Worked by hand: 2 units from 0, then at 4 readings 9 (id b) and 5 (id a): b holds."""
    metric = MetricDefinition(key="m", aggregation_type="TIME_WEIGHTED_SUM", time_unit="SECOND",
                              precision=0)  # fmt: skip
    s = 10**9
    rows = [RecordRow(rid, "m", "org", "a", None, q, ts * s, None, None)
            for rid, q, ts in (("z", 2, 0), ("b", 9, 4), ("a", 5, 4))]  # fmt: skip
    rows.sort(key=lambda r: (r.ts, r.id))
    (only,) = measure_rows(metric, rows, [0, 10 * s], as_of=10 * s)
    assert (only.value(metric), only.record_count, only.last_value) == (2 * 4 + 9 * 6, 3, 9)
    (cut,) = measure_rows(metric, rows, [0, 10 * s], as_of=5 * s)
    assert cut.value(metric) == 2 * 4 + 9 * 1


def test_monthly_edges_of_a_range() -> None:
    """The edges cover the range with whole periods (March in Kathmandu starts before
    1 March UTC) and no period after it."""
    cal = Calendar("Asia/Kathmandu")
    edges = period_edges(cal, PeriodType.MONTHLY, to_ns(utc(2026, 1, 10)), to_ns(utc(2026, 3, 1)))
    assert [from_ns(e) for e in edges] == [
        datetime(2025, 12, 31, 18, 15, tzinfo=from_ns(0).tzinfo),
        datetime(2026, 1, 31, 18, 15, tzinfo=from_ns(0).tzinfo),
        datetime(2026, 2, 28, 18, 15, tzinfo=from_ns(0).tzinfo),
        datetime(2026, 3, 31, 18, 15, tzinfo=from_ns(0).tzinfo),
    ]
