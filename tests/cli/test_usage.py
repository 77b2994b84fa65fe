"""``tsmeter usage record/get/summary/export`` and ``tsmeter aggregate``."""

from __future__ import annotations

import csv
import io
import json
import shlex
from pathlib import Path

from click.testing import CliRunner

from tests.cli.conftest import Cli
from tsmeter.cli.main import cli

T1 = "2026-01-05T10:00:00Z"
T2 = "2026-01-05T23:30:00Z"
T3 = "2026-01-20T08:00:00Z"


def shown(time: str) -> str:
    """A UTC time as the CLI prints it in the default zone (UTC): ISO-8601 with its offset."""
    return time.replace("Z", "+00:00")


def record_some(run: Cli) -> None:
    """Three api_calls by two orgs and two storage_gb samples in January 2026."""
    for subject, at in (("o1", T1), ("o1", T2), ("o2", T3)):
        run.ok("usage", "record", "api_calls", "org", subject, "--timestamp", at)
    run.ok("usage", "record", "storage_gb", "org", "o1", "40", "--timestamp", T1)
    run.ok("usage", "record", "storage_gb", "org", "o1", "42.5", "--timestamp", T3)


def test_record_prints_the_stored_record(metered: Cli) -> None:
    """record returns the record with its defaults filled in."""
    doc = metered.json(
        "usage",
        "record",
        "api_calls",
        "org",
        "o1",
        "--timestamp",
        T1,
        "--id",
        "req-1",
        "--metadata",
        '{"region": "eu"}',
        "--source",
        "gateway",
    )
    assert doc == {
        "id": "req-1",
        "metricKey": "api_calls",
        "subjectType": "org",
        "subjectId": "o1",
        "quantity": "1.000000",
        "timestamp": shown(T1),
        "metadata": {"region": "eu"},
        "source": "gateway",
        "orgId": None,
    }


def test_record_same_id_counts_once(metered: Cli) -> None:
    """Recording an idempotency key twice stores one record."""
    for _ in range(2):
        metered.ok("usage", "record", "api_calls", "org", "o1", "--id", "k1", "--timestamp", T1)
    assert len(metered.json("usage", "get", "api_calls")) == 1


def test_record_negative_quantity_after_double_dash(metered: Cli) -> None:
    """A negative quantity is accepted after ``--``."""
    metered.ok("metric", "define", "credits", "-a", "sum")
    doc = metered.json("usage", "record", "credits", "org", "o1", "--timestamp", T1, "--", "-5")
    assert doc["quantity"] == "-5.000000"


def test_user_errors_are_one_line(metered: Cli) -> None:
    """Unknown metric, bad timestamp, bad quantity and bad metadata print one clear line."""
    cases = [
        ("usage record foo org o1", "Error: metricKey: unknown metric 'foo'"),
        ("usage record api_calls org o1 --timestamp yesterday",
         "Error: timestamp: not an ISO-8601 timestamp: 'yesterday'"),
        ("usage record api_calls org o1 --timestamp 2026-01-05T10:00:00",
         "Error: timestamp: must carry a time zone"),
        ("usage record storage_gb org o1 lots", "expected a finite number in plain decimal"),
        ("usage record storage_gb org o1 nan", "expected a finite number in plain decimal"),
        ("usage record storage_gb org o1",
         "Error: quantity: is required for MAX metric 'storage_gb'"),
        ("usage record api_calls org o1 --metadata [1]", "must be a JSON object"),
        ("usage get nope", "Error: metric 'nope' not found"),
        ("usage get api_calls --from 'last week'",
         "Error: --from: not an ISO-8601 timestamp: 'last week'"),
        ("usage summary api_calls --period fortnightly",
         "'fortnightly' is not one of 'hourly', 'daily', 'weekly', 'monthly', 'yearly'"),
        ("usage summary api_calls --from 2026-02-01 --to 2026-01-01",
         "Error: end: must be after start"),
        ("usage export nope", "Error: metric 'nope' not found"),
        ("aggregate --period daily --all", "give --period or --all, not both"),
    ]  # fmt: skip
    for command, expected in cases:
        assert expected in metered.fails(*shlex.split(command)), command


def test_unknown_time_zone_is_one_line(metered: Cli) -> None:
    """A bad --timezone is reported without a traceback."""
    line = metered.fails("--timezone", "Mars/Olympus", "usage", "get", "api_calls")
    assert line == "Error: timezone: unknown IANA time zone 'Mars/Olympus'"


def test_get_formats_and_filters(metered: Cli) -> None:
    """get lists records oldest first, filtered by subject and range, in every format."""
    record_some(metered)
    docs = metered.json("usage", "get", "api_calls")
    assert [(d["subjectId"], d["timestamp"]) for d in docs] == [
        ("o1", shown(T1)),
        ("o1", shown(T2)),
        ("o2", shown(T3)),
    ]
    assert len(metered.json("usage", "get", "api_calls", "--subject-id", "o2")) == 1
    ranged = metered.json(
        "usage", "get", "api_calls", "--from", "2026-01-05T12:00:00Z", "--to", "2026-01-06"
    )
    assert [d["timestamp"] for d in ranged] == [shown(T2)]
    assert len(metered.json("usage", "get", "api_calls", "--limit", "2")) == 2
    rows = list(
        csv.DictReader(io.StringIO(metered.ok("usage", "get", "storage_gb", fmt="csv").stdout))
    )
    assert [r["quantity"] for r in rows] == ["40.000000", "42.500000"]
    table = metered.ok("usage", "get", "storage_gb").stdout.splitlines()
    assert table[0].split()[:2] == ["TIMESTAMP", "SUBJECT"]
    assert table[2].startswith("2026-01-05T10:00:00+00:00 ")
    assert table[3].split()[3] == "42.500000"  # the time is one word: ISO-8601


def test_table_times_follow_the_time_zone(metered: Cli) -> None:
    """Every format shows times in --timezone, as ISO-8601 with the zone's offset."""
    record_some(metered)
    table = metered.ok("--timezone", "Asia/Kathmandu", "usage", "get", "api_calls").stdout
    assert "2026-01-05T15:45:00+05:45" in table
    assert (
        metered.json("--timezone", "Asia/Kathmandu", "usage", "get", "api_calls")[0]["timestamp"]
        == "2026-01-05T15:45:00+05:45"
    )
    rows = csv.DictReader(
        io.StringIO(metered.ok("--timezone", "Asia/Kathmandu", "usage", "get", "api_calls",
                               fmt="csv").stdout)
    )  # fmt: skip
    assert next(iter(rows))["timestamp"] == "2026-01-05T15:45:00+05:45"


def test_summary_daily(metered: Cli) -> None:
    """summary gives one row per subject and day, with the metric's aggregation."""
    record_some(metered)
    docs = metered.json(
        "usage",
        "summary",
        "api_calls",
        "--period",
        "daily",
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
    )
    got = [(d["periodStart"], d["subjectId"], d["totalQuantity"]) for d in docs]
    assert got == [
        ("2026-01-05T00:00:00+00:00", "o1", "2"),
        ("2026-01-20T00:00:00+00:00", "o2", "1"),
    ]
    monthly = metered.json(
        "usage",
        "summary",
        "storage_gb",
        "--period",
        "MONTHLY",
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
    )
    assert [(d["totalQuantity"], d["recordCount"]) for d in monthly] == [("42.500000", 2)]


def test_summary_dates_are_local_midnight(metered: Cli) -> None:
    """With --timezone, a date and the daily periods are local (Paris: 23:00 UTC)."""
    record_some(metered)
    docs = metered.json(
        "--timezone",
        "Europe/Paris",
        "usage",
        "summary",
        "api_calls",
        "--period",
        "daily",
        "--from",
        "2026-01-05",
        "--to",
        "2026-01-07",
    )
    got = [(d["periodStart"], d["totalQuantity"]) for d in docs]
    # local midnights in the zone they are days of (COUNT)
    assert got == [("2026-01-05T00:00:00+01:00", "1"), ("2026-01-06T00:00:00+01:00", "1")]


def test_summary_defaults_to_the_current_month(metered: Cli) -> None:
    """Without --from/--to, summary covers the current month (a record made now shows)."""
    metered.ok("usage", "record", "api_calls", "org", "o1")
    docs = metered.json("usage", "summary", "api_calls")
    assert [(d["periodType"], d["totalQuantity"]) for d in docs] == [("MONTHLY", "1")]
    table = metered.ok("usage", "summary", "api_calls").stdout.splitlines()
    assert table[0].split()[:2] == ["PERIOD", "START"]
    empty = metered.ok("usage", "summary", "storage_gb")
    assert empty.stdout == ""
    assert "No usage" in empty.stderr


def test_aggregate(metered: Cli) -> None:
    """aggregate runs every period type by default, or the ones asked for."""
    record_some(metered)
    docs = metered.json("aggregate")
    assert [d["periodType"] for d in docs] == ["HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"]
    assert docs[0]["recordsSeen"] == 5
    again = metered.json("aggregate", "--all")
    assert all(d["summariesWritten"] == 0 for d in again)  # nothing new since
    ranged = metered.json(
        "aggregate",
        "--period",
        "monthly",
        "--period",
        "daily",
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
    )
    assert [d["periodType"] for d in ranged] == ["DAILY", "MONTHLY"]
    assert ranged[1]["recordsSeen"] == 5
    table = metered.ok("aggregate", "--period", "hourly").stdout.splitlines()
    assert table[0].split()[:4] == ["PERIOD", "SUMMARIES", "PERIODS", "RECORDS"]


def test_export_jsonl_to_stdout(metered: Cli) -> None:
    """export streams JSON Lines to stdout and says how many on stderr."""
    record_some(metered)
    result = metered.ok("usage", "export", "api_calls")
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["subjectId"] for d in docs] == ["o1", "o1", "o2"]
    assert "Exported 3 records" in result.stderr
    assert len(metered.ok("usage", "export").stdout.splitlines()) == 5


def test_export_csv_file(metered: Cli, tmp_path: Path) -> None:
    """export to a .csv file writes CSV with the import columns and reports the count."""
    record_some(metered)
    out = tmp_path / "out.csv"
    doc = metered.json("usage", "export", "storage_gb", "-o", str(out), "--from", "2026-01-10")
    assert doc == {"output": str(out), "format": "csv", "records": 1}
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [(r["metricKey"], r["quantity"], r["timestamp"]) for r in rows] == [
        ("storage_gb", "42.500000", "2026-01-20T08:00:00+00:00")  # T3 in the zone (UTC)
    ]
    assert not (tmp_path / "out.csv.partial").exists()
    line = metered.fails("usage", "export", "-o", str(tmp_path / "missing" / "x.csv"))
    assert "cannot write" in line


def test_export_import_round_trip(metered: Cli, tmp_path: Path) -> None:
    """Exporting then importing into a fresh store gives the same totals."""
    record_some(metered)
    metered.ok(
        "usage",
        "record",
        "api_calls",
        "org",
        'o,3 "x"',
        "--timestamp",
        T1,
        "--metadata",
        '{"note": "a,b\\nc"}',
        "--source",
        "src",
    )
    fresh = Cli(CliRunner(), f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path / "fresh.db")
    fresh.ok("--create", "metric", "list")
    fresh.ok("metric", "define", "api_calls", "-a", "count")
    fresh.ok("metric", "define", "storage_gb", "-a", "max")
    for name in ("all.csv", "all.jsonl"):
        metered.ok("usage", "export", "-o", str(tmp_path / name))
        fresh.ok("usage", "import", str(tmp_path / name))
    for key in ("api_calls", "storage_gb"):
        args = (
            "usage",
            "summary",
            key,
            "--period",
            "monthly",
            "--from",
            "2026-01-01",
            "--to",
            "2026-02-01",
        )
        assert fresh.json(*args) == metered.json(*args)
        assert fresh.json("usage", "get", key) == metered.json("usage", "get", key)


def test_export_then_import_into_the_same_store_changes_nothing(metered: Cli) -> None:
    """An export re-imported where it came from only finds records already recorded."""
    record_some(metered)
    metered.ok("usage", "export", "-o", "again.jsonl")
    doc = metered.json("usage", "import", "again.jsonl")
    assert (doc["recorded"], doc["duplicates"], doc["bad"]) == (0, 5, 0)


def test_main_entry_point_reports_errors_in_one_line(metered: Cli) -> None:
    """The console script's group turns errors into one line with the right exit code (6:
    not found)."""
    result = CliRunner().invoke(cli, ["--store", metered.store, "usage", "get", "nope"])
    assert result.exit_code == 6
    assert result.stderr == "Error: metric 'nope' not found\n"
