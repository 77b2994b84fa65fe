"""Continuous queries on the real influxd 1.x write the summaries tsmeter's aggregator writes:
integer units, summed exactly (checked against Python's ``decimal``), and where a 64-bit sum
wraps around, :func:`~tsmeter.adapters.influxdb.cq.summed_exactly` tells its reader so."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb.client import (
    InfluxV1Client,
    InfluxV1Config,
    quote_ident,
    series_rows,
)
from tsmeter.adapters.influxdb.cq import continuous_queries, install, summed_exactly
from tsmeter.adapters.influxdb.schema import summary_measurement
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.errors import SeriesError, ValidationError
from tsmeter.ports import SummaryQuery

H = 3_600_000_000_000
FIELDS = ("count", "units_sum", "units_min", "units_max", "units_last", "last_ts")
Summaries = dict[Any, tuple[Any, ...]]


def summaries(client: InfluxV1Client, period: PeriodType, zone: str) -> Summaries:
    """The summary points of ``period`` as {(subject, start): (count, units_sum, units_min,
    units_max, units_last, last_ts)}, each field as stored (ints, checked below)."""
    (result,) = client.query(f"SELECT * FROM {quote_ident(summary_measurement(period, zone))}")
    return {
        (v["subject_id"], int(v["time"])): tuple(v[name] for name in FIELDS)
        for _, v in series_rows(result)
    }


def field_types(client: InfluxV1Client, period: PeriodType, zone: str) -> dict[str, str]:
    """``field -> type`` of the summary measurement, as influxd declares them."""
    measurement = quote_ident(summary_measurement(period, zone))
    (result,) = client.query(f"SHOW FIELD KEYS FROM {measurement}")
    return {v["fieldKey"]: v["fieldType"] for _, v in series_rows(result)}


def settle(read: Callable[[], dict[Any, Summaries]], want: dict[Any, set[Any]]) -> None:
    """Wait until the queries have covered every wanted period and stopped changing."""
    deadline = time.monotonic() + 60
    previous: dict[Any, Summaries] = {}
    while True:
        current = read()
        if current == previous and all(set(current[p]) == want[p] for p in want):
            return
        assert time.monotonic() < deadline, "the continuous queries did not settle in 60 s"
        previous = current
        time.sleep(1.0)


def units_of(i: int) -> int:
    """Quantities a float cannot sum exactly (above 2**53), some negative; 50 of them still
    sum within 64 bits."""
    value = 2**55 + i * 7_919 + (i % 3)
    return -value if i % 5 == 0 else value


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu"])
def test_continuous_queries_sum_units_exactly(
    influx_db: tuple[InfluxServer, str], tmp_path: Path, zone: str
) -> None:
    """Hourly and daily summaries from the installed continuous queries are integer fields
    equal to Python's ``decimal`` over the same records (count, sum, min, max, last by time,
    last_ts), and equal to the ones ``aggregate`` writes (records in the last two hours, so
    the queries' resample window covers them)."""
    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={tmp_path / 'state.db'}"
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000
    rows = [
        RecordRow(f"r{i}", "api_calls", "org", f"o{i % 3}", None, units_of(i),
                  now - i * 37_000_000_000, None, None)
        for i in range(150)
    ]  # fmt: skip
    store = InfluxStore.from_url(url, ledger=str(tmp_path / "state.db"))
    client = InfluxV1Client(InfluxV1Config(f"http://127.0.0.1:{server.port}", db))
    try:
        assert store.append(rows, 0) == 150
        install(client, zone, every="1s")  # what `tsmeter influx install-rollups` runs
        cal = Calendar(zone)
        periods = (PeriodType.HOURLY, PeriodType.DAILY)
        expected: dict[PeriodType, Summaries] = {}
        for period in periods:
            groups: dict[Any, list[RecordRow]] = {}
            for r in rows:
                groups.setdefault((r.subject_id, cal.start_of(period, r.ts)), []).append(r)
            expected[period] = {}
            for key, group in groups.items():
                total = sum((Decimal(r.quantity) for r in group), Decimal(0))
                newest = max(group, key=lambda r: r.ts)
                expected[period][key] = (
                    len(group), int(total), min(r.quantity for r in group),
                    max(r.quantity for r in group), newest.quantity, newest.ts,
                )  # fmt: skip
        settle(
            lambda: {p: summaries(client, p, zone) for p in periods},
            {p: set(expected[p]) for p in periods},
        )
        for name in continuous_queries(db, zone, lateness=dict.fromkeys(PeriodType, "1h")):
            client.query(f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {quote_ident(db)}")
        time.sleep(1.0)  # a pass that was already running finishes
        from_cq = {p: summaries(client, p, zone) for p in periods}
        for period in periods:
            assert from_cq[period] == expected[period], period
            assert all(type(v) is int for s in from_cq[period].values() for v in s)
            types = field_types(client, period, zone)
            assert {types[name] for name in FIELDS} == {"integer"}, types
            assert all(summed_exactly(s[0], s[2], s[3]) for s in from_cq[period].values())
        for period in periods:
            measurement = quote_ident(summary_measurement(period, zone))
            client.query(f"DROP MEASUREMENT {measurement}")
            store.rollup(period, Calendar(zone), now - 3 * 24 * H, now + H)
            assert summaries(client, period, zone) == from_cq[period], period
    finally:
        client.close()
        store.close()


def test_a_wrapped_sum_is_flagged(influx_db: tuple[InfluxServer, str]) -> None:
    """InfluxQL adds integers in 64 bits and wraps around without an error: three points of
    2**62 units sum to a negative number in the summary the continuous query writes. The
    components say so (count × max > 2**63-1), so its reader never takes it for a total."""
    server, db = influx_db
    client = InfluxV1Client(InfluxV1Config(f"http://127.0.0.1:{server.port}", db))
    store = InfluxStore.from_url(f"influxdb://127.0.0.1:{server.port}/{db}")
    try:
        store.rollup(PeriodType.HOURLY, Calendar("UTC"))  # the store's own roll-ups have run
        now = time.time_ns() // 1_000_000_000 * 1_000_000_000
        times = [now - (i + 1) * 1_000_000 for i in range(4)]  # one second, so one hour
        values = [2**62, 2**62 - 1, 2**62 - 2, 5]
        lines = [
            f'usage,metric=big,subject_type=org,subject_id=o1 units={v}i,rid="r{i}",tsn={t}i {t}'
            for i, (v, t) in enumerate(zip(values, times, strict=True))
        ]
        client.write("\n".join(lines).encode())
        exact = sum((Decimal(v) for v in values), Decimal(0))
        assert exact > 2**63 - 1  # what a 64-bit field cannot hold
        queries = continuous_queries(db, "UTC", every="1s", lateness={PeriodType.HOURLY: "1h"})
        for statement in queries.values():
            client.query(statement, database=False)
        start = Calendar("UTC").start_of(PeriodType.HOURLY, times[0])
        settle(
            lambda: {"h": summaries(client, PeriodType.HOURLY, "UTC")},
            {"h": {("o1", start)}},
        )
        found = summaries(client, PeriodType.HOURLY, "UTC")[("o1", start)]
        count, total, low, high, *_ = found
        wrapped = (int(exact) + 2**63) % 2**64 - 2**63  # two's complement, as Go's int64
        assert found == (4, wrapped, 5, 2**62, 2**62, times[0])
        assert total != exact and not summed_exactly(count, low, high)
        # the store never reads the wrapped total as one: it sums the points again, and names
        # the series whose total a 64-bit field cannot hold
        query = SummaryQuery("big", PeriodType.HOURLY, start, start + H)
        with pytest.raises(SeriesError, match="64-bit"):
            store.summaries(query, Calendar("UTC"))
        for name in queries:
            client.query(f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {quote_ident(db)}")
    finally:
        store.close()
        client.close()


def test_durations_are_checked() -> None:
    """A run interval that is not an InfluxQL duration is refused before anything is sent."""
    with pytest.raises(ValidationError, match="every"):
        continuous_queries("db", "UTC", every="1m; DROP DATABASE db", lateness={})
