"""Flux text for InfluxDB 2.x, checked with Flux's own parser: literals, queries, task scripts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import fluxcheck
from tests.hostile import NASTY_NAMES, PIECES, names
from tsmeter.adapters.influxdb import flux
from tsmeter.adapters.influxdb.fluxrollup import FluxSource
from tsmeter.adapters.influxdb.schema import summary_measurement
from tsmeter.adapters.influxdb.tasks import hour_offset, periods_for, task_name, task_scripts
from tsmeter.adapters.influxdb.v2client import InfluxV2Client
from tsmeter.domain import MetricDefinition, PeriodType
from tsmeter.domain.periods import Run
from tsmeter.errors import SeriesError, StorageUnavailableError, ValidationError
from tsmeter.ports import SummaryQuery

HOSTILE = [
    *NASTY_NAMES, *PIECES, "a,b c=d", 'say "hi"', "line\nbreak", "tab\there", "cr\rhere",
    "${x}", "\\${x}", "$${", "${", "$", "}", "\\", "ünï©ødé 😀", "=", "\u2028", "\x00\x01\x7f",
]  # fmt: skip
T = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
H = 3_600_000_000_000
MAX = 2**63 - 1


def test_the_parser_rejects_invalid_flux() -> None:
    """The check has teeth: unbalanced calls, dangling operators and bad escapes are errors."""
    results = fluxcheck.parse(['from(bucket: "b" |> range(start: -1h)', "x = 1 +", 'x = "\\q"'])
    assert all(r.errors for r in results)


def test_hostile_string_literals_round_trip() -> None:
    """Every hostile value, written as a Flux literal, parses back to exactly itself."""
    results = fluxcheck.assert_valid(*(f"x = {flux.string(v)}" for v in HOSTILE))
    assert [r.strings for r in results] == [[v] for v in HOSTILE]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(names, st.text(st.characters(codec="utf-8"))), min_size=1, max_size=40))
def test_any_string_literal_round_trips(values: list[str]) -> None:
    """Random text (control characters, ``${``, quotes, backslashes, non-BMP) round-trips."""
    results = fluxcheck.assert_valid(*(f"x = {flux.string(v)}" for v in values))
    assert [r.strings for r in results] == [[v] for v in values]


@pytest.mark.parametrize("good", ["1s", "90s", "1h30m", "2d", "1w", "1mo", "367d", "5µs"])
def test_durations_accepted(good: str) -> None:
    """Flux duration literals pass and parse as Flux."""
    assert flux.duration(good) == good
    fluxcheck.assert_valid(f"x = {good}")


@pytest.mark.parametrize("bad", ["", "0s", "1", "h", "-1h", "1h ", "1m; drop", "1 h", "1x", "1.5h"])
def test_durations_refused(bad: str) -> None:
    """Anything else is a ValidationError naming the field."""
    with pytest.raises(ValidationError, match="lateness"):
        flux.duration(bad, "lateness")


@pytest.mark.parametrize("bad", ["", "1a", "a-b", "a b", "option", "import", 'x"', "é"])
def test_identifiers_refused(bad: str) -> None:
    """Identifiers are plain ASCII words and not keywords."""
    with pytest.raises(ValidationError):
        flux.identifier(bad)


def _scan_influxql_string(text: str) -> tuple[str, str]:
    """The InfluxQL scanner's reading of one double-quoted string at the start of ``text``
    (escapes ``\\n``, ``\\\\``, ``\\"``, ``\\'``; raw newlines refused), and the rest."""
    assert text[0] == '"'
    out, i = [], 1
    while text[i] != '"':
        assert text[i] != "\n"
        if text[i] == "\\":
            out.append({"n": "\n", "\\": "\\", '"': '"', "'": "'"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out), text[i + 1 :]


@pytest.mark.parametrize("value", HOSTILE)
def test_delete_predicate_quotes_values(value: str) -> None:
    """A delete predicate reads back (under InfluxQL string rules) as the values given."""
    predicate = flux.delete_predicate({"metric": value, "org": "acme"})
    assert predicate.startswith("metric=")
    first, rest = _scan_influxql_string(predicate[len("metric=") :])
    assert first == value
    assert rest.startswith(" AND org=")
    assert _scan_influxql_string(rest[len(" AND org=") :]) == ("acme", "")


def _queries(v: list[str]) -> list[flux.Flux]:
    """Every query the 2.x store sends, built from the values ``v``."""
    key = (v[0], v[1], v[2], v[3])
    out = []
    q = flux.Flux()
    out.append(flux.points(v[4], "usage", T, T + 1000, flux.series_predicate(q, [key]), q))
    out.append(flux.points(v[4], "usage", T, T + 1000, None))
    q = flux.Flux()
    out.append(flux.points(v[4], "usage", T, T + 1, flux.metric_predicate(q, *v[:4]), q))
    q = flux.Flux()
    out.append(flux.edges(v[4], "usage", "rid", flux.metric_predicate(q, v[0], None), q))
    out.append(flux.rid_lookup(v[4], v[5]))
    q = flux.Flux()
    out.append(flux.counts(v[4], flux.metric_predicate(q, v[0], v[3]), q))
    q = flux.Flux()
    out.append(flux.everything(v[4], f"r.metric == {q.bind('metric', v[0])} and exists r.org", q))
    out += [
        flux.watermark(v[4], v[5]),
        flux.dirty(v[4], T, (v[0], v[3])),
        flux.dirty(v[4], 0, None),
    ]
    out += [flux.log_end(v[4]), flux.raw_components(v[4], T, T + 10, [(v[0], v[3]), (v[1], None)])]
    out += [flux.raw_components(v[4], T, T + 10, None), flux.events(v[4], 0, flux.END)]
    return out


@settings(max_examples=10, deadline=None)
@given(st.lists(names, min_size=6, max_size=6), st.lists(names, min_size=6, max_size=6))
def test_queries_are_valid_flux_and_never_hold_values(a: list[str], b: list[str]) -> None:
    """Every query parses (its bound values rendered as the options influxdb-client sends),
    every value arrives intact, and the query text is the same whatever the values are."""
    first, second = _queries(a), _queries(b)
    assert [q.text for q in first] == [q.text for q in second]
    results = fluxcheck.assert_valid(*(q.source() for q in first))
    for query, result in zip(first, results, strict=True):
        bound = [v for v in query.params.values() if isinstance(v, str)]
        assert result.strings[: len(bound)] == bound


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Asia/Kathmandu", "America/St_Johns"])
def test_task_scripts_are_valid_flux(zone: str) -> None:
    """Every period's task script parses, for hostile bucket names too, and names its task,
    bucket, zone and summary measurement exactly."""
    for bucket in ["usage", 'my "bucket" ${x}', "b\\", "b\nc"]:
        scripts = task_scripts(bucket, zone, list(PeriodType), every="30s", lateness="6h")
        assert sorted(scripts) == sorted(task_name(bucket, p, zone) for p in PeriodType)
        results = fluxcheck.assert_valid(*scripts.values())
        for (name, script), result in zip(scripts.items(), results, strict=True):
            assert name in result.strings and result.strings.count(bucket) >= 2
            assert "every: 30s" in script or "every: 1h," in script or "every: 1d," in script
            if zone != "UTC" and "every: 1h, offset" not in script:
                assert zone in result.strings


def test_task_options_are_checked() -> None:
    """Durations that are not Flux durations never reach a script."""
    with pytest.raises(ValidationError, match="every"):
        task_scripts("b", "UTC", [PeriodType.HOURLY], every="1m}\nx = 1")
    with pytest.raises(ValidationError, match="lateness"):
        task_scripts("b", "UTC", [PeriodType.HOURLY], lateness="3h) |> drop()")
    with pytest.raises(ValidationError, match="timezone"):
        task_scripts("b", "Mars/Olympus", [PeriodType.DAILY])


def test_hourly_windows_follow_the_zones_minutes() -> None:
    """Local hours start 15 minutes past the UTC hour in Kathmandu, 30 in St John's; a zone
    whose offset changes by half an hour (Lord Howe) has no hourly task."""
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert hour_offset("Asia/Kathmandu", now) == 15
    assert hour_offset("America/St_Johns", now) == 30
    assert hour_offset("Europe/Paris", now) == 0
    with pytest.raises(ValidationError, match="fixed minute"):
        hour_offset("Australia/Lord_Howe", now)


def test_periods_follow_the_metric_definitions() -> None:
    """Hourly and daily always; then each period a metric resets on (NEVER adds none)."""
    make: Callable[[str], MetricDefinition] = lambda p: MetricDefinition(key="m", reset_period=p)  # noqa: E731
    assert periods_for([]) == [PeriodType.HOURLY, PeriodType.DAILY]
    assert periods_for([make("NEVER"), make("MONTHLY"), make("WEEKLY")]) == [
        PeriodType.HOURLY, PeriodType.DAILY, PeriodType.WEEKLY, PeriodType.MONTHLY,
    ]  # fmt: skip


def test_task_scripts_sum_integer_units() -> None:
    """Tasks read the raw points' integer ``units`` (never the old float ``quantity``), skip
    points without them, and reduce into integer ``units_sum/min/max/last``, ``count`` and
    ``last_ts``: every number in the identity is an int literal, so Flux keeps the columns
    int (``0.0`` would make them floats, and ``int + float`` does not type-check)."""
    for script in task_scripts("usage", "Europe/Paris", list(PeriodType)).values():
        assert '"quantity"' not in script and "r.quantity" not in script
        assert 'r._field == "units"' in script and "exists r.units" in script
        (identity,) = re.findall(r"identity: \{(.*)\}", script)
        fields = dict(item.split(": ") for item in identity.split(", "))
        assert fields == {"count": "0", "units_sum": "0", "units_min": "0", "units_max": "0",
                          "units_last": "0", "last_ts": "0", "last_id": '""'}  # fmt: skip
        assert "units_sum: accumulator.units_sum + r.units," in script
        assert "." not in "".join(fields.values())


# -- the 2.x roll-up reads (FluxSource) against a fake client ----------------------------------
Point = dict[str, Any]


class FakeFlux:
    """Answers the two queries FluxSource's components and stored summaries send: raw points
    (``raw_components``) in ``[tsm_lo, tsm_hi)`` of the scoped metric, and summary points
    (``points``) of a measurement and metric."""

    def __init__(self, raw: list[Point], summaries: dict[str, list[Point]] | None = None) -> None:
        self.config = SimpleNamespace(bucket="usage")
        self.raw, self.summaries = raw, summaries or {}
        self.raw_queries: list[dict[str, Any]] = []

    def stream(self, query: flux.Flux) -> Iterator[Point]:
        p = query.params
        if "tsm_measurement" in p:
            for point in self.summaries.get(str(p["tsm_measurement"]), []):
                if point["metric"] == p["tsm_metric"] and p["tsm_lo"] <= point["t"] < p["tsm_hi"]:
                    yield dict(point)
            return
        assert 'r._field == "units"' in query.text
        self.raw_queries.append(p)
        for point in self.raw:
            if p["tsm_lo"] <= point["tsn"] < p["tsm_hi"] and p.get("tsm_m0", point["metric"]) == \
                    point["metric"]:  # fmt: skip
                yield {k: v for k, v in point.items() if k != "_time"}


def source(fake: FakeFlux) -> FluxSource:
    return FluxSource(cast(InfluxV2Client, fake))


def raw(metric: str, subject: str, units: int | None, tsn: int, rid: str) -> Point:
    point: Point = {"metric": metric, "subject_type": "org", "subject_id": subject,
                    "org": None, "rid": rid, "tsn": tsn}  # fmt: skip
    if units is not None:
        point["units"] = units
    return point


def expected(points: list[Point], step: int) -> dict[tuple[str, int], tuple[Any, ...] | None]:
    """{(subject, period start): (count, sum, min, max, last_ts, last) or None where the
    exact sum (Python's decimal) is beyond a 64-bit field}."""
    groups: dict[tuple[str, int], list[Point]] = {}
    for p in points:
        groups.setdefault((p["subject_id"], T + (p["tsn"] - T) // step * step), []).append(p)
    out: dict[tuple[str, int], tuple[Any, ...] | None] = {}
    for key, group in groups.items():
        total = sum((Decimal(p["units"]) for p in group), Decimal(0))
        newest = max(group, key=lambda p: (p["tsn"], p["rid"]))
        units = [p["units"] for p in group]
        out[key] = None if abs(total) > MAX else (
            len(group), int(total), min(units), max(units), newest["tsn"], newest["units"],
        )  # fmt: skip
    return out


big = st.one_of(st.integers(-(2**63) + 1, MAX), st.integers(2**61, 2**62), st.integers(-9, 9))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), big, st.integers(0, 3 * H - 1)), max_size=25))
def test_flux_components_are_exact_integers(data: list[tuple[str, int, int]]) -> None:
    """Components computed from raw units equal Python's ``decimal`` over the same points;
    a series with a period whose exact total leaves the 64-bit range fails alone (never a
    wrapped number), the others' rows come with the error."""
    points = [raw("m", s, u, T + t, f"r{i:03}") for i, (s, u, t) in enumerate(data)]
    want = expected(points, H)
    failed = {subject for (subject, _), v in want.items() if v is None}
    try:
        rows = list(source(FakeFlux(points)).compute(Run(T, H, 3), None).values())
        assert not failed
    except SeriesError as exc:
        assert {key[2] for key in exc.series} == failed
        rows = exc.rows
    got = {(r.subject_id, r.period_start): (r.record_count, r.sum, r.min, r.max, r.last_ts,
            r.last_value) for r in rows}  # fmt: skip
    assert got == {k: v for k, v in want.items() if k[0] not in failed}
    assert all(type(value) is int for row in rows for value in row[4:])


def summary(metric: str, subject: str, start: int, values: list[int], sum_: int) -> Point:
    """A stored summary point as Flux writes it, with ``sum_`` as its (maybe wrapped) sum."""
    return {"metric": metric, "subject_type": "org", "subject_id": subject, "org": None,
            "t": start, "count": len(values), "units_sum": sum_, "units_min": min(values),
            "units_max": max(values), "units_last": values[-1], "last_ts": start + len(values),
            "computed_at": 1}  # fmt: skip


def wrap(n: int) -> int:
    """``n`` as 64-bit two's complement arithmetic leaves it (what Flux's ``+`` gives)."""
    return (n + 2**63) % 2**64 - 2**63


def test_stored_summaries_are_never_wrapped_sums() -> None:
    """A stored summary the guard clears is returned as stored; one whose count × largest
    magnitude passes 2**63-1 is recomputed from its raw points (equal to Python's decimal
    where the total fits), and a series whose exact total does not fit is a SeriesError
    naming it, with the other rows: the wrapped number Flux stored is never returned."""
    day = summary_measurement(PeriodType.DAILY, "UTC")
    fits = [2**62, 2**62 - 1, -7]  # 3 × 2**62 > 2**63-1, yet the total fits
    beyond = [2**62, 2**62, 2**62]
    points = [raw("big", "fits", u, T + i + 1, f"f{i}") for i, u in enumerate(fits)]
    points += [raw("big", "beyond", u, T + i + 1, f"b{i}") for i, u in enumerate(beyond)]
    points += [raw("small", "s", 5, T + 1, "s0")]
    stored = [
        summary("big", "fits", T, fits, wrap(sum(fits))),
        summary("big", "beyond", T, beyond, wrap(sum(beyond))),
        summary("small", "s", T, [5], 5),
    ]
    fake = FakeFlux(points, {day: stored})
    rows = source(fake).stored(SummaryQuery("small", PeriodType.DAILY, T, T + 24 * H), day, T,
                               T + 24 * H)  # fmt: skip
    assert [(r.subject_id, r.sum) for r in rows] == [("s", 5)] and not fake.raw_queries
    with pytest.raises(SeriesError, match="beyond") as caught:
        source(fake).stored(SummaryQuery("big", PeriodType.DAILY, T, T + 24 * H), day, T,
                            T + 24 * H)  # fmt: skip
    assert caught.value.series == [("big", "org", "beyond", None)]
    (row,) = caught.value.rows
    exact = sum((Decimal(u) for u in fits), Decimal(0))
    assert (row.subject_id, row.period_start, row.period_end) == ("fits", T, 0)
    assert (row.record_count, row.sum, row.min, row.max) == (3, int(exact), -7, 2**62)
    assert {q["tsm_lo"] for q in fake.raw_queries} == {T}  # the day, from its raw points
    assert all(q["tsm_m0"] == "big" for q in fake.raw_queries)


def test_legacy_float_points_name_the_convert_command() -> None:
    """A raw point with only the old float ``quantity`` makes the components fail with an
    error naming ``tsmeter influx convert`` (never a sum that leaves it out), as does a
    summary with only the old float fields; a point whose fields are still arriving (no
    ``units``, no ``quantity``) is left for the next pass."""
    legacy = {**raw("m", "a", None, T + 5, "r1"), "quantity": 1.5}
    with pytest.raises(StorageUnavailableError, match="tsmeter influx convert"):
        source(FakeFlux([raw("m", "a", 2, T + 1, "r0"), legacy])).compute(Run(T, H, 1), None)
    partial = raw("m", "a", None, T + 5, "r1")
    rows = source(FakeFlux([raw("m", "a", 2, T + 1, "r0"), partial])).compute(Run(T, H, 1), None)
    assert [(r.record_count, r.sum) for r in rows.values()] == [(1, 2)]
    day = summary_measurement(PeriodType.DAILY, "UTC")
    old = {"metric": "m", "subject_type": "org", "subject_id": "a", "org": None, "t": T,
           "count": 1, "sum": 1.5, "min": 1.5, "max": 1.5, "last": 1.5,
           "last_ts": T + 5}  # fmt: skip
    query = SummaryQuery("m", PeriodType.DAILY, T, T + 24 * H)
    with pytest.raises(StorageUnavailableError, match="tsmeter influx convert"):
        source(FakeFlux([], {day: [old]})).stored(query, day, T, T + 24 * H)
