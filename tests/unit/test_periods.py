"""Calendar periods checked against wall-clock facts computed independently with zoneinfo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tsmeter.domain import PeriodType
from tsmeter.domain.periods import Calendar, Run, runs
from tsmeter.domain.validation import from_ns, to_ns
from tsmeter.errors import ValidationError

H = 3_600_000_000_000


def local_midnight(zone: str, year: int, month: int, day: int) -> int:
    """UTC ns of local midnight, built directly from zoneinfo (independent of Calendar)."""
    return to_ns(datetime(year, month, day, tzinfo=ZoneInfo(zone)))


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Paris", (2026, 3, 29), 23),
        ("Europe/Paris", (2026, 10, 25), 25),
        ("Europe/Paris", (2026, 6, 1), 24),
        ("Asia/Kolkata", (2026, 3, 29), 24),
        ("Asia/Kathmandu", (2026, 3, 29), 24),
        ("America/New_York", (2026, 3, 8), 23),
        ("UTC", (2024, 2, 29), 24),
    ],
)
def test_day_length_and_hours(zone: str, day: tuple[int, int, int], hours: int) -> None:
    """A local day is 23, 24 or 25 hours and splits into exactly that many hourly periods."""
    cal = Calendar(zone)
    start, end = cal.bounds(PeriodType.DAILY, local_midnight(zone, *day) + 5 * H)
    assert start == local_midnight(zone, *day)
    nxt = datetime(*day) + timedelta(days=1)
    assert end == local_midnight(zone, nxt.year, nxt.month, nxt.day)
    assert (end - start) == hours * H
    edges = cal.boundaries(PeriodType.HOURLY, start, end)
    assert edges[0] == start and edges[-1] == end
    assert len(edges) - 1 == hours


def test_kathmandu_hours_start_at_quarter_past() -> None:
    """+05:45 local hours begin at :15 UTC."""
    start = Calendar("Asia/Kathmandu").start_of(
        PeriodType.HOURLY, to_ns(datetime(2026, 1, 1, 12, 40, tzinfo=UTC))
    )
    assert from_ns(start) == datetime(2026, 1, 1, 12, 15, tzinfo=UTC)


def test_iso_weeks_across_year_boundary() -> None:
    """The week holding 2027-01-01 (a Friday) starts Monday 2026-12-28."""
    cal = Calendar("Europe/Paris")
    start, end = cal.bounds(PeriodType.WEEKLY, to_ns(datetime(2027, 1, 1, 12, tzinfo=UTC)))
    assert start == local_midnight("Europe/Paris", 2026, 12, 28)
    assert end == local_midnight("Europe/Paris", 2027, 1, 4)


def test_months_and_years_are_calendar_ones() -> None:
    """February 2024 has 29 days; a year runs January to January in local time."""
    cal = Calendar("Asia/Kolkata")
    start, end = cal.bounds(PeriodType.MONTHLY, to_ns(datetime(2024, 2, 29, 20, tzinfo=UTC)))
    assert (start, end) == (
        local_midnight("Asia/Kolkata", 2024, 3, 1),
        local_midnight("Asia/Kolkata", 2024, 4, 1),
    )  # 20:00 UTC on the 29th is already 1 March in Kolkata
    start, end = cal.bounds(PeriodType.YEARLY, to_ns(datetime(2024, 6, 1, tzinfo=UTC)))
    assert start == local_midnight("Asia/Kolkata", 2024, 1, 1)
    assert end == local_midnight("Asia/Kolkata", 2025, 1, 1)


@pytest.mark.parametrize("zone", ["Europe/Paris", "Asia/Kathmandu", "Australia/Lord_Howe", "UTC"])
def test_coarser_boundaries_are_hour_boundaries(zone: str) -> None:
    """Every day, week, month and year boundary of a year is also an hour boundary, so
    summaries roll up exactly from the level below."""
    cal = Calendar(zone)
    lo = to_ns(datetime(2026, 1, 1, tzinfo=UTC))
    hi = to_ns(datetime(2027, 1, 1, tzinfo=UTC))
    hours = set(cal.boundaries(PeriodType.HOURLY, lo - 400 * 24 * H, hi + 400 * 24 * H))
    for period in (PeriodType.DAILY, PeriodType.WEEKLY, PeriodType.MONTHLY, PeriodType.YEARLY):
        assert set(cal.boundaries(period, lo, hi)) <= hours, period


def test_runs_group_equal_lengths() -> None:
    """Runs of equal-length adjacent periods."""
    assert runs([0, 10, 20, 30, 35, 40]) == [Run(0, 10, 3), Run(30, 5, 2)]


def test_unknown_zone_is_a_validation_error() -> None:
    """A misspelt zone names the field."""
    with pytest.raises(ValidationError, match="timezone"):
        Calendar("Europe/Pariss")
