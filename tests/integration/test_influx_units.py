"""Exact quantities on a real influxd: integer units summed exactly, overflow an error, and
a database of an earlier version (float quantities) converted by ``tsmeter influx convert``.

Every expected total is computed here with Python's ``decimal`` over the same inputs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb import rollup as rollups
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.cli.main import cli
from tsmeter.domain import MetricDefinition, PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import MAX_UNITS, from_units, to_units
from tsmeter.errors import SeriesError, StorageUnavailableError
from tsmeter.ports import RecordQuery, SummaryQuery

pytestmark = pytest.mark.influxdb

T = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
H = 3_600_000_000_000
DAY = 24 * H
MONTH_END = T + 31 * DAY
UTC = Calendar()


@pytest.fixture
def store(influx_db: tuple[InfluxServer, str], tmp_path: Path) -> Iterator[InfluxStore]:
    server, db = influx_db
    made = InfluxStore.from_url(f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1",
                                ledger=str(tmp_path / "ledger.db"))  # fmt: skip
    try:
        yield made
    finally:
        made.close()


def rows_of(metric: str, values: list[Decimal], precision: int, subjects: int = 1,
            spread: int = H) -> list[RecordRow]:  # fmt: skip
    """One record per value, as units of ``precision``, spread over subjects and time."""
    return [
        RecordRow(f"{metric}-{i}", metric, "org", f"o{i % subjects}", None,
                  to_units("quantity", v, precision, None), T + (i * spread) // len(values) + i,
                  None, None)
        for i, v in enumerate(values)
    ]  # fmt: skip


def monthly(store: InfluxStore, metric: str, subject: str | None = None) -> list[tuple[str, int]]:
    """(subject, units summed) of the metric's January summaries, fresh."""
    query = SummaryQuery(metric, PeriodType.MONTHLY, T, MONTH_END, subject_type="org",
                         subject_id=subject)  # fmt: skip
    return [(r.subject_id, r.sum) for r in store.summaries(query, UTC)]


def stored_monthly(server: InfluxServer, db: str) -> dict[tuple[str, str], int]:
    """(metric, subject) -> units_sum of the monthly summary points influxd holds."""
    rows = server.series('SELECT * FROM "usage_monthly"', db)
    return {(r["metric"], r["subject_id"]): r["units_sum"] for r in rows}


def test_a_hundred_thousand_tenths_add_up_exactly(
    store: InfluxStore, influx_db: tuple[InfluxServer, str]
) -> None:
    """0.1 × 100,000 is 10,000 exactly, in the summaries read and in the points written."""
    server, db = influx_db
    values = [Decimal("0.1")] * 100_000
    rows = rows_of("tenths", values, 6, subjects=2, spread=20 * DAY)
    assert store.append(rows, 0) == 100_000
    expected = {f"o{k}": sum(values[k::2], Decimal(0)) for k in range(2)}
    assert expected == {"o0": Decimal(5000), "o1": Decimal(5000)}
    got = dict(monthly(store, "tenths"))
    assert {s: from_units(u, 6) for s, u in got.items()} == expected
    store.rollup(PeriodType.MONTHLY, UTC)
    written = stored_monthly(server, db)
    assert {s: from_units(written[("tenths", s)], 6) for s in expected} == expected
    daily = store.summaries(SummaryQuery("tenths", PeriodType.DAILY, T, MONTH_END), UTC)
    assert sum(from_units(r.sum, 6) for r in daily) == Decimal(10_000)


@pytest.mark.parametrize(
    ("precision", "make"),
    [
        (2, lambda rng: Decimal(rng.randrange(-(10**7), 10**7)).scaleb(-2)),  # cents
        (6, lambda rng: Decimal(rng.randrange(-(10**12), 10**12)).scaleb(-6)),  # 6 places
        (2, lambda rng: Decimal(rng.choice(["19.99", "0.01", "-0.01", "100.10", "0.30"]))),
    ],
)
def test_decimals_add_up_exactly(store: InfluxStore, precision: int, make: object) -> None:
    """Cents, six decimals and negative values: each period's total is the decimal sum,
    and MIN, MAX and LAST are the records'."""
    rng = random.Random(precision)
    values = [make(rng) for _ in range(3_000)]  # type: ignore[operator]
    rows = rows_of("money", values, precision, subjects=3, spread=10 * DAY)
    store.append(rows, 0)
    got = store.summaries(SummaryQuery("money", PeriodType.MONTHLY, T, MONTH_END), UTC)
    assert len(got) == 3
    for summary in got:
        mine = [v for v, r in zip(values, rows, strict=True) if r.subject_id == summary.subject_id]
        last = max((r.ts, r.id, v) for v, r in zip(values, rows, strict=True)
                   if r.subject_id == summary.subject_id)[2]  # fmt: skip
        assert from_units(summary.sum, precision) == sum(mine, Decimal(0))
        assert summary.record_count == len(mine)
        assert from_units(summary.min, precision) == min(mine)
        assert from_units(summary.max, precision) == max(mine)
        assert from_units(summary.last_value, precision) == last


def test_the_edges_of_the_64_bit_range(
    store: InfluxStore,
    influx_db: tuple[InfluxServer, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """±(2**63-1) units are stored and summed exactly; where a period's count times its
    largest value could overflow, its sum is added from the points a page at a time
    (a page of three here, with points of two writers at the same instants)."""
    server, db = influx_db
    monkeypatch.setattr(rollups, "SUM_PAGE", 3)
    big = [MAX_UNITS, MAX_UNITS, -MAX_UNITS, -5, 7, 2**62, -(2**62), -10]  # partial sums pass 2**63
    rows = [RecordRow(f"e{i}", "edge", "org", "o", None, u, T + (i // 2) * 1_000, None, None)
            for i, u in enumerate(big)]  # fmt: skip
    assert store.append(rows[0::2], 0) == 4
    # the other writer's points as it would write them, at the very same instants
    body = "".join(f'usage,metric=edge,subject_id=o,subject_type=org,w=w2 units={r.quantity}i,'
                   f'rid="{r.id}",tsn={r.ts}i {r.ts}\n' for r in rows[1::2])  # fmt: skip
    assert server.write(db, body.encode()).status_code == 204
    at = server.series('SELECT "units", "w" FROM "usage" WHERE "subject_id" = \'o\'', db)
    assert len({r["time"] for r in at}) == 4  # two points, one per writer, at each instant
    alone = [
        RecordRow("max", "edge", "org", "top", None, MAX_UNITS, T, None, None),
        RecordRow("min", "edge", "org", "bottom", None, -MAX_UNITS, T, None, None),
    ]
    store.append(alone, 0)
    got = dict(monthly(store, "edge"))
    assert got == {"o": sum(big), "top": MAX_UNITS, "bottom": -MAX_UNITS}
    assert sum(Decimal(u) for u in big) == Decimal(got["o"])  # independent of Python ints
    (summary,) = store.summaries(SummaryQuery("edge", PeriodType.MONTHLY, T, MONTH_END,
                                              subject_type="org", subject_id="o"), UTC)  # fmt: skip
    assert (summary.min, summary.max, summary.record_count) == (-MAX_UNITS, MAX_UNITS, 8)
    store.rollup(PeriodType.MONTHLY, UTC)
    assert dict(monthly(store, "edge")) == got


def test_a_total_beyond_64_bits_is_an_error_never_a_wrapped_number(
    store: InfluxStore, influx_db: tuple[InfluxServer, str]
) -> None:
    """Two records of 2**62 + 1 units sum past 2**63-1 (InfluxQL's sum would wrap to a
    negative number): the roll-up names the series and writes the others' summaries."""
    server, db = influx_db
    store.append([
        RecordRow("a", "huge", "org", "over", None, 2**62 + 1, T, None, None),
        RecordRow("b", "huge", "org", "over", None, 2**62 + 1, T + 5, None, None),
        RecordRow("c", "huge", "org", "fine", None, 2**62 + 1, T, None, None),
    ], 0)  # fmt: skip
    with pytest.raises(SeriesError, match="beyond the 64-bit range") as raised:
        store.rollup(PeriodType.MONTHLY, UTC)
    assert raised.value.series == [("huge", "org", "over", None)]
    assert "huge for org 'over'" in str(raised.value)
    assert stored_monthly(server, db) == {("huge", "fine"): 2**62 + 1}
    with pytest.raises(SeriesError, match="beyond the 64-bit range"):
        monthly(store, "huge", "over")
    assert monthly(store, "huge", "fine") == [("fine", 2**62 + 1)]


# -- a database written by an earlier version ----------------------------------------------

LEGACY = [
    # (metric, subject, float as the old version wrote it)
    ("tenths", "o1", 0.1), ("tenths", "o1", 0.2), ("tenths", "o1", 0.7),
    ("cents", "o1", 19.99), ("cents", "o1", 0.125), ("cents", "o2", -0.015),
    ("cents", "o2", 1e-9), ("gb", "o1", 1.5), ("gb", "o1", 2.25),
]  # fmt: skip
PRECISIONS = {"tenths": 6, "cents": 2}  # "gb" is not in the catalog: default precision 6


def write_legacy(server: InfluxServer, db: str) -> None:
    """Raw points and a summary as earlier versions wrote them (float fields)."""
    lines = []
    for i, (metric, subject, value) in enumerate(LEGACY):
        ts = T + i * H + 17
        lines.append(f"usage,metric={metric},subject_id={subject},subject_type=org,w=old "
                     f'quantity={value!r},rid="old-{i}",tsn={ts}i {ts}')  # fmt: skip
    lines.append("usage_monthly,metric=tenths,subject_id=o1,subject_type=org count=3i,"
                 f"sum=1.0,min=0.1,max=0.7,last=0.7,last_ts={T}i {T}")  # fmt: skip
    assert server.write(db, ("\n".join(lines) + "\n").encode()).status_code == 204


def expected_legacy() -> dict[tuple[str, str], Decimal]:
    """The legacy totals per (metric, subject), each value rounded half to even (from its
    shortest repr) to its metric's precision, with decimal."""
    out: dict[tuple[str, str], Decimal] = {}
    for metric, subject, value in LEGACY:
        places = Decimal(1).scaleb(-PRECISIONS.get(metric, 6))
        rounded = Decimal(repr(value)).quantize(places, rounding=ROUND_HALF_EVEN)
        out[(metric, subject)] = out.get((metric, subject), Decimal(0)) + rounded
    return out


def catalog() -> list[MetricDefinition]:
    return [MetricDefinition(key=k, name=k, precision=p) for k, p in PRECISIONS.items()]


def test_a_legacy_database_is_refused_until_converted_then_exact(
    store: InfluxStore, influx_db: tuple[InfluxServer, str]
) -> None:
    server, db = influx_db
    write_legacy(server, db)
    # raw reads: an error naming the command until the store knows the metric's precision
    with pytest.raises(StorageUnavailableError, match="tsmeter influx convert"):
        store.get_record("old-0")
    store.know_metrics(catalog())
    assert store.get_record("old-0").quantity == 100_000  # type: ignore[union-attr]
    # half to even from the shortest repr: 0.125 -> 0.12, -0.015 -> -0.02, 1e-9 -> 0.00
    assert [r.quantity for r in store.iter_records(RecordQuery("cents"))] == [1999, 12, -2, 0]
    # sums: refused, never a total that leaves the float points out
    for attempt in (lambda: store.rollup(PeriodType.MONTHLY, UTC),
                    lambda: monthly(store, "tenths")):  # fmt: skip
        with pytest.raises(StorageUnavailableError, match="tsmeter influx convert"):
            attempt()
    # new records of this version land beside them
    store.append([RecordRow("new-1", "tenths", "org", "o1", None, 300_000, T + 40 * H,
                            None, None)], 0)  # fmt: skip
    done = store.convert_units(catalog())
    assert (done.converted, done.rounded) == (len(LEGACY), 3)  # the three above
    assert done.unknown == {("gb", None)}
    expected = expected_legacy()
    expected[("tenths", "o1")] += Decimal("0.3")
    summed = {
        (metric, s): from_units(u, PRECISIONS.get(metric, 6))
        for metric in ("tenths", "cents", "gb")
        for s, u in monthly(store, metric)
    }
    assert summed == expected
    written = stored_monthly(server, db)  # recomputed over the converted range
    assert {k: from_units(v, PRECISIONS.get(k[0], 6)) for k, v in written.items()} == expected
    # the points keep their float and gained units; a second run converts nothing
    (point,) = server.series('SELECT * FROM "usage" WHERE "rid" = \'old-4\'', db)
    assert (point["quantity"], point["units"], point["w"]) == (0.125, 12, "old")
    again = store.convert_units(catalog())
    assert (again.converted, again.rounded, again.range) == (0, 0, None)
    store.rollup(PeriodType.MONTHLY, UTC)


def test_influx_convert_command(influx_db: tuple[InfluxServer, str], tmp_path: Path) -> None:
    """`tsmeter influx convert` reports what it converted and rounded; roll-ups then run."""
    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?state={tmp_path / 'state.db'}"
    runner = CliRunner()
    for key, precision in (("tenths", "6"), ("cents", "2")):
        result = runner.invoke(cli, ["--store", url, "metric", "define", key,
                                     "--precision", precision])  # fmt: skip
        assert result.exit_code == 0, result.output
    write_legacy(server, db)
    result = runner.invoke(cli, ["--store", url, "aggregate", "--period", "monthly"])
    assert result.exit_code != 0 and "tsmeter influx convert" in result.output
    result = runner.invoke(cli, ["--store", url, "influx", "convert"])
    assert result.exit_code == 0, result.output
    assert f"{len(LEGACY)} points converted to integer units, 3 of them rounded" in result.output
    assert "metric 'gb' is not in the catalog: converted at the default precision 6" in (
        result.output
    )
    result = runner.invoke(cli, ["--store", url, "aggregate", "--period", "monthly"])
    assert result.exit_code == 0, result.output
    written = stored_monthly(server, db)
    assert {k: from_units(v, PRECISIONS.get(k[0], 6)) for k, v in written.items()} == (
        expected_legacy()
    )


def test_connect_reads_points_not_converted_yet(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """A Meter from tsmeter.connect() reads the float points of an earlier version at their
    metric's precision before any conversion (bootstrap tells the store the catalog's)."""
    import tsmeter

    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?state={tmp_path / 'state.db'}"
    with tsmeter.connect(url, outbox=False, mirror=False) as meter:
        for key, precision in PRECISIONS.items():
            meter.define_metric(key, precision=precision)
    write_legacy(server, db)
    with tsmeter.connect(url, outbox=False, mirror=False) as meter:
        got = [r.quantity for r in meter.get_usage("cents")]
        assert got == [Decimal("19.99"), Decimal("0.12"), Decimal("-0.02"), Decimal("0.00")]
