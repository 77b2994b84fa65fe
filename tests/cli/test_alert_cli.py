"""``tsmeter alert`` (list, ack, resolve, evaluate) and ``tsmeter threshold check``."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import click
import pytest

from tests.cli.conftest import Cli, one_line_error
from tests.hostile import NASTY_NAMES
from tsmeter.cli.output import cell_text
from tsmeter.metering.reading import restore_cell

HOSTILE_IDS = (
    *NASTY_NAMES,
    "line\u2028separator",
    "\u202eright-to-left",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",
    "e\u0301",
    "'; DROP TABLE alerts; --",
    '{"json": true}',
    "tab\u00a0nbsp",
)


def record(run: Cli, subject_id: str, count: int, *, at: str | None = None) -> None:
    """Record ``count`` api_calls for org ``subject_id`` (now, or at ``at``)."""
    when = ["--timestamp", at] if at is not None else []
    for _ in range(count):
        run.ok("usage", "record", *when, "api_calls", "org", subject_id)


def table_cell(text: str) -> str:
    """How a value shows in a table cell (hidden characters escaped, long ones cut)."""
    return cell_text(text)


@pytest.fixture
def alerted(metered: Cli) -> Cli:
    """A store with a limit of 3 api_calls per org (warn at 2): o1 exceeded, o2 approaching."""
    metered.ok("threshold", "create", "api_calls", "org", "3", "--warn-at", "2")
    record(metered, "o1", 3)
    record(metered, "o2", 2)
    record(metered, "o3", 1)
    return metered


def test_evaluate_opens_one_alert_per_crossing(alerted: Cli) -> None:
    """evaluate prints the counts; a second run opens nothing new."""
    doc = alerted.json("alert", "evaluate")
    assert doc == {
        "thresholds": 1,
        "subjects": 3,
        "approaching": 1,
        "exceeded": 1,
        "resolved": 0,
        "failed": 0,
        "errors": [],
    }
    text = alerted.ok("alert", "evaluate").stdout
    assert text == (
        "Evaluated 1 threshold for 3 subjects: opened 0 exceeded and 0 approaching alerts,"
        " resolved 0.\n"
    )


def test_list_formats_and_filters(alerted: Cli) -> None:
    """list shows the alerts as a table, JSON or CSV, filtered by status, metric and subject."""
    assert "No alerts." in alerted.ok("alert", "list").stderr
    alerted.ok("alert", "evaluate")
    alerts = alerted.json("alert", "list")
    assert sorted((a["subjectId"], a["level"]) for a in alerts) == [
        ("o1", "exceeded"),
        ("o2", "approaching"),
    ]
    o1 = next(a for a in alerts if a["subjectId"] == "o1")
    assert isinstance(o1["actualValue"], str) and isinstance(o1["thresholdValue"], str)
    assert (Decimal(o1["actualValue"]), Decimal(o1["thresholdValue"])) == (3, 3)
    assert o1["percentage"] == 100.0
    assert (o1["status"], o1["metricKey"], o1["subjectType"]) == ("PENDING", "api_calls", "org")
    table = alerted.ok("alert", "list", "--subject-id", "o1").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "STATUS", "LEVEL", "METRIC"]
    assert len(table) == 3
    cells = table[2].split()
    assert cells[1:6] == ["PENDING", "exceeded", "api_calls", "org", "o1"]
    assert [Decimal(c) for c in cells[6:9]] == [3, 3, 100]
    rows = list(csv.DictReader(io.StringIO(alerted.ok("alert", "list", fmt="csv").stdout)))
    assert sorted(r["subjectId"] for r in rows) == ["o1", "o2"]
    assert {r["status"] for r in rows} == {"PENDING"}
    assert len(alerted.json("alert", "list", "--status", "PENDING")) == 2
    assert alerted.json("alert", "list", "--status", "resolved") == []
    assert len(alerted.json("alert", "list", "--metric", "api_calls")) == 2
    assert alerted.json("alert", "list", "--metric", "storage_gb") == []
    assert alerted.json("alert", "list", "--subject-type", "user") == []
    assert [a["subjectId"] for a in alerted.json("alert", "list", "--subject-id", "o2")] == ["o2"]


def test_ack_and_resolve(alerted: Cli) -> None:
    """ack marks an alert as seen; resolve closes it; a resolved alert cannot be acknowledged."""
    alerted.ok("alert", "evaluate")
    alert_id = alerted.json("alert", "list", "--subject-id", "o1")[0]["id"]
    acked = alerted.json("alert", "ack", alert_id)
    assert (acked["id"], acked["status"]) == (alert_id, "ACKNOWLEDGED")
    assert acked["acknowledgedAt"] is not None and acked["resolvedAt"] is None
    lines = alerted.ok("alert", "ack", alert_id).stdout.splitlines()
    assert "status          ACKNOWLEDGED" in lines
    resolved = alerted.json("alert", "resolve", alert_id)
    assert (resolved["status"], resolved["resolvedAt"] is not None) == ("RESOLVED", True)
    assert alerted.json("alert", "resolve", alert_id) == resolved  # resolving again: no change
    line = alerted.fails("alert", "ack", alert_id)
    assert line == f"Error: status: alert {alert_id!r} is resolved already"
    assert [a["id"] for a in alerted.json("alert", "list", "--status", "resolved")] == [alert_id]
    assert len(alerted.json("alert", "list", "--status", "pending")) == 1
    # resolved by hand: the crossing does not open it again in its window
    assert alerted.json("alert", "evaluate")["exceeded"] == 0


def test_evaluate_resolves_when_usage_falls_back(alerted: Cli) -> None:
    """A raised limit puts usage back under it: the next evaluation resolves the alerts."""
    alerted.ok("alert", "evaluate")
    tid = alerted.json("threshold", "list")[0]["id"]
    alerted.ok("threshold", "update", tid, "--limit", "100")
    assert alerted.json("alert", "evaluate")["resolved"] == 2
    assert {a["status"] for a in alerted.json("alert", "list")} == {"RESOLVED"}


def test_evaluate_at_a_past_time(metered: Cli) -> None:
    """--at evaluates the windows containing that time (a date: local midnight)."""
    metered.ok("threshold", "create", "api_calls", "org", "2", "--period", "monthly")
    record(metered, "o1", 2, at="2026-03-10T10:00:00Z")
    assert metered.json("alert", "evaluate")["exceeded"] == 0  # now: another month
    assert metered.json("alert", "evaluate", "--at", "2026-03-31")["exceeded"] == 1
    (alert,) = metered.json("alert", "list")
    assert (alert["periodStart"], alert["periodEnd"]) == (
        "2026-03-01T00:00:00+00:00",
        "2026-04-01T00:00:00+00:00",
    )
    assert "--at" in metered.fails("alert", "evaluate", "--at", "yesterday")


@pytest.mark.parametrize("command", ["ack", "resolve"])
def test_unknown_alert_is_one_clear_error(metered: Cli, command: str) -> None:
    """An alert id that does not exist is one Error line and exit status 6 (not found)."""
    result = metered("alert", command, "no-such-alert")
    assert one_line_error(result) == "Error: alert 'no-such-alert' not found"
    assert result.exit_code == 6


def test_bad_status_is_a_usage_error(metered: Cli) -> None:
    """An unknown --status is a usage error (exit 2) naming the choices."""
    result = metered("alert", "list", "--status", "open")
    assert "'pending', 'acknowledged', 'resolved'" in one_line_error(result)
    assert result.exit_code == 2


def test_threshold_check_exit_codes(metered: Cli) -> None:
    """check exits 0 when allowed, 3 when a BLOCK threshold refuses; it records nothing."""
    free = metered.json("threshold", "check", "api_calls", "org", "o1")
    assert free["allowed"] is True and free["limit"] is None and free["thresholdId"] is None
    metered.ok("threshold", "create", "api_calls", "org", "3", "--action", "block")
    metered.ok("threshold", "create", "api_calls", "org", "1", "--subject-id", "o9")  # ALERT
    record(metered, "o1", 2)
    allowed = metered.json("threshold", "check", "api_calls", "org", "o1")
    assert allowed["allowed"] is True
    assert (Decimal(allowed["used"]), Decimal(allowed["remaining"])) == (2, 1)
    assert Decimal(allowed["limit"]) == 3 and allowed["windowEnd"].endswith("T00:00:00+00:00")
    result = metered("threshold", "check", "api_calls", "org", "o1", "--quantity", "2")
    assert result.exit_code == 3 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert "allowed      no" in lines
    fields = dict(line.split(maxsplit=1) for line in lines)
    assert (Decimal(fields["used"]), Decimal(fields["remaining"])) == (2, 1)
    doc = json.loads(
        metered(
            "threshold", "check", "api_calls", "org", "o1", "--quantity", "5", fmt="json"
        ).stdout
    )
    assert doc["allowed"] is False and doc["quantity"] == "5"
    # only BLOCK thresholds count: o9's ALERT limit of 1 does not refuse
    assert metered("threshold", "check", "api_calls", "org", "o9", "--quantity", "3").exit_code == 0
    assert len(metered.json("usage", "get", "api_calls")) == 2


def test_threshold_check_errors(metered: Cli) -> None:
    """An unknown metric is an Error line (exit 1); a non-finite quantity a usage error (2)."""
    result = metered("threshold", "check", "nope", "org", "o1")
    assert one_line_error(result) == "Error: metricKey: unknown metric 'nope'"
    assert result.exit_code == 1
    result = metered("threshold", "check", "api_calls", "org", "o1", "--quantity", "nan")
    assert "'--quantity': expected a finite number" in one_line_error(result)
    assert result.exit_code == 2


def test_threshold_check_help_documents_the_exit_status(run: Cli) -> None:
    """The help says what the exit status means."""
    text = run.ok("threshold", "check", "--help").stdout
    assert "Exit status: 0 if allowed, 3 if not" in " ".join(text.split())


def test_hostile_subject_ids_in_output(metered: Cli) -> None:
    """Subject ids with separators, quotes, backslashes, emoji and bidi controls come out of
    list, ack and check intact: exact in JSON, exact in CSV once un-neutralised, escaped and
    cut by length in tables."""
    metered.ok("threshold", "create", "api_calls", "org", "1", "--action", "block")
    for subject_id in HOSTILE_IDS:
        record(metered, subject_id, 1)
    assert metered.json("alert", "evaluate")["exceeded"] == len(HOSTILE_IDS)
    alerts = metered.json("alert", "list")
    assert sorted(a["subjectId"] for a in alerts) == sorted(HOSTILE_IDS)
    rows = list(csv.DictReader(io.StringIO(metered.ok("alert", "list", fmt="csv").stdout)))
    assert sorted(restore_cell(r["subjectId"]) for r in rows) == sorted(HOSTILE_IDS)
    table = metered.ok("alert", "list").stdout
    for subject_id in HOSTILE_IDS:
        assert table_cell(subject_id) in table, subject_id
    by_id = {a["subjectId"]: a["id"] for a in alerts}
    for subject_id in HOSTILE_IDS[:5] + HOSTILE_IDS[-7:]:
        (found,) = metered.json("alert", "list", "--subject-id", subject_id)
        assert found["id"] == by_id[subject_id]
        assert metered.json("alert", "ack", found["id"])["subjectId"] == subject_id
        result = metered("threshold", "check", "api_calls", "org", subject_id, fmt="json")
        assert result.exit_code == 3
        assert json.loads(result.stdout)["subjectId"] == subject_id
        lines = metered("threshold", "check", "api_calls", "org", subject_id).stdout
        # lines end without trailing blanks (an id of " " shows as nothing); split on the
        # newline only, since splitlines() would also split inside "line\u2028separator"
        assert f"subjectId    {table_cell(subject_id)}".rstrip() in lines.split("\n")


def test_alert_commands_are_in_the_tree_and_documented() -> None:
    """The alert group and threshold check are registered, with docstrings and examples."""
    import tsmeter.cli.alert as module
    from tsmeter.cli.main import cli

    assert module.__doc__
    group = cli.commands["alert"]
    assert isinstance(group, click.Group)
    assert set(group.commands) == {"list", "ack", "resolve", "evaluate"}
    threshold = cli.commands["threshold"]
    assert isinstance(threshold, click.Group) and "check" in threshold.commands
    for command in [group, *group.commands.values(), threshold.commands["check"]]:
        assert "Example" in (command.help or ""), command.name
