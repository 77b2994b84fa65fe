"""The embedded store's roll-up paths, each against the brute force: a first run read from the
dirty log or (once it was trimmed) from the records, touched periods in several spans with
different series, long runs summed by sorting and short ones by walking periods; and a run
rewrites only the series that changed in a span."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import tsmeter
from tests.unit.bruteforce import AGGS, Rec, brute, key, stored, utc
from tests.unit.test_aggregation import assert_matches, define_all, record_all
from tsmeter import PeriodType
from tsmeter.adapters.sqlite import rollup

ZONES = ("UTC", "Europe/Paris", "Asia/Kathmandu")


def spread(prefix: str, subjects: list[str], days: list[int], month: int = 3) -> list[Rec]:
    """Records on the given days of 2026 (a few hours apart, quantities on a cycle of
    non-integers that add up exactly), for each subject."""
    out: list[Rec] = []
    for s in subjects:
        for d in days:
            for h in (1, 7, 22):
                n = len(out)
                out.append(Rec(f"{prefix}{n:04d}", ("org", s), (n % 9 - 3) / 8,
                               utc(2026, month, d, h, n % 60)))  # fmt: skip
    return out


def check_stored(
    meter: tsmeter.Meter, records: list[Rec], zone: str, periods: tuple[PeriodType, ...]
) -> None:
    """The persisted summaries of ``periods`` (each type's rows are all fresh after its run)
    equal the brute force, component by component."""
    for period in periods:
        for agg in AGGS:
            want = brute(records, period, zone, agg, utc(2000, 1, 1), utc(2100, 1, 1))
            assert stored(meter, agg, period, zone) == [w[:10] for w in want], (period, agg)


@pytest.mark.parametrize("zone", ZONES)
def test_first_run_from_the_log_and_after_it_was_trimmed(tmp_path: Path, zone: str) -> None:
    """MONTHLY run first, from the complete log, keeping no level below it; then HOURLY alone
    trims the log, and YEARLY (from the kept MONTHLY) and WEEKLY (from the records: DAILY is
    not kept) run for the first time; late and new records in between: every type run equals
    the brute force, and DAILY, never run, stores nothing."""
    records = spread("a", ["o1", "o2", "o3"], [2, 3, 17])
    with tsmeter.connect(f"sqlite:///{tmp_path}/s.db", timezone=zone) as meter:
        define_all(meter)
        record_all(meter, records)
        meter.aggregate("MONTHLY")
        later = spread("b", ["o2", "o4"], [3, 28], month=2) + spread("c", ["o1"], [30])
        record_all(meter, later)
        records += later
        meter.aggregate("HOURLY")  # the log is trimmed to HOURLY's mark (no other type ran)
        meter.aggregate("YEARLY")
        meter.aggregate("WEEKLY")
        meter.aggregate("MONTHLY")
        for period in (PeriodType.DAILY, PeriodType.WEEKLY, PeriodType.MONTHLY):
            assert_matches(meter, records, period, utc(2026, 1, 1), utc(2026, 5, 1), each=False)
        kept = (PeriodType.HOURLY, PeriodType.WEEKLY, PeriodType.MONTHLY, PeriodType.YEARLY)
        check_stored(meter, records, zone, kept)
        assert all(stored(meter, agg, PeriodType.DAILY, zone) == [] for agg in AGGS)


@pytest.mark.parametrize("zone", ZONES)
def test_late_records_in_several_spans(tmp_path: Path, zone: str) -> None:
    """Late records of different subjects in periods far apart (several spans, each with its
    own series) are recomputed exactly, for every type."""
    records = spread("a", ["o1", "o2"], [1, 2, 10, 20, 21])
    with tsmeter.connect(f"sqlite:///{tmp_path}/s.db", timezone=zone) as meter:
        define_all(meter)
        record_all(meter, records)
        for period in PeriodType:
            meter.aggregate(period)
        late = spread("x", ["o1"], [2]) + spread("y", ["o2"], [20]) + spread("z", ["o3"], [10])
        record_all(meter, late)
        records += late
        for period in PeriodType:
            meter.aggregate(period)
            assert_matches(meter, records, period, utc(2026, 1, 1), utc(2027, 1, 1), each=False)
        meter.aggregate("DAILY", start=utc(2026, 3, 1), end=utc(2026, 4, 1))  # ranged: same
        assert_matches(meter, records, PeriodType.DAILY, utc(2026, 3, 1), utc(2026, 4, 1),
                       each=False)  # fmt: skip


def test_long_runs_sort_and_short_runs_walk_periods(tmp_path: Path) -> None:
    """DAILY from HOURLY over more than JOIN_PERIODS days (summed by sorting) and over fewer
    (walking each series' periods) give the brute force."""
    days = list(range(1, 32))
    records = spread("a", ["o1", "o2"], days, month=1) + spread("b", ["o1"], days, month=3)
    with tsmeter.connect(f"sqlite:///{tmp_path}/s.db") as meter:
        define_all(meter)
        record_all(meter, records)
        meter.aggregate("DAILY", start=utc(2026, 1, 1), end=utc(2026, 4, 1))  # one long run
        assert (utc(2026, 4, 1) - utc(2026, 1, 1)).days > rollup.JOIN_PERIODS
        assert_matches(meter, records, PeriodType.DAILY, utc(2026, 1, 1), utc(2026, 4, 1),
                       each=False)  # fmt: skip
        meter.aggregate("MONTHLY")
        assert_matches(meter, records, PeriodType.MONTHLY, utc(2026, 1, 1), utc(2026, 4, 1),
                       each=False)  # fmt: skip


def test_a_run_rewrites_only_the_series_that_changed(tmp_path: Path) -> None:
    """A late record of one subject rewrites that subject's summaries of the periods it
    touches, not the other subjects' summaries of the same periods."""
    records = spread("a", ["o1", "o2", "o3"], [5, 6])
    with tsmeter.connect(f"sqlite:///{tmp_path}/s.db") as meter:
        define_all(meter)
        record_all(meter, records)
        for period in ("HOURLY", "DAILY", "MONTHLY"):  # kept levels: MONTHLY rolls up from them
            meter.aggregate(period)
        path = f"{tmp_path}/s.db"
        with closing(sqlite3.connect(path)) as conn:
            before = dict(conn.execute(_COMPUTED, (key(AGGS[0]),)).fetchall())
        late = [Rec("late", ("org", "o2"), 0.5, utc(2026, 3, 5, 9))]
        record_all(meter, late)
        meter.aggregate("MONTHLY")
        with closing(sqlite3.connect(path)) as conn:
            after = dict(conn.execute(_COMPUTED, (key(AGGS[0]),)).fetchall())
        changed = {k for k in after if after[k] != before.get(k)}
        assert {k.split("|")[1] for k in changed} == {"o2"}
        assert {k.split("|")[0] for k in changed} == {"HOURLY", "DAILY", "MONTHLY"}
        assert_matches(meter, records + late, PeriodType.MONTHLY, utc(2026, 3, 1),
                       utc(2026, 4, 1), each=False)  # fmt: skip


_COMPUTED = (
    "SELECT m.period_type || '|' || s.subject_id || '|' || m.period_start, m.computed_at"
    " FROM summaries m JOIN series s ON s.id = m.series_id WHERE s.metric_key = ?"
)


@pytest.mark.parametrize("zone", ZONES)
def test_a_level_below_is_used_and_written_only_where_it_is_kept(tmp_path: Path, zone: str) -> None:
    """MONTHLY alone is computed from the records and writes no hourly or daily summaries;
    once DAILY has run, MONTHLY rolls up from it and brings it up to date first; every
    stored type equals the brute force after late records."""
    records = spread("a", ["o1", "o2"], [2, 17])
    with tsmeter.connect(f"sqlite:///{tmp_path}/s.db", timezone=zone) as meter:
        define_all(meter)
        record_all(meter, records)
        meter.aggregate("MONTHLY")
        check_stored(meter, records, zone, (PeriodType.MONTHLY,))
        for below in (PeriodType.HOURLY, PeriodType.DAILY):
            assert all(stored(meter, agg, below, zone) == [] for agg in AGGS)
        late = spread("b", ["o2"], [17])
        record_all(meter, late)
        records += late
        meter.aggregate("MONTHLY")
        check_stored(meter, records, zone, (PeriodType.MONTHLY,))
        meter.aggregate("DAILY")  # from the records: HOURLY is not kept either
        assert all(stored(meter, agg, PeriodType.HOURLY, zone) == [] for agg in AGGS)
        later = spread("c", ["o1", "o3"], [2, 30])
        record_all(meter, later)
        records += later
        meter.aggregate("MONTHLY")
        check_stored(meter, records, zone, (PeriodType.DAILY, PeriodType.MONTHLY))
