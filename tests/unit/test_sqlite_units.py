"""The embedded store keeps integer units: sums are exact against Python's ``decimal`` over
the same records (a million tenths, cents, six places, negative corrections, the 64-bit
edge), a sum beyond 64 bits is an error naming its series, a month rolls up exactly through
hours and days, and a version-1 file (float quantities) is converted when opened."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import tsmeter
from tsmeter.adapters.sqlite import SQLiteStore
from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.errors import SeriesError, StorageUnavailableError
from tsmeter.ports import SummaryQuery, SummaryRow

H = 3_600_000_000_000
DAY = 24 * H
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) * 10**9  # 2026-03-01T00:00Z
MONTH = 31 * DAY  # March
UTC_CAL = Calendar("UTC")
PARIS = Calendar("Europe/Paris")
MAX_UNITS = 2**63 - 1


def units_of(value: str, places: int) -> int:
    """The units of a decimal text with at most ``places`` places (the test's own scaling)."""
    scaled = Decimal(value) * 10**places
    assert scaled == scaled.to_integral_value()
    return int(scaled)


def as_decimal(units: int, places: int) -> Decimal:
    """The decimal of ``units`` at ``places``."""
    return Decimal(units) / 10**places


def row(rid: str, ts: int, units: int, subject: str = "s1", metric: str = "m") -> RecordRow:
    """A record row of ``metric`` for org ``subject``."""
    return RecordRow(rid, metric, "org", subject, None, units, ts, None, None)


def summaries(
    store: SQLiteStore,
    period: PeriodType,
    calendar: Calendar = UTC_CAL,
    metric: str = "m",
    subject: str | None = None,
) -> list[SummaryRow]:
    """Every summary of ``period`` of ``metric`` from February to April 2026."""
    q = SummaryQuery(metric, period, T0 - 31 * DAY, T0 + 2 * MONTH, subject_id=subject)
    return store.summaries(q, calendar)


def check_every_level(
    store: SQLiteStore,
    expected: Decimal,
    places: int,
    calendar: Calendar = UTC_CAL,
    subject: str | None = None,
) -> None:
    """Fresh from raw, then after HOURLY, DAILY and MONTHLY roll-ups (each from the one
    below): the hourly, daily and monthly totals all add up to ``expected`` exactly."""
    for rolled in (False, True):
        for period in (PeriodType.HOURLY, PeriodType.DAILY, PeriodType.MONTHLY):
            if rolled:
                store.rollup(period, calendar)
            rows = summaries(store, period, calendar, subject=subject)
            assert all(type(r.sum) is int for r in rows)
            total = sum((as_decimal(r.sum, places) for r in rows), Decimal(0))
            assert total == expected, (period, rolled)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    """An embedded store in a fresh file."""
    opened = SQLiteStore(str(tmp_path / "u.db"))
    yield opened  # type: ignore[misc]
    opened.close()


# -- exact sums ------------------------------------------------------------------------------
def test_a_million_tenths_sum_exactly(store: SQLiteStore) -> None:
    """1,000,000 records of 0.1 (precision 1: one unit each) over March sum to exactly
    100000.0 in raw reads and through hourly → daily → monthly roll-ups, where adding the
    floats one by one would not."""
    store.append([row("seed", T0, 1)], 0)  # creates the series
    n = 1_000_000
    step = (MONTH - 1) // n
    with closing(sqlite3.connect(store.path)) as conn, conn:
        (sid,) = conn.execute("SELECT id FROM series").fetchone()
        conn.execute(  # the same rows and dirty-log entries append() writes, in bulk
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)"
            " INSERT INTO usage_records (id, series_id, ts, units, recorded_at)"
            " SELECT printf('r%07d', i), ?, ? + i * ?, 1, 0 FROM k",
            (n - 1, sid, T0, step),
        )
        conn.execute(
            "INSERT INTO dirty (series_id, hour) SELECT DISTINCT series_id, ts / ? FROM"
            " usage_records",
            (H,),
        )
    expected = sum([Decimal("0.1")] * n, Decimal(0))
    assert expected == Decimal("100000.0")
    floats = 0.0
    for _ in range(n):
        floats += 0.1
    assert floats != 100000.0  # what a REAL column's running sum is exposed to
    check_every_level(store, expected, 1)
    (month,) = summaries(store, PeriodType.MONTHLY)
    assert (month.record_count, month.sum, month.min, month.max) == (n, n, 1, 1)


def test_cents_sum_exactly_in_paris_months(store: SQLiteStore) -> None:
    """Prices in cents (precision 2) over two months in Paris: totals equal the decimal sum."""
    rng = random.Random(2)
    values = [f"{rng.randrange(0, 100_000)}.{rng.randrange(100):02d}" for _ in range(5000)]
    values += ["0.01", "0.10", "19.99", "0.05"]
    rows = [row(f"c{i}", T0 - 5 * DAY + i * 17 * 60 * 10**9, units_of(v, 2))
            for i, v in enumerate(values)]  # fmt: skip
    assert store.append(rows, 0) == len(rows)
    expected = sum((Decimal(v) for v in values), Decimal(0))
    check_every_level(store, expected, 2, PARIS)
    monthly = summaries(store, PeriodType.MONTHLY, PARIS)
    assert len(monthly) == 3  # February, March, April in Paris
    by_month: dict[int, Decimal] = {}
    for r, v in zip(rows, values, strict=True):
        month = datetime.fromtimestamp(r.ts // 10**9, ZoneInfo("Europe/Paris")).month
        by_month[month] = by_month.get(month, Decimal(0)) + Decimal(v)
    assert [as_decimal(m.sum, 2) for m in monthly] == [by_month[k] for k in sorted(by_month)]


def test_six_places_and_negative_corrections(store: SQLiteStore) -> None:
    """Six decimal places, and negative corrections that cancel charges exactly (to a zero
    total in one series): sum, min and max equal the decimal computation."""
    rng = random.Random(6)
    charges = [f"{rng.randrange(0, 10**6)}.{rng.randrange(10**6):06d}" for _ in range(3000)]
    corrections = [f"-{v}" for v in charges[::3]]
    values = charges + corrections + ["0.000001", "-0.000001"]
    rows = [row(f"x{i}", T0 + (i * 7919) % MONTH, units_of(v, 6)) for i, v in enumerate(values)]
    zero = [row("z1", T0 + H, units_of("12.345678", 6), "zero"),
            row("z2", T0 + 20 * DAY, units_of("-12.345678", 6), "zero")]  # fmt: skip
    store.append(rows + zero, 0)
    expected = sum((Decimal(v) for v in values), Decimal(0))
    check_every_level(store, expected, 6, subject="s1")
    check_every_level(store, Decimal(0), 6, subject="zero")
    (month,) = summaries(store, PeriodType.MONTHLY, subject="s1")
    assert as_decimal(month.min, 6) == min(Decimal(v) for v in values)
    assert as_decimal(month.max, 6) == max(Decimal(v) for v in values)
    (zeroed,) = summaries(store, PeriodType.MONTHLY, subject="zero")
    assert (zeroed.sum, zeroed.record_count, zeroed.last_value) == (0, 2, -12_345_678)


def test_values_at_the_64_bit_edge(store: SQLiteStore) -> None:
    """±(2**63-1) units are stored and summed exactly, also where a running sum leaves the
    64-bit range on the way but the total is back within it (SQLite's sum() would stop):
    in a raw read, in an hour, and across hours into a day and a month."""
    edge = [
        row("a", T0 + H, MAX_UNITS, "edge"),
        row("b", T0 + H + 1, MAX_UNITS, "edge"),  # running sum 2**64 - 2 within the hour
        row("c", T0 + H + 2, -MAX_UNITS, "edge"),
        row("d", T0 + 2 * H, MAX_UNITS, "hours"),
        row("e", T0 + 3 * H, MAX_UNITS, "hours"),  # two hours that fit; their day runs over
        row("f", T0 + 4 * H, -MAX_UNITS, "hours"),
        row("g", T0 + 5 * H, -MAX_UNITS, "low"),
        row("h", T0 + 6 * H, 0, "low"),
    ]
    store.append(edge, 0)
    want = {"edge": MAX_UNITS, "hours": MAX_UNITS, "low": -MAX_UNITS}
    for subject, total in want.items():
        rows = [r for r in edge if r.subject_id == subject]
        assert sum(r.quantity for r in rows) == total  # Python's unbounded ints
        check_every_level(store, Decimal(total), 0, subject=subject)
    for period in (PeriodType.DAILY, PeriodType.MONTHLY, PeriodType.YEARLY):
        store.rollup(period, UTC_CAL)
        got = {r.subject_id: (r.sum, r.min, r.max) for r in summaries(store, period)}
        assert got == {
            "edge": (MAX_UNITS, -MAX_UNITS, MAX_UNITS),
            "hours": (MAX_UNITS, -MAX_UNITS, MAX_UNITS),
            "low": (-MAX_UNITS, -MAX_UNITS, 0),
        }


@pytest.mark.parametrize("rolled", [False, True])
def test_a_sum_beyond_64_bits_is_an_error_naming_the_series(
    store: SQLiteStore, rolled: bool
) -> None:
    """Units whose total in a period is beyond ±(2**63-1) (within an hour, or only once hours
    are added into a day, or exactly -2**63) are a SeriesError (a StorageUnavailableError)
    naming each such series, never a float or a wrapped sum; the other series' summaries are
    written and travel with the error."""
    store.append([
        row("o1", T0 + H, MAX_UNITS, "over-in-hour"), row("o2", T0 + H + 1, 1, "over-in-hour"),
        row("p1", T0 + H, MAX_UNITS, "over-in-day"),
        row("p2", T0 + 5 * H, MAX_UNITS, "over-in-day"),
        row("q1", T0 + H, -MAX_UNITS, "minus"), row("q2", T0 + 3 * H, -1, "minus"),
        row("ok", T0 + H, 7, "fine"),
    ], 0)  # fmt: skip
    bad = {"over-in-hour", "over-in-day", "minus"}
    for period in (PeriodType.HOURLY, PeriodType.DAILY, PeriodType.MONTHLY):
        if rolled:
            with pytest.raises(SeriesError) as run:
                store.rollup(period, UTC_CAL)
            failed = {s[2] for s in run.value.series}
            assert failed == ({"over-in-hour"} if period is PeriodType.HOURLY else bad)
        with pytest.raises(StorageUnavailableError) as caught:
            summaries(store, period)
        error = caught.value
        assert isinstance(error, SeriesError)
        for subject in {s[2] for s in error.series}:
            assert f"m for org {subject!r}" in str(error)
        assert "64-bit" in str(error) and "'fine'" not in str(error)
        assert [(r.subject_id, r.sum) for r in error.rows if r.subject_id == "fine"] == [
            ("fine", 7)
        ]
        assert [r.sum for r in summaries(store, period, subject="fine")] == [7]
    with closing(sqlite3.connect(store.path)) as conn:
        kinds = {t for (t,) in conn.execute("SELECT DISTINCT typeof(total) FROM summaries")}
    assert kinds <= {"integer", "null"}  # never a REAL


def test_a_quantity_that_is_not_integer_units_is_refused(store: SQLiteStore) -> None:
    """A row whose quantity is a float, or beyond 64 bits, is a ValidationError naming it; the
    call stores nothing."""
    from tsmeter.errors import ValidationError

    for bad in (2.5, 1.0, 2**63, -(2**63)):
        with pytest.raises(ValidationError) as caught:
            store.append([row("ok", T0, 1), row("bad", T0, bad)], 0)  # type: ignore[arg-type]
        assert caught.value.field == "records[1].quantity"
    assert store.get_record("ok") is None


def test_a_month_through_the_meter_is_exact_decimals(tmp_path: Path) -> None:
    """Recorded through the Meter at precision 2, a month rolled up through hours and days is
    the decimal sum, with the metric's two places."""
    values = [f"{d}.{h:02d}" for d in range(1, 29) for h in range(0, 24, 5)]
    with tsmeter.connect(f"sqlite:///{tmp_path}/m.db") as meter:
        meter.define_metric("price", precision=2)
        meter.record_batch([
            {"metricKey": "price", "subjectType": "org", "subjectId": "acme", "quantity": v,
             "timestamp": datetime(2026, 2, int(v.split(".")[0]), int(v.split(".")[1]),
                                   tzinfo=UTC), "id": f"p{i}"}
            for i, v in enumerate(values)
        ])  # fmt: skip
        for period in ("HOURLY", "DAILY", "MONTHLY"):
            meter.aggregate(period)
        month = meter.get_usage_summary(
            "price", "org", "acme", "MONTHLY", at="2026-02-10T00:00:00Z"
        )
    expected = sum((Decimal(v) for v in values), Decimal(0))
    assert month.total_quantity == expected and str(month.total_quantity) == str(expected)


# -- a version-1 file (float quantities) -----------------------------------------------------
#: the schema tsmeter wrote before integer units (version 1), as it was
V1_DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    id TEXT PRIMARY KEY,
    org_key TEXT NOT NULL,          -- '' for global metrics
    key TEXT NOT NULL,
    doc TEXT NOT NULL,              -- the definition as camelCase JSON
    UNIQUE (org_key, key)
);
CREATE TABLE IF NOT EXISTS thresholds (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
-- One row per (metric, subject): records and summaries refer to it by number.
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    org_key TEXT NOT NULL,
    metric_key TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    UNIQUE (org_key, metric_key, subject_type, subject_id)
);
-- Clustered by id (the idempotency key), so de-duplication costs no extra index.
CREATE TABLE IF NOT EXISTS usage_records (
    id TEXT PRIMARY KEY,
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,            -- ns since the epoch, UTC
    quantity REAL NOT NULL,
    metadata TEXT,
    source TEXT,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Covers the roll-up queries (the id rides along as the key suffix: LAST tie-break).
CREATE INDEX IF NOT EXISTS usage_records_series_ts ON usage_records (series_id, ts, quantity);
-- Which (series, UTC hour) received records, in write order. seq only grows
-- (AUTOINCREMENT never reuses a number) so roll-ups keep a watermark on it.
CREATE TABLE IF NOT EXISTS dirty (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    series_id INTEGER NOT NULL,
    hour INTEGER NOT NULL           -- ts // 3600e9
);
CREATE TABLE IF NOT EXISTS summaries (
    period_type TEXT NOT NULL,
    tz TEXT NOT NULL,
    series_id INTEGER NOT NULL,
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    cnt INTEGER NOT NULL,
    total REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    last_ts INTEGER NOT NULL,
    last_value REAL NOT NULL,
    computed_at INTEGER NOT NULL,
    PRIMARY KEY (period_type, tz, series_id, period_start)
) WITHOUT ROWID;
-- Threshold alerts. At most one open (not RESOLVED) alert per threshold, subject, window and
-- level. automatic = 1: resolved by the monitor (usage fell), so the level may fire again.
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    threshold_id TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,  -- ns, 0 for a lifetime window
    level TEXT NOT NULL,
    status TEXT NOT NULL,
    automatic INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL               -- the UsageAlert as camelCase JSON
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open
    ON alerts (threshold_id, subject_type, subject_id, window_start, level)
    WHERE status != 'RESOLVED';
CREATE INDEX IF NOT EXISTS alerts_window ON alerts (threshold_id, window_start);
-- Metering events (threshold crossings, aggregation runs), for dashboards and audits.
CREATE TABLE IF NOT EXISTS metering_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    name TEXT NOT NULL,
    metric_key TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    org_key TEXT NOT NULL,
    data TEXT NOT NULL              -- JSON object
);
CREATE INDEX IF NOT EXISTS metering_events_ts ON metering_events (ts);
CREATE TABLE IF NOT EXISTS rollup_state (
    period_type TEXT NOT NULL,
    tz TEXT NOT NULL,
    watermark INTEGER NOT NULL,     -- every dirty row with seq <= watermark is summarised
    PRIMARY KEY (period_type, tz)
);
"""


def v1_file(path: Path, metrics: dict[str, int | None],
            records: list[tuple[str, str, str, int, float]]) -> None:  # fmt: skip
    """A version-1 store at ``path``: metrics (key: the "precision" of its doc, or None for a
    doc without one), float records (id, metric, subject, ts, quantity), the stale float
    summaries and roll-up watermark a DAILY run had left."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(V1_DDL)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        for n, (key, precision) in enumerate(metrics.items()):
            doc = {"id": f"id{n}", "key": key, "name": key, "aggregationType": "SUM"}
            if precision is not None:
                doc["precision"] = precision
            conn.execute("INSERT INTO metrics VALUES (?, '', ?, ?)",
                         (f"id{n}", key, json.dumps(doc)))  # fmt: skip
        series: dict[tuple[str, str], int] = {}
        for rid, metric, subject, ts, quantity in records:
            sid = series.setdefault((metric, subject), len(series) + 1)
            conn.execute("INSERT OR IGNORE INTO series VALUES (?, '', ?, 'org', ?)",
                         (sid, metric, subject))  # fmt: skip
            conn.execute("INSERT INTO usage_records VALUES (?, ?, ?, ?, NULL, NULL, 0)",
                         (rid, sid, ts, quantity))  # fmt: skip
            conn.execute("INSERT INTO dirty (series_id, hour) VALUES (?, ?)", (sid, ts // H))
            conn.execute(
                "INSERT OR IGNORE INTO summaries VALUES ('DAILY', 'UTC', ?, ?, ?, 1,"
                " 0.30000000000000004, 0.1, 0.2, ?, 0.2, 0)",
                (sid, ts - ts % DAY, ts - ts % DAY + DAY, ts),
            )  # a float total as a REAL column kept it
        (high,) = conn.execute("SELECT max(seq) FROM dirty").fetchone()
        conn.execute("INSERT INTO rollup_state VALUES ('DAILY', 'UTC', ?)", (high,))


def half_even(value: float, places: int) -> Decimal:
    """The float's shortest repr rounded half to even to ``places`` (the test's own)."""
    return Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)


def test_a_version_1_file_is_converted_when_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening a version-1 file converts its float quantities to units at each metric's
    precision (6 without one, or for a metric the file does not define), rounding half to
    even from the shortest repr (2.675 → 2.68, though the float is below 2.675), recomputes
    the summaries, logs how many values were rounded, and then gives exact totals."""
    path = tmp_path / "v1.db"
    tenths = [(f"t{i}", "calls", "a", T0 + i * 60 * 10**9, 0.1) for i in range(1000)]
    cents = [("c1", "price", "a", T0 + H, 2.675), ("c2", "price", "a", T0 + H + 1, 0.125),
             ("c3", "price", "a", T0 + DAY, 19.99), ("c4", "price", "a", T0 + DAY + 1, -0.135),
             ("c5", "price", "b", T0 + 2 * DAY, 1e-9)]  # fmt: skip
    whole = [("w1", "bytes", "a", T0 + H, 2.5), ("w2", "bytes", "a", T0 + H + 5, 3.5),
             ("w3", "bytes", "a", T0 + 3 * H, 1e15)]  # fmt: skip
    loose = [("u1", "undefined", "a", T0, 1.0000004), ("u2", "undefined", "a", T0 + 1, 3.0)]
    v1_file(path, {"calls": None, "price": 2, "bytes": 0}, tenths + cents + whole + loose)
    places = {"calls": 6, "price": 2, "bytes": 0, "undefined": 6}
    with caplog.at_level(logging.WARNING, logger="tsmeter"):
        store = SQLiteStore(str(path))
    try:
        rounded = sum(Decimal(repr(q)) != half_even(q, places[m])
                      for _, m, _, _, q in tenths + cents + whole + loose)  # fmt: skip
        assert rounded == 7  # 2.675, 0.125, -0.135, 1e-9, 2.5, 3.5, 1.0000004
        (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert f" {rounded} of {len(tenths + cents + whole + loose)} " in warning.getMessage()
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                                ).fetchone() == ("2",)  # fmt: skip
            columns = [c[1] for c in conn.execute("PRAGMA table_info(usage_records)")]
            assert "units" in columns and "quantity" not in columns
            assert conn.execute("SELECT DISTINCT typeof(units) FROM usage_records"
                                ).fetchall() == [("integer",)]  # fmt: skip
            assert conn.execute("SELECT count(*) FROM summaries").fetchone() == (0,)
        assert store.get_record("c1") == RecordRow("c1", "price", "org", "a", None, 268, T0 + H,
                                                   None, None)  # fmt: skip
        for metric, records in (("calls", tenths), ("price", cents), ("bytes", whole),
                                ("undefined", loose)):  # fmt: skip
            expected = sum((half_even(q, places[metric]) for *_, q in records), Decimal(0))
            for rolled in (False, True):
                if rolled:
                    for period in (PeriodType.HOURLY, PeriodType.DAILY, PeriodType.MONTHLY):
                        store.rollup(period, UTC_CAL)
                for period in (PeriodType.HOURLY, PeriodType.DAILY, PeriodType.MONTHLY):
                    rows = summaries(store, period, metric=metric)
                    assert sum(r.record_count for r in rows) == len(records)
                    got = sum((as_decimal(r.sum, places[metric]) for r in rows), Decimal(0))
                    assert got == expected, (metric, period, rolled)
        assert expected == Decimal("4.000000")  # the undefined metric: 1.0000004 → 1.000000
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tsmeter"):
        SQLiteStore(str(path)).close()  # version 2 now: nothing to convert
    assert not caplog.records


def test_a_version_1_value_beyond_64_bits_leaves_the_file_unchanged(tmp_path: Path) -> None:
    """A float that does not fit 64 bits at its metric's precision (1e15 at six places) stops
    the conversion with an error naming the record; the file stays version 1, as it was."""
    path = tmp_path / "v1.db"
    v1_file(path, {"gb": None}, [("ok", "gb", "a", T0, 1.5), ("huge", "gb", "a", T0 + 1, 1e15)])
    with pytest.raises(StorageUnavailableError, match="'huge'") as caught:
        SQLiteStore(str(path))
    message = str(caught.value)
    assert (
        "1000000000000000.0" in message and "precision 6" in message and "gb for org 'a'" in message
    )
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "1",
        )
        assert conn.execute("SELECT quantity FROM usage_records ORDER BY id").fetchall() == [
            (1e15,),
            (1.5,),
        ]
        assert conn.execute("SELECT count(*) FROM summaries").fetchone() == (1,)
    with closing(sqlite3.connect(path)) as conn, conn:  # as the error says: precision 0
        conn.execute("UPDATE metrics SET doc = json_set(doc, '$.precision', 0) WHERE key = 'gb'")
    store = SQLiteStore(str(path))
    try:
        assert [r.quantity for r in (store.get_record("ok"), store.get_record("huge")) if r] == [
            2,  # 1.5 half to even
            10**15,
        ]
        assert store.find_metric("gb", None).precision == 0  # type: ignore[union-attr]
    finally:
        store.close()
