"""Incremental roll-ups on a real influxd process only what is new: nothing new reads no
entries and recomputes nothing, a late record recomputes its periods alone, and the
summaries always equal a brute force over the records written."""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb import changelog
from tsmeter.adapters.influxdb import rollup as rollups
from tsmeter.adapters.influxdb import store as influx_store
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.ports import SummaryQuery

T = 1_790_812_800_000_000_000  # 2026-10-01T00:00:00Z
H = 3_600_000_000_000
MIN = 60_000_000_000
CAL = Calendar()
Summary = tuple[int, int, int, int, int, int]  # count, sum, min, max, last_ts, last


def url(server: InfluxServer, db: str, writer: str) -> str:
    """The store URL of ``db`` for ``writer``."""
    return f"influxdb://127.0.0.1:{server.port}/{db}?writer={writer}"


def record(rid: str, hour: float, quantity: int, metric: str = "tokens",
           subject: str = "o1") -> RecordRow:  # fmt: skip
    """A record of ``quantity`` units ``hour`` hours after T."""
    return RecordRow(rid, metric, "org", subject, None, quantity, T + int(hour * H),
                     None, None)  # fmt: skip


def brute(records: list[RecordRow]) -> dict[tuple[str, str, int], Summary]:
    """HOURLY summaries computed here from the records, with Python integers."""
    out: dict[tuple[str, str, int], Summary] = {}
    for r in sorted(records, key=lambda r: (r.ts, r.id)):
        start = r.ts - r.ts % H
        q = int(r.quantity)
        key = (r.metric_key, r.subject_id, start)
        c, s, lo, hi, _, _ = out.get(key, (0, 0, q, q, 0, 0))
        out[key] = (c + 1, s + q, min(lo, q), max(hi, q), r.ts, q)
    return out


def stored(server: InfluxServer, db: str) -> dict[tuple[str, str, int], Summary]:
    """The HOURLY summary points as influxd holds them."""
    rows = server.series('SELECT * FROM "usage_hourly"', db)
    return {
        (r["metric"], r["subject_id"], r["time"]): (
            r["count"], r["units_sum"], r["units_min"], r["units_max"], r["last_ts"],
            r["units_last"],
        )
        for r in rows
    }  # fmt: skip


@contextmanager
def store_clock_behind(minutes: int) -> Iterator[None]:
    """Run the InfluxDB store's clock ``minutes`` behind. The store stamps its change-log
    entries with ``time.time_ns()`` of its own module, and a host whose clock lags is the
    case under test: replacing that one clock source is the only way to have two writers'
    clocks disagree within one test process (the system clock is shared and cannot be set
    here); everything else, the server included, is real."""
    real = influx_store.time
    fake = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if k[:2] != "__"})
    fake.time_ns = lambda: real.time_ns() - minutes * MIN
    influx_store.time = fake  # type: ignore[assignment]
    try:
        yield
    finally:
        influx_store.time = real


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Move the roll-up host's clock forward by a given number of ns: the settle line follows
    that clock, and a test cannot wait ten minutes for it (the only fake in these tests)."""
    offset = [0]
    real = rollups.clock
    monkeypatch.setattr(rollups, "clock", lambda: real() + offset[0])

    def move(ns: int) -> None:
        offset[0] += ns

    return move


@pytest.fixture
def stores(influx_db: tuple[InfluxServer, str]) -> Iterator[tuple[InfluxServer, str, InfluxStore]]:
    """The server, the database and a store writing as ``w1``."""
    server, db = influx_db
    store = InfluxStore.from_url(url(server, db, "w1"))
    try:
        yield server, db, store
    finally:
        store.close()


def month(n: int = 300) -> list[RecordRow]:
    """``n`` records of two metrics and three subjects over the month's first 100 hours."""
    return [
        record(
            f"r{i:04d}",
            (i * 37 % 6000) / 60,
            i % 13 + 1,
            "tokens" if i % 3 else "calls",
            f"o{i % 3}",
        )
        for i in range(n)
    ]


def test_nothing_new_recomputes_nothing(stores: tuple[InfluxServer, str, InfluxStore]) -> None:
    """After the first run, runs with nothing new recompute no period, and the summaries
    are the brute force's."""
    server, db, store = stores
    records = month()
    store.append(records, 0)
    first = store.rollup(PeriodType.HOURLY, CAL)
    assert first.periods_recomputed == 100
    for _ in range(3):
        assert store.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 0
    assert stored(server, db) == brute(records)


def test_a_late_record_recomputes_only_its_period(
    stores: tuple[InfluxServer, str, InfluxStore],
) -> None:
    """One late record recomputes its hour of its metric alone; then nothing again."""
    server, db, store = stores
    records = month()
    store.append(records, 0)
    store.rollup(PeriodType.HOURLY, CAL)
    late = record("late-1", 42.5, 1000, "tokens", "o1")
    store.append([late], 0)
    stats = store.rollup(PeriodType.HOURLY, CAL)
    assert (stats.periods_recomputed, stats.range_start, stats.range_end) == (
        1,
        T + 42 * H,
        T + 43 * H,
    )
    hour = [r for r in records if r.metric_key == "tokens" and T + 42 * H <= r.ts < T + 43 * H]
    assert stats.summaries_written == len({r.subject_id for r in [*hour, late]})
    assert store.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 0
    assert stored(server, db) == brute([*records, late])


def test_a_writer_whose_clock_lags(influx_db: tuple[InfluxServer, str]) -> None:
    """A second writer whose clock is 4 minutes behind stamps its entry before the ones a
    run already processed: the next run still finds it, and recomputes its period alone."""
    server, db = influx_db
    ahead = InfluxStore.from_url(url(server, db, "w1"))
    behind = InfluxStore.from_url(url(server, db, "w2"))
    try:
        records = month()
        ahead.append(records, 0)
        ahead.rollup(PeriodType.HOURLY, CAL)
        ahead.append([record("a-late", 10.25, 7)], 0)  # the watermark moves to now
        assert ahead.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 1
        with store_clock_behind(4):
            behind.append([record("b-late", 70.5, 11, "calls", "o2")], 0)
        (entry,) = server.series('SELECT * FROM "usage_dirty" WHERE "w" = \'w2\'', db)
        assert entry["time"] < rollups.watermark(ahead.transport.client, PeriodType.HOURLY, CAL)
        stats = ahead.rollup(PeriodType.HOURLY, CAL)
        assert (stats.periods_recomputed, stats.range_start) == (1, T + 70 * H)
        assert ahead.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 0
        expected = brute([*records, record("a-late", 10.25, 7),
                          record("b-late", 70.5, 11, "calls", "o2")])  # fmt: skip
        assert stored(server, db) == expected
    finally:
        ahead.close()
        behind.close()


def test_an_entry_landing_after_a_run_read_the_log(
    stores: tuple[InfluxServer, str, InfluxStore],
) -> None:
    """A write in flight: its record and its change-log entry, stamped a minute before the
    entries a run processed, land after that run. The next run recomputes its period."""
    server, db, store = stores
    records = month()
    store.append(records, 0)
    store.rollup(PeriodType.HOURLY, CAL)
    mark = rollups.watermark(store.transport.client, PeriodType.HOURLY, CAL)
    assert mark is not None
    ts = T + 55 * H + 17
    lines = (
        f'usage,metric=tokens,subject_id=o0,subject_type=org,w=w9 units=9i,rid="f1",'
        f"tsn={ts}i {ts}\n"
        f"usage_dirty,metric=tokens,w=w9 hour={ts // H}i {mark - MIN}\n"
    )
    assert server.write(db, lines.encode()).status_code == 204
    stats = store.rollup(PeriodType.HOURLY, CAL)
    assert (stats.periods_recomputed, stats.range_start) == (1, T + 55 * H)
    late = RecordRow("f1", "tokens", "org", "o0", None, 9, ts, None, None)
    assert stored(server, db) == brute([*records, late])
    assert store.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 0


def test_a_write_seen_in_part_is_settled_later(
    stores: tuple[InfluxServer, str, InfluxStore], later: Any
) -> None:
    """A run can see a write's change-log entry before its record (InfluxDB shows a write's
    points a shard at a time): once the settle time has passed, a run recomputes that
    period again and the summary is right; after that nothing is recomputed."""
    server, db, store = stores
    records = month(30)
    store.append(records, 0)
    store.rollup(PeriodType.HOURLY, CAL)
    ts = T + 20 * H + 5
    stamp = store._log_clock + 1_000  # after every entry the store wrote
    entry = f"usage_dirty,metric=tokens,w=w9 hour={ts // H}i {stamp}\n"
    assert server.write(db, entry.encode()).status_code == 204
    assert store.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 1
    point = (f'usage,metric=tokens,subject_id=o2,subject_type=org,w=w9 units=4i,rid="p1",'
             f"tsn={ts}i {ts}\n")  # fmt: skip
    assert server.write(db, point.encode()).status_code == 204
    assert store.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 0  # not settled yet
    later(changelog.SETTLE + MIN)
    stats = store.rollup(PeriodType.HOURLY, CAL)
    assert stats.periods_recomputed >= 1 and (T + 20 * H, T + 21 * H) in _hours(stats)
    late = RecordRow("p1", "tokens", "org", "o2", None, 4, ts, None, None)
    assert stored(server, db) == brute([*records, late])
    assert store.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 0


def _hours(stats: Any) -> set[tuple[int, int]]:
    """The hours a run's range covers."""
    return {(a, a + H) for a in range(stats.range_start, stats.range_end, H)}


def test_a_restart_between_runs(influx_db: tuple[InfluxServer, str]) -> None:
    """The ledger lives in the database: a new process (a new store) continues where the
    last run stopped, recomputing nothing, then only what is new."""
    server, db = influx_db
    records = month()
    first = InfluxStore.from_url(url(server, db, "w1"))
    try:
        first.append(records, 0)
        first.rollup(PeriodType.HOURLY, CAL)
    finally:
        first.close()
    second = InfluxStore.from_url(url(server, db, "w1"))
    try:
        assert second.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 0
        second.append([record("after", 99.5, 3, "calls", "o1")], 0)
        assert second.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 1
        assert stored(server, db) == brute([*records, record("after", 99.5, 3, "calls", "o1")])
    finally:
        second.close()


def test_the_ledger_spans_several_fields_when_large(
    stores: tuple[InfluxServer, str, InfluxStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger longer than one string field holds is cut into several, and read back whole:
    nothing new still recomputes nothing."""
    server, db, store = stores
    monkeypatch.setattr(changelog, "PART", 50)
    records = month(60)
    for i in range(0, 60, 5):  # twelve writes: twelve ranges of stamps per series
        store.append(records[i : i + 5], 0)
    store.rollup(PeriodType.HOURLY, CAL)
    (state,) = server.series('SELECT * FROM "tsmeter_state"', db)
    assert state["parts"] > 3 and all(len(state[f"seen{i}"]) <= 50 for i in range(state["parts"]))
    assert store.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 0
    assert stored(server, db) == brute(records)


def test_fresh_summaries_include_what_no_run_processed(
    stores: tuple[InfluxServer, str, InfluxStore],
) -> None:
    """A query between runs recomputes the periods of entries not processed yet."""
    _, _, store = stores
    records = month()
    store.append(records, 0)
    store.rollup(PeriodType.HOURLY, CAL)
    store.append([record("q1", 30.5, 500, "tokens", "o0")], 0)

    query = SummaryQuery("tokens", PeriodType.HOURLY, T + 30 * H, T + 31 * H,
                         subject_type="org", subject_id="o0")  # fmt: skip
    rows = store.summaries(query, CAL)
    expected = brute([*records, record("q1", 30.5, 500, "tokens", "o0")])[
        ("tokens", "o0", T + 30 * H)
    ]
    assert [(r.record_count, r.sum) for r in rows] == [expected[:2]]
    assert store.rollup(PeriodType.HOURLY, CAL).periods_recomputed == 1  # the query wrote none


def test_a_level_below_is_written_only_where_it_is_kept(
    stores: tuple[InfluxServer, str, InfluxStore],
) -> None:
    """MONTHLY alone writes no hourly or daily summaries (influxd is not asked for them);
    once DAILY and HOURLY have run, MONTHLY brings them up to date first, late records
    included."""
    server, db, store = stores
    records = month()
    store.append(records, 0)
    store.rollup(PeriodType.MONTHLY, CAL)
    for below in ("usage_hourly", "usage_daily"):
        assert server.series(f'SELECT count("count") FROM "{below}"', db) == []
    (row,) = server.series('SELECT sum("units_sum"), sum("count") FROM "usage_monthly"', db)
    assert (row["sum"], row["sum_1"]) == (sum(r.quantity for r in records), len(records))
    store.rollup(PeriodType.HOURLY, CAL)
    store.rollup(PeriodType.DAILY, CAL)
    late = [record("late", 5.5, 1000)]
    store.append(late, 0)
    store.rollup(PeriodType.MONTHLY, CAL)
    assert stored(server, db) == brute(records + late)
    (day,) = server.series('SELECT sum("units_sum") FROM "usage_daily"', db)
    assert day["sum"] == sum(r.quantity for r in records + late)
