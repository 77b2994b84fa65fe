"""One time rule for every format (the configured zone, ISO-8601 with its offset, every digit),
and month and year shorthands for --from/--to (their start in the configured zone)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.cli.conftest import Cli
from tsmeter.cli.reconcile import _utc_time

# around the November boundaries of Europe/Paris (UTC+1 in winter)
EDGES = {
    "oct-last": "2026-10-31T22:59:59Z",  # 23:59:59 on 31 October in Paris
    "nov-first": "2026-10-31T23:30:00Z",  # 00:30 on 1 November in Paris, still October in UTC
    "nov-last": "2026-11-30T22:30:00Z",  # 23:30 on 30 November in Paris
    "dec-first": "2026-11-30T23:30:00Z",  # 00:30 on 1 December in Paris, November in UTC
}


@pytest.fixture
def edges(metered: Cli) -> Cli:
    """Records on each side of November's boundaries in Paris, one per subject."""
    for subject, at in EDGES.items():
        metered.ok("usage", "record", "api_calls", "org", subject, "--timestamp", at)
    return metered


def subjects(run: Cli, *args: str) -> list[str]:
    return [d["subjectId"] for d in run.json("usage", "get", "api_calls", *args)]


def in_range(start: datetime, end: datetime) -> list[str]:
    """The subjects whose record lies in [start, end): the independent expectation."""
    return [
        s for s, at in EDGES.items() if start <= datetime.fromisoformat(at) < end
    ]  # fmt: skip


@pytest.mark.parametrize("zone", ["Europe/Paris", "UTC", "Asia/Kathmandu"])
def test_a_month_is_that_month_in_the_zone(edges: Cli, zone: str) -> None:
    """--from 2026-11 --to 2026-12 is November in the configured zone, [start, end)."""
    tz = ZoneInfo(zone)
    expected = in_range(datetime(2026, 11, 1, tzinfo=tz), datetime(2026, 12, 1, tzinfo=tz))
    got = subjects(edges, "--from", "2026-11", "--to", "2026-12") if zone == "UTC" else (
        [d["subjectId"] for d in edges.json("--timezone", zone, "usage", "get", "api_calls",
                                            "--from", "2026-11", "--to", "2026-12")]
    )  # fmt: skip
    assert got == expected
    assert expected  # the case is not empty


def test_the_zone_decides_which_records_a_month_holds(edges: Cli) -> None:
    """Paris and UTC Novembers differ exactly at the edges."""
    paris = [d["subjectId"] for d in edges.json("--timezone", "Europe/Paris", "usage", "get",
             "api_calls", "--from", "2026-11", "--to", "2026-12")]  # fmt: skip
    utc = subjects(edges, "--from", "2026-11", "--to", "2026-12")
    assert paris == ["nov-first", "nov-last"]
    assert utc == ["nov-last", "dec-first"]


def test_a_year_and_mixed_forms(edges: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """--from 2026 is 1 January in the zone ($TSMETER_TIMEZONE too); forms mix freely."""
    monkeypatch.setenv("TSMETER_TIMEZONE", "Europe/Paris")
    assert subjects(edges, "--from", "2026", "--to", "2027") == list(EDGES)
    assert subjects(edges, "--from", "2027") == []
    assert subjects(edges, "--from", "2026-11-30", "--to", "2026-12") == ["nov-last"]
    assert subjects(edges, "--to", "2026-11") == ["oct-last"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-13", "month 13 does not exist: expected YYYY-MM with a month from 01 to 12"),
        ("2026-00", "month 00 does not exist"),
        ("2026-1", "expected YYYY-MM with a two-digit month (2026-01), got '2026-1'"),
        ("2026-02-30", "no such date '2026-02-30'"),
        ("0000", "no such date '0000'"),
    ],
)
@pytest.mark.parametrize("option", ["--from", "--to"])
def test_misspelt_shorthands_are_clear_errors(
    metered: Cli, option: str, text: str, problem: str
) -> None:
    """A month that does not exist or a one-digit month is one line naming the option."""
    result = metered("usage", "get", "api_calls", option, text)
    assert result.exit_code == 1
    line = metered.fails("usage", "get", "api_calls", option, text)
    assert line.startswith(f"Error: {option}: ") and problem in line


def test_reconcile_shorthands_start_in_utc() -> None:
    """reconcile compares UTC periods, so its shorthands start at UTC midnight."""
    assert _utc_time("--from", "2026-11") == datetime(2026, 11, 1, tzinfo=UTC)
    assert _utc_time("--to", "2027") == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        ("Asia/Kathmandu", "2026-03-29T07:15:00.250000+05:45"),
        ("Europe/Paris", "2026-03-29T03:30:00.250000+02:00"),  # after the spring change
        ("UTC", "2026-03-29T01:30:00.250000+00:00"),
    ],
)
def test_every_format_shows_the_same_time(metered: Cli, zone: str, shown: str) -> None:
    """Table, JSON and CSV print one string for a time: the zone's, with its offset and its
    microseconds (nothing dropped)."""
    metered.ok(
        "usage", "record", "api_calls", "org", "o1", "--timestamp", "2026-03-29T01:30:00.25Z"
    )
    tz = ["--timezone", zone]
    (doc,) = metered.json(*tz, "usage", "get", "api_calls")
    rows = list(csv.DictReader(io.StringIO(metered.ok(*tz, "usage", "get", "api_calls",
                                                      fmt="csv").stdout)))  # fmt: skip
    table = metered.ok(*tz, "usage", "get", "api_calls").stdout.splitlines()
    assert doc["timestamp"] == rows[0]["timestamp"] == table[2].split()[0] == shown
    assert datetime.fromisoformat(shown) == datetime(2026, 3, 29, 1, 30, 0, 250000, tzinfo=UTC)
    # what is printed is a valid --from: the record is found from exactly that time
    assert len(metered.json(*tz, "usage", "get", "api_calls", "--from", shown)) == 1


def test_summaries_show_period_starts_in_the_zone(metered: Cli) -> None:
    """A daily summary's period starts at local midnight, printed with the local offset."""
    metered.ok("usage", "record", "api_calls", "org", "o1", "--timestamp", "2026-07-01T10:00Z")
    docs = metered.json("--timezone", "America/New_York", "usage", "summary", "api_calls",
                        "--period", "daily", "--from", "2026-07", "--to", "2026-08")  # fmt: skip
    assert [(d["periodStart"], d["periodEnd"]) for d in docs] == [
        ("2026-07-01T00:00:00-04:00", "2026-07-02T00:00:00-04:00")
    ]
