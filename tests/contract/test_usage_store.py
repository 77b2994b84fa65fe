"""The UsageStore contract: what every store adapter must do with records and summaries.

Quantities are integer units of their metric (``RecordRow.quantity``, ``SummaryRow.sum`` and
the other components): a store sums them exactly, whatever their magnitude, or fails naming
the series."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.contract.stores import Store
from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.domain.validation import check_metadata, to_ns
from tsmeter.ports import RecordQuery, SummaryQuery, SummaryRow

H = 3_600_000_000_000
S = 1_000_000_000
T0 = to_ns(datetime(2026, 1, 5, tzinfo=UTC))  # a Monday, midnight UTC (01:00 in Paris)
PARIS = Calendar("Europe/Paris")
UTC_CAL = Calendar("UTC")


def row(
    rid: str,
    ts: int = T0,
    quantity: int = 1,
    *,
    metric: str = "api_calls",
    subject: tuple[str, str] = ("org", "o1"),
    org: str | None = None,
    metadata: str | None = None,
    source: str | None = None,
) -> RecordRow:
    """A record row with defaults for what a test does not care about."""
    return RecordRow(rid, metric, *subject, org, quantity, ts, metadata, source)


def ids(rows: list[RecordRow]) -> list[str]:
    """The ids of ``rows`` in order."""
    return [r.id for r in rows]


def daily(
    store: Store,
    metric: str = "api_calls",
    *,
    org_id: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
) -> list[SummaryRow]:
    """Daily summaries (UTC) of ``metric`` from late December 2025 to late January 2026."""
    lo, hi = T0 - 4 * 24 * H, T0 + 17 * 24 * H
    q = SummaryQuery(metric, PeriodType.DAILY, lo, hi, org_id, subject_type, subject_id)
    return store.summaries(q, UTC_CAL)


# -- append and idempotency --------------------------------------------------------------------
def test_append_returns_only_new_ids(store: Store) -> None:
    """append counts rows whose id is new; ids already stored are ignored."""
    assert store.append([row("a"), row("b")], 0) == 2
    assert store.append([row("b"), row("c")], 0) == 1
    assert store.append([row("a"), row("b"), row("c")], 0) == 0
    assert store.append([], 0) == 0
    assert ids(list(store.iter_records(RecordQuery("api_calls")))) == ["a", "b", "c"]


def test_duplicate_ids_inside_one_call_count_once(store: Store) -> None:
    """An id repeated within one append call is stored and counted once."""
    assert store.append([row("d"), row("d"), row("e"), row("d")], 0) == 2
    assert len(list(store.iter_records(RecordQuery("api_calls")))) == 2
    (summary,) = daily(store)
    assert summary.record_count == 2


def test_get_record_round_trips(store: Store) -> None:
    """get_record returns exactly what was appended, or None for an unknown id."""
    stored = row(
        "r-1",
        T0 + 123_456_000,
        2_500_000,
        org="acme",
        subject=("user", "u9"),
        metadata='{"region":"eu","n":[1,2]}',
        source="api-gw",
    )
    plain = row("r-2", T0 + 1_000, -250_000)
    store.append([stored, plain], 0)
    assert store.get_record("r-1") == stored
    assert store.get_record("r-2") == plain
    assert store.get_record("missing") is None


# -- reading records ---------------------------------------------------------------------------
def test_iter_records_orders_by_time_then_id(store: Store) -> None:
    """Records come back ordered by timestamp, equal timestamps by id, whatever the write order."""
    rows = [row(f"{c}{n}", T0 + (n % 3) * S) for n in range(6) for c in "zay"]
    random.Random(7).shuffle(rows)
    for chunk in (rows[:5], rows[5:11], rows[11:]):
        store.append(chunk, 0)
    got = list(store.iter_records(RecordQuery("api_calls")))
    assert [(r.ts, r.id) for r in got] == sorted((r.ts, r.id) for r in rows)


def test_iter_records_filters_by_subject(store: Store) -> None:
    """Subject type and subject id filter independently and together."""
    store.append(
        [
            row("1", subject=("org", "a")),
            row("2", subject=("org", "b")),
            row("3", subject=("user", "a")),
            row("4", subject=("user", "b")),
        ],
        0,
    )

    def query(subject_type: str | None = None, subject_id: str | None = None) -> list[str]:
        q = RecordQuery("api_calls", subject_type=subject_type, subject_id=subject_id)
        return ids(list(store.iter_records(q)))

    assert query(subject_type="org") == ["1", "2"]
    assert query(subject_id="a") == ["1", "3"]
    assert query(subject_type="user", subject_id="b") == ["4"]
    assert query(subject_type="team") == []


def test_iter_records_range_is_half_open(store: Store) -> None:
    """start is inclusive, end exclusive, to the nanosecond."""
    store.append([row(f"t{i}", T0 + i * 1000) for i in range(5)], 0)

    def between(start: int | None, end: int | None) -> list[str]:
        return ids(list(store.iter_records(RecordQuery("api_calls", start=start, end=end))))

    assert between(T0 + 1000, T0 + 3000) == ["t1", "t2"]
    assert between(T0 + 1001, T0 + 3001) == ["t2", "t3"]
    assert between(None, T0 + 1000) == ["t0"]
    assert between(T0 + 4000, None) == ["t4"]
    assert between(T0 + 2000, T0 + 2000) == []


def test_iter_records_limit(store: Store) -> None:
    """limit caps how many records come back, the earliest first."""
    store.append([row(f"l{i}", T0 + i) for i in range(10)], 0)
    assert ids(list(store.iter_records(RecordQuery("api_calls", limit=3)))) == ["l0", "l1", "l2"]
    assert len(list(store.iter_records(RecordQuery("api_calls", limit=50)))) == 10


def test_iter_records_scoped_by_metric_and_org(store: Store) -> None:
    """A metric key in an org scope is a different series from the same key globally."""
    store.append(
        [
            row("g", metric="api_calls"),
            row("o", metric="api_calls", org="acme"),
            row("x", metric="storage_gb"),
        ],
        0,
    )
    assert ids(list(store.iter_records(RecordQuery("api_calls")))) == ["g"]
    assert ids(list(store.iter_records(RecordQuery("api_calls", org_id="acme")))) == ["o"]
    assert ids(list(store.iter_records(RecordQuery("storage_gb")))) == ["x"]
    assert list(store.iter_records(RecordQuery("unknown"))) == []


def test_iter_records_pages_beyond_5000(store: Store) -> None:
    """More than 5,000 records, thousands sharing one timestamp, stream completely and in order."""
    rows = [row(f"p{i:05d}", T0 + (i // 4000) * S, i) for i in range(12_001)]
    random.Random(1).shuffle(rows)
    assert store.append(rows, 0) == 12_001
    expected = sorted((r.ts, r.id) for r in rows)
    got = [(r.ts, r.id) for r in store.iter_records(RecordQuery("api_calls"))]
    assert got == expected
    limited = [(r.ts, r.id) for r in store.iter_records(RecordQuery("api_calls", limit=5_001))]
    assert limited == expected[:5_001]
    later = [(r.ts, r.id) for r in store.iter_records(RecordQuery("api_calls", start=T0 + S))]
    assert later == expected[4_000:]


HOSTILE = [
    "a,b",
    "a b",
    " padded ",
    'say "hi"',
    "it's",
    "k=v",
    "=",
    ",",
    "back\\slash",
    "trailing\\",
    "\\,\\ \\=",
    "ünïcödé",
    "日本語のキー",
    "emoji 🚀📈",
    "zero\u200bwidth",
    "'; DROP TABLE x; --",
    "%s {0} $HOME",
    "null",
    "a" * 256,
    "é" * 256,
    "🚀" * 256,
]


def test_hostile_strings_round_trip(store: Store) -> None:
    """Commas, spaces, quotes, '=', backslashes, unicode, emoji and 256-character values survive
    as metric keys, subjects, ids, org ids, sources and metadata, exactly."""
    rows = [
        row(
            s,
            T0 + i * H,
            i * 1_000_000 - 7,
            metric=s,
            subject=(s, s),
            org=s,
            source=s,
            metadata=check_metadata("metadata", {s: s, "v": [s]}),
        )
        for i, s in enumerate(HOSTILE)
    ]
    assert store.append(rows, 0) == len(HOSTILE)
    assert store.append(rows, 0) == 0
    for r in rows:
        assert store.get_record(r.id) == r
        assert list(store.iter_records(RecordQuery(r.metric_key, org_id=r.org_id))) == [r]
        assert list(
            store.iter_records(
                RecordQuery(
                    r.metric_key,
                    org_id=r.org_id,
                    subject_type=r.subject_type,
                    subject_id=r.subject_id,
                )
            )
        ) == [r]
    store.rollup(PeriodType.DAILY, UTC_CAL)
    for r in rows:
        (summary,) = daily(store, r.metric_key, org_id=r.org_id)
        assert (summary.metric_key, summary.subject_type, summary.subject_id, summary.org_id) == (
            r.metric_key,
            r.subject_type,
            r.subject_id,
            r.org_id,
        )
        assert summary.record_count == 1 and summary.sum == r.quantity


# -- summaries ---------------------------------------------------------------------------------
def test_summary_components(store: Store) -> None:
    """A summary carries count, sum, min, max and the last value (same timestamp: larger id)."""
    store.append([row("m-b", T0 + 5 * H, 700), row("m-a", T0 + 5 * H, 900)], 0)
    store.append(
        [row("m-c", T0 + 2 * H, -350), row("m-d", T0 + 1 * H, 1225), row("m-0", T0 + 5 * H, 100)],
        0,
    )
    for rolled in (False, True):
        if rolled:
            store.rollup(PeriodType.DAILY, UTC_CAL)
        (s,) = daily(store)
        assert (s.period_start, s.period_end) == (T0, T0 + 24 * H)
        assert (s.record_count, s.sum, s.min, s.max) == (5, 2575, -350, 1225)
        assert (s.last_ts, s.last_value) == (T0 + 5 * H, 700)  # "m-b" is the largest id
        assert all(type(v) is int for v in (s.sum, s.min, s.max, s.last_value))


def test_summaries_use_the_calendar_zone(store: Store) -> None:
    """The same records fall into different days in UTC and in Paris (a 23-hour day included)."""
    spring = to_ns(datetime(2026, 3, 28, 23, 30, tzinfo=UTC))  # 00:30 on the 29th in Paris
    store.append([row("z1", spring, 1), row("z2", spring + H, 2)], 0)
    q = SummaryQuery("api_calls", PeriodType.DAILY, spring - 48 * H, spring + 48 * H)
    for rolled in (False, True):
        if rolled:
            store.rollup(PeriodType.DAILY, UTC_CAL)
            store.rollup(PeriodType.DAILY, PARIS)
        assert [(s.period_end - s.period_start) // H for s in store.summaries(q, PARIS)] == [23]
        assert [s.record_count for s in store.summaries(q, UTC_CAL)] == [1, 1]


def test_summaries_filter_by_subject_and_range(store: Store) -> None:
    """summaries returns one row per subject and period overlapping the range, oldest first."""
    store.append(
        [
            row("s1", T0, 1, subject=("org", "a")),
            row("s2", T0, 2, subject=("org", "b")),
            row("s3", T0 + 24 * H, 4, subject=("org", "a")),
        ],
        0,
    )
    for rolled in (False, True):
        if rolled:
            store.rollup(PeriodType.DAILY, UTC_CAL)
        assert [(s.period_start, s.subject_id, s.sum) for s in daily(store)] == [
            (T0, "a", 1),
            (T0, "b", 2),
            (T0 + 24 * H, "a", 4),
        ]
        assert [s.sum for s in daily(store, subject_id="a")] == [1, 4]
        assert [s.sum for s in daily(store, subject_type="user")] == []
        q = SummaryQuery("api_calls", PeriodType.DAILY, T0 + 24 * H - 1, T0 + 24 * H)
        assert [s.sum for s in store.summaries(q, UTC_CAL)] == [1, 2]  # overlaps day one only


def test_rollup_incremental(store: Store) -> None:
    """An incremental roll-up recomputes the periods touched since the last run, late ones too."""
    store.append([row("i1", T0 + H, 1), row("i2", T0 + 30 * H, 2)], 0)
    first = store.rollup(PeriodType.DAILY, UTC_CAL)
    assert first.periods_recomputed == 2 and first.records_seen == 2
    before = daily(store)
    again = store.rollup(PeriodType.DAILY, UTC_CAL)
    # a store whose change log is stamped by clocks re-checks a recent window: same result
    rechecks = store.recheck_window > 0
    assert again.periods_recomputed == (2 if rechecks else 0)
    assert daily(store) == before
    store.append([row("i3", T0 + 2 * H, 5)], 0)  # late, into the first day
    late = store.rollup(PeriodType.DAILY, UTC_CAL)
    expected = (2, T0, T0 + 48 * H) if rechecks else (1, T0, T0 + 24 * H)
    assert (late.periods_recomputed, late.range_start, late.range_end) == expected
    assert [(s.record_count, s.sum) for s in daily(store)] == [(2, 6), (1, 2)]
    store.rollup(PeriodType.WEEKLY, UTC_CAL)
    store.rollup(PeriodType.MONTHLY, UTC_CAL)
    store.rollup(PeriodType.YEARLY, UTC_CAL)
    for period in (PeriodType.WEEKLY, PeriodType.MONTHLY, PeriodType.YEARLY):
        (s,) = store.summaries(SummaryQuery("api_calls", period, T0, T0 + 48 * H), UTC_CAL)
        assert (s.record_count, s.sum, s.last_value) == (3, 8, 2)


def test_rollup_ranged(store: Store) -> None:
    """A ranged roll-up recomputes exactly the periods with records that overlap the range."""
    store.append([row(f"d{d}", T0 + d * 24 * H + H, d) for d in range(5)], 0)
    stats = store.rollup(PeriodType.DAILY, UTC_CAL, T0 + 24 * H + 1, T0 + 3 * 24 * H)
    assert (stats.periods_recomputed, stats.range_start, stats.range_end) == (
        2,
        T0 + 24 * H,
        T0 + 3 * 24 * H,
    )
    before = daily(store)
    again = store.rollup(PeriodType.DAILY, UTC_CAL, T0 - 24 * H, T0 + 30 * 24 * H)
    assert again.periods_recomputed == 5
    assert daily(store) == before
    assert [s.sum for s in before] == [0, 1, 2, 3, 4]


def test_rollup_rerun_gives_identical_summaries(store: Store) -> None:
    """Running the same roll-ups again, incremental or ranged, changes no summary."""
    rng = random.Random(3)
    store.append(
        [
            row(
                f"q{i}",
                T0 + rng.randrange(20 * 24 * H),
                rng.randrange(-50, 50) * 25,
                subject=("org", f"o{i % 3}"),
            )
            for i in range(500)
        ],
        0,
    )
    periods = list(PeriodType)

    def snapshot() -> list[list[SummaryRow]]:
        return [
            store.summaries(
                SummaryQuery("api_calls", p, T0 - 400 * 24 * H, T0 + 400 * 24 * H), PARIS
            )
            for p in periods
        ]

    fresh = snapshot()
    for p in periods:
        store.rollup(p, PARIS)
    assert snapshot() == fresh
    for p in periods:
        store.rollup(p, PARIS)
        store.rollup(p, PARIS, T0, T0 + 10 * 24 * H)
    assert snapshot() == fresh
    assert sum(s.record_count for s in fresh[periods.index(PeriodType.MONTHLY)]) == 500


def test_summaries_fresh_after_rollup(store: Store) -> None:
    """Records appended after a roll-up show in summaries before the next roll-up runs."""
    store.append([row("f1", T0 + H, 1)], 0)
    for period in PeriodType:
        store.rollup(period, PARIS)
    store.append([row("f2", T0 + 3 * H, 10), row("f3", T0 + 40 * H, 20)], 0)
    for period in PeriodType:
        rows = store.summaries(SummaryQuery("api_calls", period, T0, T0 + 48 * H), PARIS)
        assert sum(r.record_count for r in rows) == 3, period
        assert sum(r.sum for r in rows) == 31, period
        assert max(rows, key=lambda r: r.last_ts).last_value == 20, period


# -- purge -------------------------------------------------------------------------------------
def test_purge_metric(store: Store) -> None:
    """purge_metric deletes one metric's records and summaries in one org scope, nothing else."""
    store.append(
        [row("a1"), row("a2", T0 + H), row("a3", org="acme"), row("b1", metric="storage_gb")], 0
    )
    store.rollup(PeriodType.DAILY, UTC_CAL)
    assert store.purge_metric("api_calls", None) == 2
    assert list(store.iter_records(RecordQuery("api_calls"))) == []
    assert store.get_record("a1") is None
    assert daily(store) == []
    assert ids(list(store.iter_records(RecordQuery("api_calls", org_id="acme")))) == ["a3"]
    assert [s.record_count for s in daily(store, org_id="acme")] == [1]
    assert [s.record_count for s in daily(store, "storage_gb")] == [1]
    assert store.purge_metric("api_calls", None) == 0
    assert store.append([row("a1")], 0) == 1  # a purged id is free again
    assert [s.record_count for s in daily(store)] == [1]


# -- several connections -----------------------------------------------------------------------
def test_second_store_object_sees_writes(store: Store, open_same: Callable[[], Store]) -> None:
    """Records, summaries and metrics written through one store object are read through another
    on the same data, and an id stored by one is a duplicate for the other."""
    other = open_same()
    store.append([row("c1", T0 + H, 3)], 0)
    assert other.get_record("c1") == row("c1", T0 + H, 3)
    assert other.append([row("c1", T0 + H, 3), row("c2", T0 + 2 * H, 4)], 0) == 1
    store.rollup(PeriodType.DAILY, UTC_CAL)
    assert [(s.record_count, s.sum) for s in daily(other)] == [(2, 7)]
    other.append([row("c3", T0 + 3 * H, 5)], 0)
    assert [(s.record_count, s.sum) for s in daily(store)] == [(3, 12)]
    assert ids(list(store.iter_records(RecordQuery("api_calls")))) == ["c1", "c2", "c3"]


def test_purge_through_another_store_object(store: Store, open_same: Callable[[], Store]) -> None:
    """After another connection purges a metric and creates new series, records appended here
    still land on their own metric and subject."""
    other = open_same()
    store.append([row("k1")], 0)
    assert other.purge_metric("api_calls", None) == 1
    other.append([row("x1", metric="storage_gb", subject=("org", "o9"))], 0)
    store.append([row("k2", T0 + H)], 0)
    assert ids(list(other.iter_records(RecordQuery("api_calls")))) == ["k2"]
    assert ids(list(other.iter_records(RecordQuery("storage_gb")))) == ["x1"]
    assert other.get_record("k2") == row("k2", T0 + H)


def test_close_keeps_acknowledged_records(store: Store, open_same: Callable[[], Store]) -> None:
    """Everything append acknowledged is still there through a store opened after close."""
    store.append([row(f"d{i}", T0 + i) for i in range(100)], 0)
    store.close()
    assert len(list(open_same().iter_records(RecordQuery("api_calls")))) == 100


@pytest.mark.parametrize("period", list(PeriodType))
def test_rollup_of_empty_store(store: Store, period: PeriodType) -> None:
    """Rolling up a store without records writes nothing and summaries stay empty."""
    stats = store.rollup(period, PARIS)
    assert (stats.summaries_written, stats.periods_recomputed) == (0, 0)
    assert store.summaries(SummaryQuery("api_calls", period, T0, T0 + H), PARIS) == []


# -- integer units -----------------------------------------------------------------------------
MAX_UNITS = 2**63 - 1


def test_sums_of_units_are_exact_to_the_64_bit_edge(store: Store) -> None:
    """Units at ±(2**63-1) and sums that end at the edge are kept and summed exactly, in a raw
    read and after roll-ups (the expectation is Python's unbounded int arithmetic)."""
    edge = [MAX_UNITS, -MAX_UNITS, MAX_UNITS // 3, MAX_UNITS // 3, MAX_UNITS // 3 + 1, -1, 1]
    store.append([row(f"e{i}", T0 + i * H, q, subject=("org", "edge")) for i, q in
                  enumerate(edge)], 0)  # fmt: skip
    small = [123_456_789_012, -3, 10**12, 999_999]
    store.append([row(f"s{i}", T0 + 30 * H + i, q, subject=("org", "small")) for i, q in
                  enumerate(small)], 0)  # fmt: skip
    assert store.get_record("e0") == row("e0", T0, MAX_UNITS, subject=("org", "edge"))
    assert store.get_record("e1") == row("e1", T0 + H, -MAX_UNITS, subject=("org", "edge"))
    for rolled in (False, True):
        if rolled:
            for period in PeriodType:
                store.rollup(period, UTC_CAL)
        (e,) = daily(store, subject_id="edge")
        assert (e.record_count, e.sum, e.min, e.max) == (7, sum(edge), -MAX_UNITS, MAX_UNITS)
        assert e.sum == MAX_UNITS and e.last_value == 1
        (s,) = daily(store, subject_id="small")
        assert (s.sum, s.min, s.max, s.last_value) == (sum(small), -3, 10**12, 999_999)
        q = SummaryQuery("api_calls", PeriodType.MONTHLY, T0, T0 + H, subject_id="edge")
        (m,) = store.summaries(q, UTC_CAL)
        assert (m.record_count, m.sum) == (7, MAX_UNITS)


def test_a_sum_beyond_64_bits_is_an_error_naming_the_series(store: Store) -> None:
    """A period whose units add up beyond ±(2**63-1) is an error naming its series, never a
    wrapped or float sum; other series' sums are unaffected by it."""
    store.append([row("big1", T0, MAX_UNITS, subject=("org", "huge")),
                  row("big2", T0 + H, 1, subject=("org", "huge")),
                  row("ok", T0, 5, subject=("org", "fine"))], 0)  # fmt: skip
    from tsmeter.errors import StorageUnavailableError, ValidationError

    for rolled in (False, True):
        with pytest.raises((StorageUnavailableError, ValidationError)) as caught:
            if rolled:
                store.rollup(PeriodType.DAILY, UTC_CAL)
            daily(store)
        assert "huge" in str(caught.value)
        assert [s.sum for s in daily(store, subject_id="fine")] == [5]
