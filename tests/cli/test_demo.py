"""``tsmeter demo``: a month of usage recorded, aggregated and reported."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli.conftest import Cli
from tests.influx_server import InfluxServer
from tsmeter.cli.demo_data import ORGS, allocate, generate, month_bounds
from tsmeter.cli.main import cli
from tsmeter.domain.periods import Calendar

TIMING = re.compile(r"\d s\b|records/s|\d\.\d+ s")


def demo(run: Cli, *args: str) -> str:
    """Run the demo on ./tsmeter-demo.db (no --store) and return its report."""
    result = run.runner.invoke(cli, ["demo", "--records", "3000", "--month", "2026-03", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_demo_prints_the_report(run: Cli) -> None:
    """The report has totals, top organisations, a daily chart, thresholds and next commands."""
    report = demo(run)
    assert "tsmeter demo: March 2026 (UTC), store tsmeter-demo.db" in report
    assert re.search(r"Recorded 3,000 usage records of 10 organisations in [\d.]+ s", report)
    for heading in (
        "Month totals",
        "Top organisations",
        "Daily api_calls",
        "api_calls by hour of day",
        "Thresholds, evaluated as of the end of the month",
        "Try next:",
    ):
        assert heading in report
    for key in ("api_calls", "compute_minutes", "storage_gb", "response_ms", "credits"):
        assert re.search(rf"^  {key} +(COUNT|SUM|MAX|AVG) ", report, re.M), key
    days = re.findall(r"^  (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d ", report, re.M)
    assert len(days) == 31
    assert "tsmeter --store tsmeter-demo.db metric list" in report
    assert "Total wall time" in report
    assert Path("tsmeter-demo.db").exists()


def test_demo_thresholds_raise_alerts_and_block_a_record(run: Cli) -> None:
    """The Thresholds section lists the alerts evaluate_thresholds raised (an exceeded one among
    them) and one record refused with QuotaExceededError; the alerts are in the store."""
    report = demo(run)
    section = report[report.index("Thresholds, evaluated") : report.index("Try next:")]
    assert re.search(r"^  credits +tyrell +[\d,]+ credits +lifetime +[\d,]+ +BLOCK ", section, re.M)
    assert re.search(
        r"^  api_calls +every org +[\d,]+ calls +per month +[\d,]+ +ALERT ", section, re.M
    )
    exceeded = re.findall(
        r"^  (\w+) +(api_calls|compute_minutes|credits) +exceeded +([\d,.]+) +([\d,.]+) +(\d+)% ",
        section,
        re.M,
    )
    assert ("acme", "api_calls") in [(org, metric) for org, metric, *_ in exceeded]
    for _org, _metric, usage, limit, percent in exceeded:
        usage_, limit_ = float(usage.replace(",", "")), float(limit.replace(",", ""))
        assert usage_ >= limit_ and abs(int(percent) - usage_ / limit_ * 100) <= 1
    assert re.search(r"Alerts raised: [1-9]\d* exceeded, \d+ approaching", section)
    assert (
        'Blocked: record("credits", "org", "tyrell", 20, enforce=True) raised QuotaExceededError'
        in section
    )
    store = Cli(run.runner, "tsmeter-demo.db", Path("tsmeter-demo.db"))
    alerts = store.json("alert", "list", "--status", "pending")
    assert len(alerts) == len(re.findall(r" (exceeded|approaching) ", section))
    assert {"acme", "tyrell"} <= {a["subjectId"] for a in alerts if a["level"] == "exceeded"}
    assert store("threshold", "check", "credits", "org", "tyrell").exit_code == 3
    assert store("threshold", "check", "credits", "org", "acme").exit_code == 0
    assert "tsmeter --store tsmeter-demo.db alert list" in report
    # the suggestion says the exit status the check above gave
    assert "threshold check credits org tyrell   # exit status 3" in report


@pytest.mark.parametrize(("seed", "blocked"), [("42", True), ("1", False)])
def test_demo_with_few_records_still_reports_thresholds(run: Cli, seed: str, blocked: bool) -> None:
    """With very few records the prepaid org may have spent no credits (seed 1): then there is
    no BLOCK threshold to refuse a record, and the report says so instead of suggesting a check."""
    report = demo(run, "--records", "100", "--seed", seed)
    assert "Alerts raised:" in report
    assert ("Blocked: record(" in report) is blocked
    assert ("No BLOCK example: tyrell spent no credits" in report) is not blocked
    assert ("threshold check credits org tyrell" in report) is blocked
    store = Cli(run.runner, "tsmeter-demo.db", Path("tsmeter-demo.db"))
    assert len(store.json("threshold", "list")) == (3 if blocked else 2)


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
    assert sorted(keys) == ["api_calls", "compute_minutes", "credits", "response_ms", "storage_gb"]
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
    tyrell = store.json("usage", "get", "credits", "--subject-id", "tyrell", "--limit", "0")
    assert "demo-past-the-pack" not in {r["id"] for r in tyrell}  # refused: not recorded
    assert len(store.json("threshold", "list")) == 3


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


def test_demo_on_influxdb_raises_alerts_and_blocks(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """Against a real influxd the demo evaluates its thresholds and refuses the record too."""
    server, name = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{name}?state={tmp_path / 'state.db'}"
    store = Cli(CliRunner(), url, tmp_path / "state.db")
    report = store.ok("demo", "--records", "3000", "--month", "2026-03").stdout
    assert re.search(r"^  acme +api_calls +exceeded ", report, re.M)
    assert "raised QuotaExceededError" in report
    levels = {(a["subjectId"], a["metricKey"], a["level"]) for a in store.json("alert", "list")}
    assert {("acme", "api_calls", "exceeded"), ("tyrell", "credits", "exceeded")} <= levels
    assert store("threshold", "check", "credits", "org", "tyrell").exit_code == 3
