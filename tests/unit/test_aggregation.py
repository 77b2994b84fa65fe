"""Summaries checked against a brute-force computation written here.

The brute force groups records by the period each one falls in, computed per record with
zoneinfo wall-clock arithmetic; :mod:`tsmeter.domain.periods` is deliberately not used, so a mistake
in the calendar or in the roll-ups cannot hide behind the same mistake in the expectation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import tsmeter
from tests.unit.bruteforce import (
    AGGS,
    HOUR,
    PARIS,
    PERIODS,
    US,
    Rec,
    brute,
    got,
    key,
    stored,
    utc,
    wall,
)
from tsmeter import AggregationType, Meter, PeriodType

# -- helpers around the Meter -----------------------------------------------------------------
MeterFactory = Callable[..., Meter]


@pytest.fixture(params=["sqlite", "influxdb", "influxdb2"])
def make_meter(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MeterFactory]:
    """Open a meter in a zone on a fresh store (the embedded one in tmp_path/x.db, a fresh
    InfluxDB database, or a fresh InfluxDB 2.x bucket) with one metric per aggregation type."""
    meters: list[Meter] = []
    if request.param == "influxdb":
        server, db = request.getfixturevalue("influx_db")
        url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={tmp_path / 'state.db'}"
    elif request.param == "influxdb2":
        server2, bucket = request.getfixturevalue("influx2_bucket")
        url = server2.store_url(bucket, writer="w1", state=str(tmp_path / "state.db"))
    else:
        url = f"sqlite:///{tmp_path / 'x.db'}"

    def make(zone: str, **options: Any) -> Meter:
        meter = tsmeter.connect(url, timezone=zone, **options)
        meters.append(meter)
        return define_all(meter)

    yield make
    for meter in meters:
        meter.close()


def define_all(meter: Meter) -> Meter:
    """Define one metric per aggregation type on ``meter``."""
    for agg in AGGS:
        meter.define_metric(key(agg), aggregation_type=agg)
    return meter


def record_all(meter: Meter, records: Sequence[Rec]) -> None:
    """Record ``records`` into every metric (ids prefixed per metric, same order within)."""
    for agg in AGGS:
        meter.record_batch(
            [
                {
                    "metricKey": key(agg),
                    "subjectType": r.subject[0],
                    "subjectId": r.subject[1],
                    "quantity": r.quantity,
                    "timestamp": r.ts,
                    "id": f"{agg.value}:{r.id}",
                }
                for r in records
            ]
        )


def span(records: Sequence[Rec]) -> tuple[datetime, datetime]:
    """The smallest [start, end) holding every record."""
    return min(r.ts for r in records), max(r.ts for r in records) + US


def assert_matches(
    meter: Meter,
    records: Sequence[Rec],
    period: PeriodType,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    each: bool = True,
) -> None:
    """get_usage_summaries (and get_usage_summary per group) equal the brute force for all six
    aggregation types."""
    lo, hi = span(records)
    lo, hi = start or lo, end or hi
    for agg in AGGS:
        expected = brute(records, period, meter.timezone, agg, lo, hi)
        summaries = meter.get_usage_summaries(key(agg), period, start=lo, end=hi)
        assert got(summaries) == expected, (agg, period)
        assert all(s.aggregation_type is agg and s.timezone == meter.timezone for s in summaries)
        if each:
            for row in expected:
                one = meter.get_usage_summary(key(agg), row[2], row[3], period, at=row[0])
                assert got([one]) == [row], (agg, period)


def every_minutes(start: datetime, end: datetime, minutes: int, subjects: int) -> list[Rec]:
    """A record every ``minutes`` in [start, end), cycling through ``subjects`` subjects,
    quantities 0..6 in a cycle."""
    out: list[Rec] = []
    t, i = start, 0
    while t < end:
        out.append(Rec(f"g{i:05d}", ("org", f"o{i % subjects}"), float(i % 7), t))
        t, i = t + timedelta(minutes=minutes), i + 1
    return out


# -- time zones -------------------------------------------------------------------------------
def test_paris_spring_forward_day(make_meter: MeterFactory) -> None:
    """Paris's 23-hour 2026-03-29 matches brute force hourly and daily, before and after
    aggregation."""
    meter = make_meter(PARIS)
    records = every_minutes(utc(2026, 3, 28, 21), utc(2026, 3, 30, 1), 20, 3)
    records += [
        Rec("e1", ("org", "o0"), 10.0, wall(PARIS, 2026, 3, 29, 1, 59, 59, 999_999)),
        Rec("e2", ("org", "o0"), 20.0, wall(PARIS, 2026, 3, 29, 3, 0)),  # the next instant
        Rec("e3", ("org", "o0"), 30.0, wall(PARIS, 2026, 3, 29, 23, 59, 59, 999_999)),
        Rec("e4", ("org", "o0"), 40.0, wall(PARIS, 2026, 3, 30, 0, 0)),
    ]
    record_all(meter, records)
    for aggregated in (False, True):
        if aggregated:
            meter.aggregate("DAILY")  # rolls the hours up first
        for period in (PeriodType.HOURLY, PeriodType.DAILY):
            assert_matches(meter, records, period)
    day = meter.get_usage_summary(
        key(AggregationType.COUNT), "org", "o0", "DAILY", at=utc(2026, 3, 29, 12)
    )
    assert day.period_start == wall(PARIS, 2026, 3, 29)
    assert day.period_end - day.period_start == timedelta(hours=23)
    hours = meter.get_usage_summaries(
        key(AggregationType.COUNT),
        "HOURLY",
        subject_id="o0",
        start=day.period_start,
        end=day.period_end,
    )
    assert [h.period_start.astimezone(ZoneInfo(PARIS)).hour for h in hours] == [0, 1, *range(3, 24)]


def test_paris_fall_back_day(make_meter: MeterFactory) -> None:
    """Paris's 25-hour 2026-10-25 matches brute force, and the repeated 02:00 hour is two
    hourly periods."""
    meter = make_meter(PARIS)
    records = every_minutes(utc(2026, 10, 24, 21), utc(2026, 10, 26, 0), 20, 2)
    first, second = wall(PARIS, 2026, 10, 25, 2, 30), wall(PARIS, 2026, 10, 25, 2, 30, fold=1)
    assert second - first == HOUR
    records += [
        Rec("f1", ("org", "o0"), 100.0, first),
        Rec("f2", ("org", "o0"), 200.0, second),
        Rec("f3", ("org", "o0"), 300.0, wall(PARIS, 2026, 10, 25, 2, 59, 59, 999_999, fold=1)),
        Rec("f4", ("org", "o0"), 400.0, wall(PARIS, 2026, 10, 25, 3, 0)),
    ]
    record_all(meter, records)
    for aggregated in (False, True):
        if aggregated:
            meter.aggregate("DAILY")
        for period in (PeriodType.HOURLY, PeriodType.DAILY):
            assert_matches(meter, records, period)
    sums = key(AggregationType.SUM)
    day = meter.get_usage_summary(sums, "org", "o0", "DAILY", at=first)
    assert day.period_end - day.period_start == timedelta(hours=25)
    one = meter.get_usage_summary(sums, "org", "o0", "HOURLY", at=first)
    two = meter.get_usage_summary(sums, "org", "o0", "HOURLY", at=second)
    assert (one.period_start, two.period_start) == (utc(2026, 10, 25, 0), utc(2026, 10, 25, 1))
    assert one.max == 100.0 and two.max == 300.0


@pytest.mark.parametrize(
    ("zone", "hour_start"),
    [
        ("Asia/Kolkata", utc(2026, 5, 10, 4, 30)),  # +05:30: 05:10Z and 05:20Z share an hour
        ("Asia/Kathmandu", utc(2026, 5, 10, 5, 15)),  # +05:45: 05:20Z is in the next hour
    ],
)
def test_non_whole_hour_zone(make_meter: MeterFactory, zone: str, hour_start: datetime) -> None:
    """In +05:30 and +05:45 zones, records near local midnight and at :10/:20 past UTC hours
    land in the brute force's local hours and days."""
    meter = make_meter(zone)
    records: list[Rec] = []
    t = utc(2026, 5, 9, 17)
    while t < utc(2026, 5, 10, 20):
        for minute, q in ((10, 1.0), (20, 2.0)):
            records.append(
                Rec(f"h{len(records):04d}", ("org", "o1"), q, t + timedelta(minutes=minute))
            )
        t += HOUR
    for n, midnight in enumerate((wall(zone, 2026, 5, 10), wall(zone, 2026, 5, 11))):
        records += [
            Rec(f"m{n}a", ("org", "o1"), 5.0, midnight - US),
            Rec(f"m{n}b", ("org", "o1"), 7.0, midnight),
            Rec(f"m{n}c", ("org", "o2"), 9.0, midnight + US),
        ]
    record_all(meter, records)
    for aggregated in (False, True):
        if aggregated:
            meter.aggregate("DAILY")
        for period in (PeriodType.HOURLY, PeriodType.DAILY):
            assert_matches(meter, records, period)
    hour = meter.get_usage_summary(
        key(AggregationType.SUM), "org", "o1", "HOURLY", at=utc(2026, 5, 10, 5, 20)
    )
    assert hour.period_start == hour_start
    day = meter.get_usage_summary(
        key(AggregationType.COUNT), "org", "o1", "DAILY", at=wall(zone, 2026, 5, 10)
    )
    assert day.period_start == wall(zone, 2026, 5, 10)


def test_leap_day(make_meter: MeterFactory) -> None:
    """2024-02-29 is a day of its own and February 2024 is 29 days long."""
    meter = make_meter(PARIS)
    records = every_minutes(wall(PARIS, 2024, 2, 27, 22), wall(PARIS, 2024, 3, 2, 2), 90, 2)
    records.append(Rec("leap", ("org", "o0"), 29.0, wall(PARIS, 2024, 2, 29, 23, 59, 59)))
    record_all(meter, records)
    periods = (PeriodType.DAILY, PeriodType.WEEKLY, PeriodType.MONTHLY)
    for aggregated in (False, True):
        if aggregated:
            meter.aggregate("MONTHLY")
            meter.aggregate("WEEKLY")
        for period in periods:
            assert_matches(meter, records, period)
    feb = meter.get_usage_summary(
        key(AggregationType.MAX), "org", "o0", "MONTHLY", at=utc(2024, 2, 10)
    )
    assert feb.period_end - feb.period_start == timedelta(days=29)
    assert feb.total_quantity == 29.0
    leap = meter.get_usage_summary(
        key(AggregationType.LAST), "org", "o0", "DAILY", at=wall(PARIS, 2024, 2, 29, 12)
    )
    assert leap.period_start == wall(PARIS, 2024, 2, 29) and leap.total_quantity == 29.0


@pytest.mark.parametrize(
    ("monday", "days"),
    [
        (date(2026, 12, 28), (date(2026, 12, 24), date(2027, 1, 8))),
        (date(2020, 12, 28), (date(2020, 12, 26), date(2021, 1, 6))),
    ],
    ids=["2026-12-28..2027-01-03", "2020-12-31/2021-01-01"],
)
def test_iso_week_across_year_boundary(
    make_meter: MeterFactory, monday: date, days: tuple[date, date]
) -> None:
    """An ISO week spanning New Year is one weekly period from Monday, while the years split."""
    meter = make_meter(PARIS)
    lo, hi = (wall(PARIS, d.year, d.month, d.day) for d in days)
    records = every_minutes(lo, hi, 180, 2)
    week_start = wall(PARIS, monday.year, monday.month, monday.day)
    records += [
        Rec("w1", ("org", "o0"), 1.0, week_start - US),
        Rec("w2", ("org", "o0"), 2.0, week_start),
        Rec("w3", ("org", "o0"), 3.0, wall(PARIS, monday.year, 12, 31, 23, 59, 59, 999_999)),
        Rec("w4", ("org", "o0"), 4.0, wall(PARIS, monday.year + 1, 1, 1)),
        Rec("w5", ("org", "o0"), 5.0, week_start + timedelta(days=7) - US),
        Rec("w6", ("org", "o0"), 6.0, week_start + timedelta(days=7)),
    ]
    record_all(meter, records)
    for aggregated in (False, True):
        if aggregated:
            meter.aggregate("WEEKLY")
            meter.aggregate("YEARLY")
        for period in (PeriodType.WEEKLY, PeriodType.YEARLY):
            assert_matches(meter, records, period)
    sums = key(AggregationType.SUM)
    old_year = meter.get_usage_summary(
        sums, "org", "o0", "WEEKLY", at=wall(PARIS, monday.year, 12, 31, 12)
    )
    new_year = meter.get_usage_summary(
        sums, "org", "o0", "WEEKLY", at=wall(PARIS, monday.year + 1, 1, 1, 12)
    )
    assert old_year == new_year
    assert old_year.period_start == week_start
    assert old_year.period_end == wall(PARIS, *(monday + timedelta(days=7)).timetuple()[:3])
    years = meter.get_usage_summaries(
        sums, "YEARLY", subject_id="o0", start=week_start, end=week_start + timedelta(days=7)
    )
    assert [y.period_start for y in years] == [
        wall(PARIS, monday.year, 1, 1),
        wall(PARIS, monday.year + 1, 1, 1),
    ]


# -- roll-ups ---------------------------------------------------------------------------------
def test_avg_and_last_roll_up_from_hours_to_month(make_meter: MeterFactory, tmp_path: Path) -> None:
    """Monthly AVG is total sum / total count and LAST the latest raw record (ties: larger id),
    after rolling hourly → daily → monthly."""
    meter = make_meter(PARIS)
    regular: list[Rec] = []
    ties: list[Rec] = []
    for day in (1, 2, 15, 29, 31):  # the 29th is the 23-hour day
        for hour in (0, 5, 13, 23):
            t0 = wall(PARIS, 2026, 3, day, hour)
            for subject in ("o1", "o2"):
                k = 1 + (day + hour + len(subject)) % 6
                tag = f"{day:02d}{hour:02d}{subject}"
                for j in range(k):
                    q = float((day * 7 + hour * 3 + j * 5) % 11) + 0.5 * (j % 2)
                    regular.append(
                        Rec(f"{tag}-{j}", ("org", subject), q, t0 + j * timedelta(minutes=7))
                    )
                last_ts = t0 + (k - 1) * timedelta(minutes=7)
                # same-timestamp ties at every hour's last instant; "-z" is the largest id
                ties.append(Rec(f"{tag}-z", ("org", subject), 1000.0 + day + hour / 4, last_ts))
                ties.append(Rec(f"{tag}-a", ("org", subject), -1.0, last_ts))
    # the larger ids are stored first, so insertion order cannot stand in for the tie-break
    record_all(meter, [r for r in ties if r.id.endswith("-z")])
    record_all(meter, regular + [r for r in ties if r.id.endswith("-a")])
    records = regular + ties
    assert_matches(meter, records, PeriodType.MONTHLY)
    meter.aggregate("HOURLY")  # kept levels: DAILY and MONTHLY roll up from them
    meter.aggregate("DAILY")
    result = meter.aggregate("MONTHLY")
    assert result.records_seen == len(records) * len(AGGS)
    for period in (PeriodType.HOURLY, PeriodType.DAILY, PeriodType.MONTHLY):
        assert_matches(meter, records, period, each=period is PeriodType.MONTHLY)
    for agg in AGGS:
        for period in (PeriodType.HOURLY, PeriodType.DAILY, PeriodType.MONTHLY):
            lo, hi = span(records)
            expected = [row[:10] for row in brute(records, period, PARIS, agg, lo, hi)]
            assert stored(meter, agg, period, PARIS) == expected
    for subject in ("o1", "o2"):
        raw = [r for r in records if r.subject[1] == subject]
        avg = meter.get_usage_summary(
            key(AggregationType.AVG), "org", subject, "MONTHLY", at=utc(2026, 3, 10)
        )
        exact = sum((r.value for r in raw), Decimal(0))
        # sum / count rounded half to even to the metric's 6 places
        assert avg.total_quantity == (exact / len(raw)).quantize(Decimal("1e-6"), ROUND_HALF_EVEN)
        daily = meter.get_usage_summaries(
            key(AggregationType.AVG),
            "DAILY",
            subject_id=subject,
            start=avg.period_start,
            end=avg.period_end,
        )
        average_of_averages = sum(d.total_quantity for d in daily) / len(daily)
        # the data is chosen so that an average of daily averages would be wrong
        assert abs(avg.total_quantity - average_of_averages) > Decimal("0.001")
        last = meter.get_usage_summary(
            key(AggregationType.LAST), "org", subject, "MONTHLY", at=utc(2026, 3, 10)
        )
        assert last.total_quantity == 1000.0 + 31 + 23 / 4
        assert last.last_timestamp == max(r.ts for r in raw)


def test_decimal_quantities_roll_up_exactly(make_meter: MeterFactory) -> None:
    """Decimal quantities (0.1, 0.01, ...: no binary fractions) summed raw and via hourly and
    daily roll-ups give exactly the decimal sum, and AVG that sum over the count."""
    meter = make_meter("UTC")
    records = [
        Rec(
            f"d{i:04d}",
            ("org", "o1"),
            round(0.1 * (i % 13) + 0.01 * (i % 7), 2),
            utc(2026, 1, 1) + i * timedelta(minutes=37),
        )
        for i in range(2000)
    ]
    record_all(meter, records)
    meter.aggregate("MONTHLY")
    lo, hi = span(records)
    for agg in (AggregationType.SUM, AggregationType.AVG):
        expected = brute(records, PeriodType.MONTHLY, "UTC", agg, lo, hi)
        summaries = got(meter.get_usage_summaries(key(agg), "MONTHLY", start=lo, end=hi))
        assert summaries == expected
        for monthly, wanted in zip(summaries, expected, strict=True):  # the digits, too
            assert str(monthly[5]) == str(wanted[5].quantize(Decimal("1e-6")))


def _january() -> list[Rec]:
    return every_minutes(utc(2026, 1, 1), utc(2026, 1, 11), 50, 3)


def test_late_records_are_folded_in_before_and_after_reaggregation(
    make_meter: MeterFactory, tmp_path: Path
) -> None:
    """Records arriving in already-aggregated periods show in get_usage_summaries at once, and
    the next aggregation run rewrites the stored summaries correctly."""
    meter = make_meter(PARIS)
    records = _january()
    record_all(meter, records)
    for period in PERIODS:
        meter.aggregate(period)
    late = [
        Rec("late-1", ("org", "o0"), 99.0, wall(PARIS, 2026, 1, 3, 23, 59, 59)),  # new MAX, LAST
        Rec("late-2", ("org", "o1"), -5.0, wall(PARIS, 2026, 1, 3, 0, 0)),  # new MIN
        Rec("late-3", ("team", "new"), 3.0, wall(PARIS, 2026, 1, 5, 12)),  # a new subject
        Rec("late-4", ("org", "o2"), 4.0, wall(PARIS, 2026, 1, 20, 8)),  # a period never seen
        Rec("late-5", ("org", "o0"), 1.5, wall(PARIS, 2026, 1, 1, 0, 0)),  # the first instant
    ]
    record_all(meter, late)
    everything = records + late
    lo, hi = span(everything)
    for period in PERIODS:  # fresh before re-aggregation
        assert_matches(meter, everything, period, each=period is not PeriodType.HOURLY)
    results = {period: meter.aggregate(period) for period in PERIODS}
    daily = results[PeriodType.DAILY]
    assert daily.range_start is not None and daily.range_end is not None
    assert daily.range_start <= wall(PARIS, 2026, 1, 1)  # late-5's day was recomputed
    assert daily.range_end >= wall(PARIS, 2026, 1, 21)  # and late-4's
    for period in PERIODS:
        assert_matches(meter, everything, period, each=False)
        for agg in AGGS:
            expected = [row[:10] for row in brute(everything, period, PARIS, agg, lo, hi)]
            assert stored(meter, agg, period, PARIS) == expected, (agg, period)


def test_same_id_counts_once(make_meter: MeterFactory) -> None:
    """An id recorded twice (record, within a batch, across batches) is counted once, and a
    direct write says which were duplicates (an outbox only queues: see test_meter_outbox)."""
    meter = make_meter("UTC", outbox=False)
    sums = key(AggregationType.SUM)
    t = utc(2026, 2, 1, 10)
    first = meter.record(sums, "org", "o1", 2, timestamp=t, id="dup-1")
    again = meter.record(sums, "org", "o1", 2, timestamp=t, id="dup-1")
    assert again == first
    other = meter.record(sums, "org", "o1", 7, timestamp=t + HOUR, id="dup-1")
    assert other == first  # the stored record, not the new arguments
    item = {
        "metricKey": sums,
        "subjectType": "org",
        "subjectId": "o1",
        "quantity": 3,
        "timestamp": t,
    }
    one = meter.record_batch([{**item, "id": "b-1"}, {**item, "id": "b-1"}, {**item, "id": "b-2"}])
    assert (one.recorded, one.duplicates) == (2, 1)
    two = meter.record_batch(
        [{**item, "id": "b-2"}, {**item, "id": "b-3"}, {**item, "id": "dup-1"}]
    )
    assert (two.recorded, two.duplicates) == (1, 2)
    for aggregated in (False, True):
        if aggregated:
            meter.aggregate("MONTHLY")
            meter.record_batch([{**item, "id": "b-1"}, {**item, "id": "b-3"}])
        summary = meter.get_usage_summary(sums, "org", "o1", "MONTHLY", at=t)
        assert (summary.record_count, summary.total_quantity) == (4, 2 + 3 * 3)
    assert len(meter.get_usage(sums, "org", "o1")) == 4


def test_rerunning_aggregation_gives_identical_summaries(
    make_meter: MeterFactory, tmp_path: Path
) -> None:
    """Incremental and ranged aggregation, run and re-run, leave the same stored summaries."""
    meter = make_meter("Asia/Kathmandu")
    records = every_minutes(utc(2026, 1, 28), utc(2026, 3, 3), 97, 4)
    record_all(meter, records)

    def snapshot() -> dict[tuple[PeriodType, AggregationType], list[tuple[Any, ...]]]:
        return {(p, a): stored(meter, a, p, meter.timezone) for p in PERIODS for a in AGGS}

    for period in PERIODS:
        meter.aggregate(period)
    first = snapshot()
    lo, hi = span(records)
    assert first[(PeriodType.MONTHLY, AggregationType.SUM)] == [
        row[:10]
        for row in brute(records, PeriodType.MONTHLY, "Asia/Kathmandu", AggregationType.SUM, lo, hi)
    ]
    again = [meter.aggregate(period) for period in PERIODS]
    if not getattr(meter.store, "recheck_window", 0):  # else recent changes are re-checked
        assert [r.periods_recomputed for r in again] == [0] * len(PERIODS)
    assert snapshot() == first
    for _ in range(2):
        for period in PERIODS:
            result = meter.aggregate(period, start=utc(2026, 1, 1), end=utc(2026, 4, 1))
            assert result.periods_recomputed > 0
        assert snapshot() == first
    meter.aggregate("DAILY", start=utc(2026, 2, 10, 3), end=utc(2026, 2, 10, 4))
    assert snapshot() == first
    for period in PERIODS:
        assert_matches(meter, records, period, each=False)


def test_summaries_asked_a_few_periods_at_a_time(
    make_meter: MeterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On InfluxDB a run of periods is asked a slice at a time (so that a month of hours over
    many subjects never outlasts a query's timeout): with slices of 5 periods, cut across
    the days of a +05:45 zone, and records sharing a microsecond (whose LAST is settled by id
    in its slice), every type and period still equals the brute force."""
    from tsmeter.adapters.influxdb import rollup

    monkeypatch.setattr(rollup, "PERIODS_PER_QUERY", 5)
    meter = make_meter("Asia/Kathmandu")
    records = every_minutes(utc(2026, 3, 25), utc(2026, 4, 4), 53, 3)
    at = utc(2026, 3, 29, 1, 30)  # three records at one microsecond of one subject
    records += [Rec(f"tie{i}", ("org", "s0"), float(5 - i), at) for i in range(3)]
    record_all(meter, records)
    for period in PERIODS:
        meter.aggregate(period)
        assert_matches(meter, records, period, each=False)
