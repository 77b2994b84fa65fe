"""The property test: random records in random zones summarise exactly as a brute force
computation says (helpers in test_aggregation.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import tsmeter
from tests.unit.bruteforce import PERIODS, Rec, utc
from tests.unit.test_aggregation import assert_matches, define_all, record_all, span
from tsmeter import PeriodType

# -- property -----------------------------------------------------------------------------------
ZONES = ("UTC", "Europe/Paris", "Asia/Kathmandu", "Asia/Kolkata", "America/New_York")
# 60-day windows holding DST changes, a year boundary and a leap day
WINDOWS = (utc(2026, 2, 15), utc(2026, 9, 20), utc(2026, 12, 1), utc(2024, 1, 25))
WINDOW_SECONDS = 60 * 86_400
SUBJECTS = (("org", "a"), ("org", "b"), ("user", "a"))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """Random records in one window plus how to record, aggregate and query them."""
    base = draw(st.sampled_from(WINDOWS))
    n = draw(st.integers(1, 40))
    shared = draw(st.lists(st.integers(0, WINDOW_SECONDS - 1), min_size=1, max_size=3))
    offsets = st.one_of(st.sampled_from(shared), st.integers(0, WINDOW_SECONDS - 1))
    order = draw(st.permutations(range(n)))
    records = [
        Rec(
            f"r{order[i]:03d}",
            draw(st.sampled_from(SUBJECTS)),
            draw(st.integers(-400, 400)) / 4,  # dyadic: sums are exact in any order
            base + timedelta(seconds=draw(offsets)),
        )
        for i in range(n)
    ]
    retries = draw(st.lists(st.sampled_from(records), max_size=5))
    lo = base + timedelta(seconds=draw(st.integers(0, WINDOW_SECONDS)))
    width = timedelta(seconds=draw(st.integers(1, WINDOW_SECONDS)))
    return {
        "zone": draw(st.sampled_from(ZONES)),
        "period": draw(st.sampled_from(PERIODS)),
        "records": records,
        "split": draw(st.integers(0, n)),
        "retries": retries,
        "mode": draw(st.sampled_from(["fresh", "aggregated", "late", "ranged"])),
        "range": (lo, lo + width) if draw(st.booleans()) else None,
    }


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_summaries_equal_brute_force(case: dict[str, Any]) -> None:
    """For random records, zones, periods and aggregation histories, every aggregation type's
    summaries equal the brute force."""
    period: PeriodType = case["period"]
    records: list[Rec] = case["records"]
    first, later = records[: case["split"]], records[case["split"] :] + case["retries"]
    with tsmeter.connect("sqlite:///:memory:", timezone=case["zone"]) as meter:  # fresh store
        define_all(meter)
        if case["mode"] == "late":
            record_all(meter, first)
            meter.aggregate(period)
            record_all(meter, later)
        else:
            record_all(meter, first + later)
        if case["mode"] == "aggregated":
            meter.aggregate(period)
        elif case["mode"] == "ranged":
            meter.aggregate(period, start=WINDOWS[3], end=utc(2027, 3, 1))
        lo_hi = case["range"] or span(records)
        assert_matches(meter, records, period, *lo_hi, each=False)
        if case["mode"] == "late":
            meter.aggregate(period)
            assert_matches(meter, records, period, *lo_hi, each=False)
