"""``tsmeter demo``: a month of usage recorded, aggregated and reported."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from tests.cli.conftest import Cli
from tsmeter.cli.demo_data import ORGS, allocate, generate, month_bounds
from tsmeter.cli.main import cli
from tsmeter.periods import Calendar

TIMING = re.compile(r"\d s\b|records/s|\d\.\d+ s")


def demo(run: Cli, *args: str) -> str:
    """Run the demo on ./tsmeter-demo.db (no --store) and return its report."""
    result = run.runner.invoke(cli, ["demo", "--records", "3000", "--month", "2026-03", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_demo_prints_the_report(run: Cli) -> None:
    """The report has totals, top organisations, a daily chart, the limit and next commands."""
    report = demo(run)
    assert "tsmeter demo: March 2026 (UTC), store tsmeter-demo.db" in report
    assert re.search(r"Recorded 3,000 usage records of 10 organisations in [\d.]+ s", report)
    for heading in (
        "Month totals",
        "Top organisations",
        "Daily api_calls",
        "api_calls by hour of day",
        "Plan limit:",
        "Try next:",
    ):
        assert heading in report
    for key in ("api_calls", "compute_minutes", "storage_gb", "response_ms"):
        assert re.search(rf"^  {key} +(COUNT|SUM|MAX|AVG) ", report, re.M), key
    days = re.findall(r"^  (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d ", report, re.M)
    assert len(days) == 31
    assert "tsmeter --store tsmeter-demo.db metric list" in report
    assert "Total wall time" in report
    assert Path("tsmeter-demo.db").exists()


def test_demo_is_reproducible(run: Cli) -> None:
    """A re-run recreates the store and prints the same report apart from timings."""
    first, second = demo(run), demo(run)
    strip = [line for line in first.splitlines() if not TIMING.search(line)]
    assert strip == [line for line in second.splitlines() if not TIMING.search(line)]
    assert len(strip) > 60


def test_demo_data_is_queryable(run: Cli) -> None:
    """The demo's store answers the suggested commands, and holds exactly --records records."""
    demo(run)
    store = Cli(run.runner, "tsmeter-demo.db", Path("tsmeter-demo.db"))
    keys = [m["key"] for m in store.json("metric", "list")]
    assert sorted(keys) == ["api_calls", "compute_minutes", "response_ms", "storage_gb"]
    total = 0
    for key in keys:
        monthly = store.json(
            "usage",
            "summary",
            key,
            "--period",
            "monthly",
            "--from",
            "2026-03-01",
            "--to",
            "2026-04-01",
        )
        assert len(monthly) == len(ORGS)
        total += sum(d["recordCount"] for d in monthly)
    assert total == 3000
    assert len(store.json("threshold", "list")) == 1


def test_demo_with_a_time_zone_fills_the_local_month(run: Cli) -> None:
    """With --timezone the month and the suggested commands follow that zone."""
    args = ["--timezone", "Asia/Kathmandu", "demo", "--records", "2000", "--month", "2026-02"]
    report = run.runner.invoke(cli, args).stdout
    assert "February 2026 (Asia/Kathmandu)" in report
    assert "--store tsmeter-demo.db --timezone Asia/Kathmandu" in report
    assert len(re.findall(r"^  (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d ", report, re.M)) == 28


def test_explicit_store_must_be_empty(metered: Cli) -> None:
    """On a store that already has metrics the demo refuses, in one line."""
    line = metered.fails("demo", "--records", "200")
    assert line.startswith(f"Error: store {metered.store!r} already has metrics")


def test_explicit_empty_store_is_used(run: Cli) -> None:
    """With --store the demo fills that store and names it in the suggested commands."""
    result = run.ok("demo", "--records", "500", "--month", "2026-01")
    assert f"tsmeter --store {run.store} usage summary" in result.stdout
    assert run.path.exists() and not Path("tsmeter-demo.db").exists()


def test_bad_month_is_one_line(run: Cli) -> None:
    """A malformed --month is a one-line usage error."""
    assert "expected YYYY-MM" in run.fails("demo", "--month", "2026-13")


def test_previous_month_is_the_default() -> None:
    """Without --month the demo fills the calendar month before the current one."""
    calendar = Calendar("UTC")
    start, end = month_bounds(calendar, None, datetime(2026, 1, 10, tzinfo=UTC))
    assert (start, end) == month_bounds(calendar, "2025-12", datetime(2000, 1, 1, tzinfo=UTC))


def test_generator_is_exact_ordered_and_seeded() -> None:
    """The generator yields exactly N records in time order, the same for the same seed."""
    calendar = Calendar("UTC")
    start, end = month_bounds(calendar, "2026-03", datetime.now(UTC))
    chunks = list(generate(calendar, start, end, 5000, seed=1, chunk_size=1000))
    flat = [item for chunk in chunks for item in chunk]
    assert len(flat) == 5000 and len(chunks) > 1
    stamps = [item["timestamp"] for item in flat]
    assert stamps == sorted(stamps)
    assert flat == [i for c in generate(calendar, start, end, 5000, seed=1) for i in c]
    assert sum(allocate(7, [0.2, 0.5, 0.3])) == 7
