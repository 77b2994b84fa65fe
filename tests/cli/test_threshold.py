"""``tsmeter threshold``: create, update, delete and list limits."""

from __future__ import annotations

import csv
import io
import shlex
from decimal import Decimal

from tests.cli.conftest import Cli


def exact(*values: object) -> tuple[Decimal, ...]:
    """JSON/CSV decimal strings as Decimals (a float there would be a bug)."""
    assert all(isinstance(v, str) for v in values), values
    return tuple(Decimal(str(v)) for v in values)


def test_create_with_a_percentage_warn_level(metered: Cli) -> None:
    """create stores the limit, a warn level given as a percentage, and notify targets."""
    doc = metered.json(
        "threshold",
        "create",
        "api_calls",
        "org",
        "1000",
        "--subject-id",
        "o1",
        "--warn-at",
        "90%",
        "--period",
        "monthly",
        "--action",
        "block",
        "--notify-email",
        "ops@example.com",
        "--notify-email",
        "cto@example.com",
        "--notify-webhook",
        "https://hooks.example.com/t",
    )
    assert doc["metricKey"] == "api_calls"
    assert (doc["subjectType"], doc["subjectId"]) == ("org", "o1")
    assert exact(doc["threshold"], doc["warnThreshold"]) == (1000, 900)
    assert (doc["periodType"], doc["action"]) == ("MONTHLY", "BLOCK")
    assert doc["notifyEmails"] == ["ops@example.com", "cto@example.com"]
    assert doc["notifyWebhook"] == "https://hooks.example.com/t"


def test_defaults(metered: Cli) -> None:
    """Without options a threshold covers every subject, warns at 80 % and alerts."""
    doc = metered.json("threshold", "create", "api_calls", "org", "500")
    assert (doc["subjectId"], doc["action"]) == ("*", "ALERT")
    assert exact(doc["warnThreshold"]) == (400,)


def test_list_formats_and_filters(metered: Cli) -> None:
    """list filters by metric and subject, in table, JSON and CSV."""
    metered.ok("threshold", "create", "api_calls", "org", "1000", "--subject-id", "o1")
    metered.ok("threshold", "create", "api_calls", "org", "5000")
    metered.ok("threshold", "create", "storage_gb", "org", "100", "--warn-at", "75")
    assert len(metered.json("threshold", "list")) == 3
    assert len(metered.json("threshold", "list", "api_calls")) == 2
    assert len(metered.json("threshold", "list", "api_calls", "--subject-id", "o2")) == 1
    table = metered.ok("threshold", "list", "storage_gb").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "METRIC", "SUBJECT"]
    assert table[2].split()[1:4] == ["storage_gb", "org", "*"]
    assert exact(*table[2].split()[4:6]) == (100, 75)
    rows = list(csv.DictReader(io.StringIO(metered.ok("threshold", "list", fmt="csv").stdout)))
    assert exact(*(r["threshold"] for r in rows)) == (1000, 5000, 100)
    assert "No thresholds" in metered.ok("threshold", "list", "nothing").stderr


def test_update(metered: Cli) -> None:
    """update changes what is given; a new limit resets the warn level to 80 % of it."""
    tid = metered.json(
        "threshold",
        "create",
        "api_calls",
        "org",
        "1000",
        "--warn-at",
        "950",
        "--notify-email",
        "a@example.com",
    )["id"]
    doc = metered.json("threshold", "update", tid, "--limit", "2000")
    assert exact(doc["threshold"], doc["warnThreshold"]) == (2000, 1600)
    doc = metered.json("threshold", "update", tid, "--warn-at", "95%", "--action", "warn")
    assert (exact(doc["warnThreshold"]), doc["action"]) == ((1900,), "WARN")
    doc = metered.json("threshold", "update", tid, "--clear-notify")
    assert (doc["notifyEmails"], doc["notifyWebhook"]) == ([], None)
    assert exact(metered.json("threshold", "list")[0]["threshold"]) == (2000,)


def test_delete(metered: Cli) -> None:
    """delete removes a threshold; deleting it again is a not-found line."""
    tid = metered.json("threshold", "create", "api_calls", "org", "10")["id"]
    assert metered.ok("threshold", "delete", tid).stdout.strip() == f"Deleted threshold {tid}."
    assert metered.json("threshold", "list") == []
    assert metered.fails("threshold", "delete", tid) == f"Error: threshold '{tid}' not found"


def test_errors_are_one_line(metered: Cli) -> None:
    """Unknown metric or threshold, bad values and option clashes are one line each."""
    tid = metered.json("threshold", "create", "api_calls", "org", "10")["id"]
    cases = [
        ("threshold create foo org 10", "Error: metric 'foo' not found"),
        ("threshold create api_calls org 0", "Error: threshold: must be greater than zero"),
        ("threshold create api_calls org 10 --warn-at lots",
         "--warn-at: expected a number or a percentage"),
        ("threshold create api_calls org 10 --warn-at 200%",
         "warnThreshold: must be greater than 0 and at most threshold"),
        ("threshold create api_calls org 10 --notify-email nobody",
         "not an email address: 'nobody'"),
        ("threshold create api_calls org 10 --notify-webhook ftp://x",
         "must be an http:// or https:// URL"),
        ("threshold update nope --limit 5", "Error: threshold 'nope' not found"),
        (f"threshold update {tid}", "nothing to change"),
        (f"threshold update {tid} --clear-notify --notify-email a@b.c", "not both"),
    ]  # fmt: skip
    for command, expected in cases:
        assert expected in metered.fails(*shlex.split(command)), command
