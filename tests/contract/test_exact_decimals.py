"""Exact decimals on every store: the totals a customer is billed from equal Python's
``decimal`` over the same records, digit for digit (never the code under test)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

import pytest

from tsmeter.domain import UsageSummary
from tsmeter.errors import TsmeterError, ValidationError
from tsmeter.metering.meter import Meter

PARIS = ZoneInfo("Europe/Paris")
DAY = datetime(2026, 3, 10, tzinfo=UTC)
MONTH = datetime(2026, 3, 1, tzinfo=PARIS)  # March in Paris: 31 days, one of them 23 hours
MONTH_END = datetime(2026, 4, 1, tzinfo=PARIS)


def _records(metric: str, values: list[object], start: datetime, step: timedelta,
             subject: str = "o1") -> list[dict[str, object]]:  # fmt: skip
    return [
        {"metricKey": metric, "subjectType": "org", "subjectId": subject, "quantity": value,
         "timestamp": start + i * step, "id": f"{metric}-{subject}-{i}"}
        for i, value in enumerate(values)
    ]  # fmt: skip


def _sums_by(records: list[dict[str, object]], bucket: object) -> dict[datetime, Decimal]:
    out: dict[datetime, Decimal] = defaultdict(Decimal)
    for record in records:
        out[bucket(record["timestamp"])] += Decimal(str(record["quantity"]))  # type: ignore[operator]
    return dict(out)


def _local_hour(ts: datetime) -> datetime:
    return ts.astimezone(PARIS).replace(minute=0, second=0, microsecond=0).astimezone(UTC)


def _local_day(ts: datetime) -> datetime:
    local = ts.astimezone(PARIS)
    return datetime(local.year, local.month, local.day, tzinfo=PARIS).astimezone(UTC)


def _by_start(summaries: list[UsageSummary]) -> dict[datetime, Decimal]:
    return {s.period_start: s.total_quantity for s in summaries}


def test_a_million_tenths_add_up_to_exactly_100000(meter: Meter) -> None:
    """1,000,000 records of 0.1 in one day total 100000.0 in the day, the month and the sum
    of the hours (binary floats gave 100000.00000133288)."""
    meter.define_metric("tenths", aggregation_type="SUM", precision=1)
    step = timedelta(milliseconds=79)  # 1M records within Paris's day (until 22:00 UTC)
    for part in range(10):
        start = DAY + part * 100_000 * step
        batch = _records("tenths", [0.1] * 100_000, start, step, subject="o1")
        for i, record in enumerate(batch):
            record["id"] = f"t{part}-{i}"
        result = meter.record_batch(batch)
        assert result.recorded + result.queued == 100_000
    expected = Decimal("0.1") * 1_000_000
    day = meter.get_usage_summary("tenths", "org", "o1", "DAILY", at=DAY + timedelta(hours=12))
    assert (day.total_quantity, day.record_count) == (expected, 1_000_000)
    assert str(day.total_quantity) == "100000.0"
    meter.aggregate("HOURLY")
    meter.aggregate("MONTHLY")
    month = meter.get_usage_summary("tenths", "org", "o1", "MONTHLY", at=DAY)
    assert month.total_quantity == expected
    hours = meter.get_usage_summaries("tenths", "HOURLY", start=DAY - timedelta(hours=1),
                                      end=DAY + timedelta(days=1, hours=1))  # fmt: skip
    assert sum(h.total_quantity for h in hours) == expected


def test_cents_hourly_and_a_monthly_roll_up_through_hours_and_days(meter: Meter) -> None:
    """Random cents, given as floats, strings and Decimals, over March in Paris (with its
    23-hour day): every hourly, daily and monthly total equals the decimal sum of its
    records, after the roll-ups run hourly, then daily, then monthly."""
    rng = random.Random(21)
    meter.define_metric("spend", aggregation_type="SUM", precision=2)
    count = 30_000
    step = (MONTH_END.astimezone(UTC) - MONTH.astimezone(UTC)) / count  # 743 hours
    values: list[object] = []
    for _ in range(count):
        cents = rng.randint(-500, 100_000)
        value = Decimal(cents).scaleb(-2)
        values.append(rng.choice([float(value), str(value), value]))
    records = _records("spend", values, MONTH.astimezone(UTC), step)
    meter.record_batch(records)
    for period in ("HOURLY", "DAILY", "MONTHLY"):
        meter.aggregate(period)
    end = MONTH_END
    hours = meter.get_usage_summaries("spend", "HOURLY", start=MONTH, end=end)
    assert _by_start(hours) == _sums_by(records, _local_hour)
    days = meter.get_usage_summaries("spend", "DAILY", start=MONTH, end=end)
    assert _by_start(days) == _sums_by(records, _local_day)
    assert len(days) == 31
    month = meter.get_usage_summary("spend", "org", "o1", "MONTHLY", at=DAY)
    assert month.total_quantity == sum((Decimal(str(v)) for v in values), Decimal(0))
    assert month.total_quantity.as_tuple().exponent == -2  # the metric's places, always


def test_six_decimals_with_negative_corrections_under_every_aggregation(meter: Meter) -> None:
    """Values of six decimals, some negative (corrections), give exact SUM, MIN, MAX, LAST
    and AVG (the exact sum over the count, rounded half to even to six places)."""
    rng = random.Random(6)
    values = [Decimal(rng.randint(-2_000_000, 9_000_000)).scaleb(-6) for _ in range(2_000)]
    step = timedelta(seconds=37)
    for agg in ("SUM", "MIN", "MAX", "LAST", "AVG"):
        meter.define_metric(f"m_{agg}", aggregation_type=agg)
        meter.record_batch(_records(f"m_{agg}", [str(v) for v in values], DAY, step))
    meter.aggregate("DAILY")
    expected = {
        "SUM": sum(values, Decimal(0)),
        "MIN": min(values),
        "MAX": max(values),
        "LAST": values[-1],
        "AVG": (sum(values, Decimal(0)) / len(values)).quantize(
            Decimal("0.000001"), rounding=ROUND_HALF_EVEN
        ),
    }
    for agg, want in expected.items():
        got = meter.get_usage_summary(f"m_{agg}", "org", "o1", "MONTHLY", at=DAY)
        assert got.total_quantity == want, agg
        assert got.sum == expected["SUM"]


def test_values_at_the_edge_of_the_64_bit_range(meter: Meter) -> None:
    """At precision 0 the largest value is 2**63 - 1; it is stored and summed exactly, one
    more is refused naming the field, and a total beyond the range is an error, never a
    wrapped number."""
    meter.define_metric("big", aggregation_type="SUM", precision=0)
    top = 2**63 - 1
    meter.record("big", "org", "edge", top, timestamp=DAY, id="b1")
    meter.record("big", "org", "edge", -top, timestamp=DAY + timedelta(seconds=1), id="b2")
    meter.record("big", "org", "edge", str(top), timestamp=DAY + timedelta(seconds=2), id="b3")
    total = meter.get_usage_summary("big", "org", "edge", "DAILY", at=DAY).total_quantity
    assert total == Decimal(top)
    with pytest.raises(ValidationError, match="quantity"):
        meter.record("big", "org", "edge", top + 1, timestamp=DAY, id="b4")
    meter.record("big", "org", "wrap", top, timestamp=DAY, id="w1")
    meter.record("big", "org", "wrap", 1, timestamp=DAY + timedelta(seconds=1), id="w2")
    with pytest.raises(TsmeterError, match=r"64-bit|overflow"):
        meter.get_usage_summary("big", "org", "wrap", "DAILY", at=DAY)
    assert meter.get_usage_summary("big", "org", "edge", "DAILY", at=DAY).total_quantity == top


def test_extra_places_are_refused_or_rounded_as_the_metric_declares(meter: Meter) -> None:
    """A value with more places than the metric keeps is refused with the field named and
    nothing of the batch stored; a metric declaring HALF_EVEN rounds it."""
    meter.define_metric("strict", aggregation_type="SUM", precision=2)
    meter.define_metric("rounded", aggregation_type="SUM", precision=2, rounding="HALF_EVEN")
    batch = _records("strict", ["1.25", "0.125"], DAY, timedelta(seconds=1))
    with pytest.raises(ValidationError, match=r"records\[1\]\.quantity: has 3 decimal places"):
        meter.record_batch(batch)
    assert meter.get_usage("strict") == []
    meter.record_batch(_records("rounded", ["0.125", "0.135", 0.125, "-0.125"], DAY,
                                timedelta(seconds=1)))  # fmt: skip
    got = [r.quantity for r in meter.get_usage("rounded")]
    assert got == [Decimal("0.12"), Decimal("0.14"), Decimal("0.12"), Decimal("-0.12")]
    summary = meter.get_usage_summary("rounded", "org", "o1", "DAILY", at=DAY)
    assert summary.total_quantity == Decimal("0.26")
    assert summary.to_json_dict()["totalQuantity"] == "0.26"
