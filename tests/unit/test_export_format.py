"""The export's formats: exact decimals, instants in a zone, and both read plans of the
embedded store giving the same rows in (time, id) order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tsmeter.adapters.sqlite import store as sqlite_store
from tsmeter.adapters.sqlite.store import SQLiteStore
from tsmeter.domain import RecordRow
from tsmeter.domain.quantities import MAX_UNITS, from_units
from tsmeter.metering.export import decimal_text, instant_text
from tsmeter.ports import RecordQuery

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_decimal_text_is_the_exact_decimal_with_the_metrics_places() -> None:
    """decimal_text gives the Decimal of the units, with exactly `precision` places and no
    exponent, for random and edge values at every precision."""
    rng = random.Random(7)
    values = [0, 1, -1, 5, -5, MAX_UNITS, -MAX_UNITS, 10**12, -(10**12) + 1]
    values += [rng.randrange(-MAX_UNITS, MAX_UNITS) for _ in range(500)]
    for precision in range(13):
        for units in values:
            text = decimal_text(units, precision)
            assert Decimal(text) == from_units(units, precision), (units, precision)
            assert "E" not in text and "e" not in text
            assert len(text.partition(".")[2]) == precision


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Paris", "Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe"]
)
def test_instant_text_is_the_instant_in_the_zone(zone: str) -> None:
    """instant_text names the same instant as the datetime, with the zone's offset at that
    instant (across DST changes and the hour repeated in autumn), microseconds kept."""
    tz = ZoneInfo(zone)
    rng = random.Random(zone)
    start = int(datetime(2025, 10, 25, tzinfo=UTC).timestamp()) * 10**9
    instants = sorted(start + rng.randrange(0, 200 * 86_400) * 10**9 for _ in range(300))
    instants += [start + 7 * 3_600 * 10**9 + n * 10**9 // 2 for n in range(-4, 4)]
    instants += [i + rng.randrange(1, 10**6) * 1000 for i in instants[:50]]
    for ns in sorted(instants):
        text = instant_text(ns, tz)
        parsed = datetime.fromisoformat(text)
        want = EPOCH + timedelta(microseconds=ns // 1000)
        assert parsed == want, text
        assert parsed.utcoffset() == want.astimezone(tz).utcoffset(), text
        assert text[:19] == want.astimezone(tz).isoformat()[:19]


def test_instant_text_keeps_nanoseconds_when_there_are_some() -> None:
    """A time with sub-microsecond digits is written with nine places, never truncated."""
    assert instant_text(1_000_000_001, ZoneInfo("UTC")) == "1970-01-01T00:00:01.000000001+00:00"


def _rows(n: int) -> list[RecordRow]:
    rng = random.Random(3)
    t0 = 1_767_225_600_000_000_000
    return [
        RecordRow(f"id-{rng.getrandbits(64):x}", "m", "org", f"s{rng.randrange(40)}", None,
                  rng.randrange(-1000, 1000), t0 + rng.randrange(0, 500) * 1000,
                  '{"k":1}' if i % 7 == 0 else None, "src" if i % 5 == 0 else None)
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("scan_at_least", [0, 10**9], ids=["table-scan", "index"])
def test_both_read_plans_give_every_row_in_time_then_id_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan_at_least: int
) -> None:
    """Whether the store sorts a scan of the table or reads through the index, it returns
    exactly the stored rows of the query, ordered by (time, id), many sharing a time."""
    monkeypatch.setattr(sqlite_store, "_SCAN_AT_LEAST", scan_at_least)
    store = SQLiteStore(str(tmp_path / "s.db"))
    rows = _rows(6000)
    store.append(rows, 0)
    store.append([r._replace(metric_key="other") for r in rows[:3000]], 0)  # another metric
    got = list(store.iter_records(RecordQuery("m")))
    assert got == sorted(rows, key=lambda r: (r.ts, r.id))
    assert store.count_records(RecordQuery("m")) == len(rows)
    lo, hi = rows[0].ts, rows[0].ts + 100_000
    ranged = [r for r in sorted(rows, key=lambda r: (r.ts, r.id)) if lo <= r.ts < hi]
    assert list(store.iter_records(RecordQuery("m", start=lo, end=hi))) == ranged
    assert store.count_records(RecordQuery("m", start=lo, end=hi)) == len(ranged)
    assert list(store.iter_records(RecordQuery("m", start=lo, end=hi, limit=7))) == ranged[:7]
    one = [r for r in got if r.subject_id == "s3"]
    assert list(store.iter_records(RecordQuery("m", subject_type="org", subject_id="s3"))) == one
    store.close()
