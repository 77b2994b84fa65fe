"""UNIQUE_COUNT, TIME_WEIGHTED_SUM and usage by dimension, on every store adapter, compared
with the independent brute force of ``tests/unit/bruteforce.py`` (zoneinfo periods, Decimal
and Fraction arithmetic): DST days in Europe/Paris, Asia/Kathmandu (+05:45), late records,
duplicate ids, readings carried across periods, readings of one instant, hostile values."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.contract.stores import Store
from tests.unit.bruteforce import (
    PARIS,
    Prop,
    brute_measures,
    got_measures,
    utc,
    wall,
)
from tsmeter import PeriodType
from tsmeter.domain import RecordRow
from tsmeter.domain.validation import to_ns
from tsmeter.errors import ValidationError
from tsmeter.metering.meter import Meter
from tsmeter.ports import RecordQuery

KATHMANDU = "Asia/Kathmandu"
ZONES = (PARIS, KATHMANDU)
#: hostile dimension values: line-protocol separators, quotes, backslashes in risky places,
#: the encoder's own substitute for a backslash, non-BMP text, an integer and a boolean
MODELS: tuple[Any, ...] = (
    "gpt-4o", 'mixtral, 8x7b "instruct"', "a=b\\", "mod\u29f5el\\", "\U0001f916 robot", " lead",
    "\\,", 7, True,
)  # fmt: skip
REGIONS: tuple[Any, ...] = ("eu", "us west", None)
SUBJECTS = (("org", "acme"), ("org", "b,c d=e\\"), ("team", "acme"))
#: the two days in each zone whose records the tests spread (Paris: both DST changes)
DAYS = {
    PARIS: [wall(PARIS, 2026, 3, 28, 20), wall(PARIS, 2026, 10, 24, 20)],
    KATHMANDU: [wall(KATHMANDU, 2026, 5, 31, 20), wall(KATHMANDU, 2026, 6, 30, 22)],
}
#: a time after every record of the tests (the periods asked for are finished)
LATER = utc(2026, 12, 1)


def define(meter: Meter) -> None:
    """The metrics the tests record into: active users (distinct ``user``), storage held
    (GB-hours, by region) and tokens (a SUM by model and region)."""
    meter.define_metric("active_users", aggregation_type="UNIQUE_COUNT", unique_property="user",
                        dimensions=[{"name": "model"}, {"name": "region"}],
                        reset_period="MONTHLY", exist_ok=True)  # fmt: skip
    meter.define_metric("storage", aggregation_type="TIME_WEIGHTED_SUM", unit="GB",
                        dimensions=[{"name": "region"}], time_unit="HOUR",
                        reset_period="MONTHLY", exist_ok=True)  # fmt: skip
    meter.define_metric("tokens", aggregation_type="SUM",
                        dimensions=[{"name": "model"}, {"name": "region"}],
                        reset_period="MONTHLY", exist_ok=True)  # fmt: skip


def generate(seed: int, starts: list[datetime], n: int, prefix: str) -> list[Prop]:
    """``n`` records per metric-family spread over 60 hours from each of ``starts``, with
    microsecond times, a few sharing an instant (a tie) and a few sharing an id."""
    rnd = random.Random(seed)
    out: list[Prop] = []
    for i in range(n):
        base = rnd.choice(starts)
        ts = base + timedelta(microseconds=rnd.randrange(60 * 3600 * 10**6))
        if out and rnd.random() < 0.1:
            ts = out[-1].ts  # a reading of the same instant
        meta: dict[str, Any] = {"user": f"u{rnd.randrange(12)}", "model": rnd.choice(MODELS)}
        region = rnd.choice(REGIONS)
        if region is not None:
            meta["region"] = region
        rid = f"{prefix}-{i}"
        if out and rnd.random() < 0.05:
            rid = rnd.choice(out).id  # a duplicate id: the first one stored counts
        quantity = f"{rnd.randrange(1, 5000)}.{rnd.randrange(10**6):06d}"
        out.append(Prop(rid, rnd.choice(SUBJECTS), quantity, ts, tuple(sorted(meta.items()))))
    return out


def store_props(meter: Meter, metric: str, props: list[Prop]) -> None:
    """Record ``props`` into ``metric`` in batches of 50 (duplicates within a batch too)."""
    docs = [
        {"id": p.id, "metricKey": metric, "subjectType": p.subject[0],
         "subjectId": p.subject[1], "quantity": p.quantity, "timestamp": p.ts,
         "metadata": dict(p.metadata)}
        for p in props
    ]  # fmt: skip
    for i in range(0, len(docs), 50):
        meter.record_batch(docs[i : i + 50])


@pytest.fixture
def meters(open_same: Callable[[], Store]) -> Iterator[Callable[[str], Meter]]:
    """Meters in a given zone on the test's backing store (each on a store object of its
    own), closed after the test."""
    opened: list[Meter] = []

    def meter_in(zone: str, **options: Any) -> Meter:
        store = open_same()
        meter = Meter(store, store, timezone=zone, capabilities=store.capabilities(), **options)
        opened.append(meter)
        return meter

    yield meter_in
    for meter in opened:
        meter.close()


def spans(zone: str) -> list[tuple[PeriodType, datetime, datetime]]:
    """The (period type, start, end) asked in ``zone``: hours across the first DST day,
    days, weeks and months across both days."""
    first, second = DAYS[zone]
    return [
        (PeriodType.HOURLY, first + timedelta(hours=20), first + timedelta(hours=50)),
        (PeriodType.DAILY, first - timedelta(days=1), second + timedelta(days=4)),
        (PeriodType.WEEKLY, first - timedelta(days=8), second + timedelta(days=8)),
        (PeriodType.MONTHLY, first - timedelta(days=40), second + timedelta(days=30)),
    ]


def check_all(
    meter: Meter,
    metric: str,
    agg: str,
    zone: str,
    props: list[Prop],
    **fields: Any,
) -> int:
    """Summaries and breakdowns of ``metric`` in ``zone`` equal the brute force for every
    span and grouping; returns how many summaries were compared."""
    dims = {"active_users": ("model", "region"), "storage": ("region",),
            "tokens": ("model", "region")}[metric]  # fmt: skip
    compared = 0
    for period, start, end in spans(zone):
        kw = dict(dimensions=dims, as_of=LATER, **fields)
        expected = brute_measures(props, period, zone, agg, start, end, **kw)
        if agg != "SUM":
            summaries = meter.get_usage_summaries(metric, period, start=start, end=end)
            assert got_measures(summaries) == expected, (period, zone)
        groupings: list[tuple[tuple[str, ...], dict[str, Any] | None]] = [
            ((), None), (dims, None), (dims[::-1], None),
            ((dims[0],), {dims[-1]: "eu"} if dims[-1] == "region" else None),
            ((), {"region": None}), ((), {"region": "us west"}),
        ]  # fmt: skip
        for group_by, where in groupings:
            expected = brute_measures(props, period, zone, agg, start, end, group_by=group_by,
                                      where=where, **kw)  # fmt: skip
            found = meter.get_usage_breakdown(
                metric, period, start=start, end=end, group_by=group_by, where=where,
                as_of=LATER,
            )  # fmt: skip
            assert got_measures(found, group_by) == expected, (period, zone, group_by, where)
            compared += len(expected)
    return compared


@pytest.mark.parametrize("zone", ZONES)
def test_unique_count_equals_the_brute_force(meters: Callable[[str], Meter], zone: str) -> None:
    """Distinct users per period, subject and group, summaries and breakdowns, hours to
    months across DST changes (Paris) and in +05:45 (Kathmandu)."""
    meter = meters(zone)
    define(meter)
    props = generate(1, DAYS[zone], 240, "uc")
    store_props(meter, "active_users", props)
    assert check_all(meter, "active_users", "UNIQUE_COUNT", zone, props, unique="user") > 50


@pytest.mark.parametrize("zone", ZONES)
def test_time_weighted_sum_equals_the_brute_force(
    meters: Callable[[str], Meter], zone: str
) -> None:
    """GB-hours per period, series carried across periods (and into periods without
    records), readings of one instant (the greatest id holds), in both zones."""
    meter = meters(zone)
    define(meter)
    props = generate(2, DAYS[zone], 160, "tw")
    store_props(meter, "storage", props)
    assert check_all(meter, "storage", "TIME_WEIGHTED_SUM", zone, props) > 50


def test_sum_by_dimension_equals_the_brute_force(meters: Callable[[str], Meter]) -> None:
    """A composable metric broken down by its dimensions (and filtered) per period."""
    meter = meters(PARIS)
    define(meter)
    props = generate(3, DAYS[PARIS], 200, "sum")
    store_props(meter, "tokens", props)
    assert check_all(meter, "tokens", "SUM", PARIS, props) > 50


def test_late_records_and_duplicates_are_counted_on_the_next_read(
    meters: Callable[[str], Meter],
) -> None:
    """Records arriving after a read (and after an aggregation run), into periods already
    read, are in the next read; re-sent ids with other values count once, as first stored."""
    meter = meters(PARIS)
    define(meter)
    metrics = {"active_users": "UNIQUE_COUNT", "storage": "TIME_WEIGHTED_SUM"}
    first = generate(4, DAYS[PARIS], 120, "late")
    late = generate(5, DAYS[PARIS], 80, "late2")
    resent = [Prop(p.id, p.subject, "1", p.ts + timedelta(hours=1), (("user", "zz"),))
              for p in first[:20]]  # fmt: skip
    for metric in metrics:  # record ids are unique across metrics
        store_props(meter, metric, own(first, metric))
    meter.aggregate("DAILY")
    for metric, agg in metrics.items():
        assert check_all(meter, metric, agg, PARIS, own(first, metric), unique="user")
    for metric in metrics:
        store_props(meter, metric, own(late + resent, metric))
    for metric, agg in metrics.items():
        everything = own(first + late + resent, metric)
        assert check_all(meter, metric, agg, PARIS, everything, unique="user")


def own(props: list[Prop], metric: str) -> list[Prop]:
    """``props`` with ids of their own for ``metric``."""
    return [replace(p, id=f"{metric}:{p.id}") for p in props]


def test_carry_in_over_empty_periods_and_ties(meters: Callable[[str], Meter]) -> None:
    """A reading months before the range carries into every period (record count 0), the
    greatest id of one instant holds, before the range and inside it; worked by hand too:
    10 GB held for the 23 hours of 29 March in Paris, then 4 GB from 30 March."""
    meter = meters(PARIS)
    define(meter)
    day = wall(PARIS, 2026, 3, 29)
    props = [
        Prop("r-b", ("org", "acme"), "7", utc(2025, 11, 3, 9), (("region", "eu"),)),
        Prop("r-c", ("org", "acme"), "10", utc(2025, 11, 3, 9), (("region", "eu"),)),
        Prop("r-a", ("org", "acme"), "99", utc(2025, 11, 3, 9), (("region", "eu"),)),
        Prop("s-a", ("org", "acme"), "5", wall(PARIS, 2026, 3, 30), (("region", "eu"),)),
        Prop("s-b", ("org", "acme"), "4", wall(PARIS, 2026, 3, 30), (("region", "eu"),)),
        Prop("o-1", ("org", "acme"), "1.5", utc(2025, 12, 1), ()),
    ]
    store_props(meter, "storage", props)
    (sunday,) = meter.get_usage_breakdown(
        "storage", "DAILY", start=day, end=day + timedelta(hours=1), group_by=["region"],
        where={"region": "eu"},
    )  # fmt: skip
    assert (sunday.total_quantity, sunday.record_count, sunday.last_value) == (230, 0, None)
    (monday,) = meter.get_usage_breakdown(
        "storage", "DAILY", start=day + timedelta(hours=23), end=day + timedelta(hours=24),
        where={"region": "eu"},
    )  # fmt: skip
    assert (monday.total_quantity, monday.record_count, monday.last_value) == (96, 2, 4)
    assert monday.dimensions == {}
    for zone in ZONES:
        m = meters(zone)
        for period in (PeriodType.DAILY, PeriodType.MONTHLY):
            start, end = utc(2026, 1, 1), utc(2026, 5, 1)
            expected = brute_measures(props, period, zone, "TIME_WEIGHTED_SUM", start, end,
                                      dimensions=("region",), group_by=("region",),
                                      as_of=LATER)  # fmt: skip
            found = m.get_usage_breakdown("storage", period, start=start, end=end,
                                          group_by=["region"], as_of=LATER)  # fmt: skip
            assert got_measures(found, ("region",)) == expected
            assert len(expected) >= 8 and any(row[5] == 0 for row in expected)


def test_as_of_ends_the_readings_of_an_unfinished_period(meters: Callable[[str], Meter]) -> None:
    """A time-weighted sum of a period that has not ended holds its readings up to ``as_of``;
    the periods after it have no usage yet."""
    meter = meters(KATHMANDU)
    define(meter)
    props = [Prop("r1", ("org", "acme"), "2", wall(KATHMANDU, 2026, 6, 1, 0, 15), ())]
    store_props(meter, "storage", props)
    as_of = wall(KATHMANDU, 2026, 6, 1, 12, 45)
    start, end = wall(KATHMANDU, 2026, 6, 1), wall(KATHMANDU, 2026, 6, 3)
    found = meter.get_usage_breakdown("storage", "DAILY", start=start, end=end, as_of=as_of)
    assert [(s.period_start, s.total_quantity) for s in found] == [(start, 25)]
    expected = brute_measures(props, PeriodType.HOURLY, KATHMANDU, "TIME_WEIGHTED_SUM", start,
                              end, dimensions=("region",), as_of=as_of)  # fmt: skip
    hourly = meter.get_usage_breakdown("storage", "HOURLY", start=start, end=end, as_of=as_of)
    assert got_measures(hourly, ()) == expected and len(expected) == 13


def test_hostile_dimension_values_are_data(meters: Callable[[str], Meter]) -> None:
    """Values with separators, quotes, backslashes, ``⧵`` and emoji come back exactly, and a
    filter on each finds exactly its records."""
    meter = meters(PARIS)
    define(meter)
    at = wall(PARIS, 2026, 3, 29, 1, 30)
    props = [
        Prop(f"h{i}", ("org", "acme"), str(i + 1), at + timedelta(seconds=i),
             (("model", model), ("user", f"u{i}")))
        for i, model in enumerate(MODELS)
    ]  # fmt: skip
    store_props(meter, "tokens", own(props, "tokens"))
    store_props(meter, "active_users", own(props, "active_users"))
    start, end = at, at + timedelta(minutes=1)
    found = meter.get_usage_breakdown("tokens", "DAILY", start=start, end=end,
                                      group_by=["model"])  # fmt: skip
    shown = {p.prop("model") for p in props}
    assert {s.dimensions["model"] for s in found if s.dimensions} == shown
    for p in props:
        (one,) = meter.get_usage_breakdown("active_users", "DAILY", start=start, end=end,
                                           where={"model": dict(p.metadata)["model"]})  # fmt: skip
        assert (one.total_quantity, one.sum) == (1, p.value)


def test_unknown_dimensions_are_refused_naming_the_field(meter: Meter) -> None:
    """Grouping or filtering by a property the metric does not declare is a ValidationError
    naming ``groupBy[i]`` or ``where.<name>``."""
    define(meter)
    span = {"start": utc(2026, 1, 1), "end": utc(2026, 2, 1)}
    with pytest.raises(ValidationError, match=r"groupBy\[1\].*'user'.*model, region"):
        meter.get_usage_breakdown("tokens", group_by=["model", "user"], **span)
    with pytest.raises(ValidationError, match=r"where\.colour"):
        meter.get_usage_breakdown("tokens", where={"colour": "red"}, **span)


def test_readings_before(store: Store, meter: Meter) -> None:
    """The port: per series and combination of the dimensions' values, the latest record
    before ``at`` (greatest id of one instant, whichever point InfluxDB moved it to), with
    ``at`` between two nanoseconds of one microsecond; filters by subject."""
    meter.define_metric("storage", aggregation_type="TIME_WEIGHTED_SUM",
                        dimensions=[{"name": "region"}])  # fmt: skip
    base = to_ns(utc(2026, 2, 1))
    rnd = random.Random(7)
    rows = []
    for i in range(300):
        ts = base + rnd.choice([0, 1, 999, 1000, 5_000_000_000, 7_000_000_001]) + rnd.randrange(3)
        region = rnd.choice(['"eu"', '"us west"', "3", '"3"', "true", "null", None])
        meta = None if region is None else f'{{"region": {region}, "n": {i}}}'
        subject = rnd.choice(["a", "b,c", "d\\"])
        rows.append(RecordRow(f"id-{i:03d}", "storage", "org", subject, None, i, ts, meta, None))
    for i in range(0, 300, 50):
        store.append(rows[i : i + 50], 0)
    from tsmeter.domain.properties import stored_values

    for at in (base, base + 1, base + 1000, base + 1001, base + 5_000_000_001, base + 10**10):
        for dims in ((), ("region",)):
            for subject in (None, "b,c"):
                query = RecordQuery("storage", None, "org" if subject else None, subject)
                expected: dict[Any, RecordRow] = {}
                for r in rows:
                    if r.ts < at and subject in (None, r.subject_id):
                        key = (r.subject_id, *stored_values(dims, r.metadata))
                        held = expected.get(key)
                        if held is None or (r.ts, r.id) > (held.ts, held.id):
                            expected[key] = r
                found = store.readings_before(query, at, dims)
                assert sorted(found) == sorted(expected.values()), (at, dims, subject)
    assert store.readings_before(RecordQuery("other"), base + 10**10, ()) == []


def test_unique_count_threshold_alerts(meters: Callable[[str], Meter]) -> None:
    """A limit of 5 active users a month: approaching at 4 distinct users (not at 4 records
    of 2 users), exceeded at 5, per subject of a ``*`` threshold, in the window's month."""
    meter = meters(PARIS)
    define(meter)
    meter.create_threshold("active_users", "org", 5, warn_threshold=4)
    month = wall(PARIS, 2026, 11, 2)
    now = month + timedelta(days=3)

    def users(subject: str, names: list[str], tag: str) -> None:
        store_props(meter, "active_users", [
            Prop(f"{subject}-{tag}-{i}", ("org", subject), "1", month + timedelta(hours=i),
                 (("user", name),))
            for i, name in enumerate(names)
        ])  # fmt: skip

    users("acme", ["u1", "u2", "u1", "u2"], "a")
    users("beta", ["u1", "u2", "u3", "u4"], "a")
    result = meter.evaluate_thresholds(now=now)
    assert (result.approaching, result.exceeded) == (1, 0)
    (alert,) = meter.list_alerts()
    assert (alert.subject_id, alert.level, alert.actual_value) == ("beta", "approaching", 4)
    users("acme", ["u3", "u4", "u5"], "b")
    users("beta", ["u4"], "b")
    result = meter.evaluate_thresholds(now=now)
    assert (result.approaching, result.exceeded) == (0, 1)
    exceeded = meter.list_alerts(subject_id="acme")
    assert [(a.level, a.actual_value) for a in exceeded] == [("exceeded", 5)]
    assert meter.evaluate_thresholds(now=now + timedelta(days=40)).exceeded == 0


def test_time_weighted_threshold_counts_the_window_up_to_now(
    meters: Callable[[str], Meter],
) -> None:
    """A GB-hours limit: 10 GB held from the month's start reach 240 GB-h after a day."""
    meter = meters(PARIS)
    define(meter)
    meter.create_threshold("storage", "org", 240, subject_id="acme")
    month = wall(PARIS, 2026, 11, 1)
    store_props(meter, "storage", [Prop("g1", ("org", "acme"), "10", month - timedelta(days=3))])
    assert meter.evaluate_thresholds(now=month + timedelta(hours=12)).approaching == 0
    assert meter.evaluate_thresholds(now=month + timedelta(hours=20)).approaching == 1
    assert meter.evaluate_thresholds(now=month + timedelta(hours=24)).exceeded == 1
    levels = {a.level: a.actual_value for a in meter.list_alerts("PENDING", subject_id="acme")}
    assert levels == {"approaching": 200, "exceeded": 240}


def test_summary_of_a_record_level_metric(meter: Meter) -> None:
    """``get_usage_summary`` of a period without records is zero usage; with them, the
    distinct count (one subject)."""
    define(meter)
    at = datetime(2026, 7, 14, 12, tzinfo=UTC)
    empty = meter.get_usage_summary("active_users", "org", "acme", at=at)
    assert (empty.total_quantity, empty.record_count, empty.min) == (0, 0, None)
    store_props(meter, "active_users", [
        Prop(f"s{i}", ("org", "acme"), "1", at, (("user", f"u{i % 3}"),)) for i in range(7)
    ])  # fmt: skip
    found = meter.get_usage_summary("active_users", "org", "acme", at=at)
    assert (found.total_quantity, found.record_count, found.dimensions) == (3, 7, None)


@pytest.mark.parametrize("zone", ZONES)
def test_corrections_are_followed_by_every_measure(meters: Callable[..., Meter], zone: str) -> None:
    """Records cancelled and amended by id (and a cancelled id recorded again): distinct
    users, GB-hours and tokens by dimension equal the brute force over the records as
    corrected, before and after an aggregation run."""
    meter = meters(zone, correction_window=timedelta(days=3650))
    define(meter)
    rnd = random.Random(24)
    for metric, agg, seed, extra in (
        ("active_users", "UNIQUE_COUNT", 5, {"unique": "user"}),
        ("storage", "TIME_WEIGHTED_SUM", 6, {}),
        ("tokens", "SUM", 7, {}),
    ):
        props = generate(seed, DAYS[zone], 160, f"fix-{metric}")
        store_props(meter, metric, props)
        first = {p.id: p for p in reversed(props)}  # the record each id stored
        ids = sorted(first)
        rnd.shuffle(ids)
        cancelled, amended = ids[:16], ids[16:32]
        for rid in cancelled:
            meter.cancel_record(rid, reason="duplicate charge", actor="billing@example.com")
        new_quantity = {rid: f"{rnd.randrange(1, 900)}.{rnd.randrange(10**6):06d}"
                        for rid in amended}  # fmt: skip
        for rid, quantity in new_quantity.items():
            meter.amend_record(rid, quantity, reason="meter misread", actor="ops")
        store_props(meter, metric, [first[rid] for rid in cancelled[:4]])  # sent again
        corrected = [
            replace(first[rid], quantity=new_quantity.get(rid, first[rid].quantity))
            for rid in first
            if rid not in cancelled
        ]
        assert check_all(meter, metric, agg, zone, corrected, **extra) > 20
        meter.aggregate("HOURLY")
        meter.aggregate("DAILY")
        assert check_all(meter, metric, agg, zone, corrected, **extra) > 20
