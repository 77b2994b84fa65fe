"""``tsmeter metric``: define, update, delete, get and list, in every output format."""

from __future__ import annotations

import csv
import io

from tests.cli.conftest import Cli
from tsmeter.cli.main import cli


def test_define_then_get_as_json(run: Cli) -> None:
    """A defined metric reads back with camelCase keys and upper-case enums."""
    run.ok("metric", "define", "api_calls", "-a", "count", "--unit", "calls", "--name", "API")
    doc = run.json("metric", "get", "api_calls")
    assert doc["key"] == "api_calls"
    assert doc["aggregationType"] == "COUNT"
    assert doc["resetPeriod"] == "MONTHLY"
    assert (doc["unit"], doc["name"], doc["orgId"]) == ("calls", "API", None)


def test_get_as_table_shows_one_field_per_line(metered: Cli) -> None:
    """The table format shows a single object as aligned ``field  value`` lines."""
    lines = metered.ok("metric", "get", "storage_gb").stdout.splitlines()
    assert "aggregationType  MAX" in lines
    assert any(line.startswith("unit") and line.endswith("GB") for line in lines)


def test_list_formats(metered: Cli) -> None:
    """list prints an aligned table, a JSON array and CSV with a header row."""
    table = metered.ok("metric", "list").stdout.splitlines()
    assert table[0].split() == [
        "KEY", "AGGREGATION", "UNIT", "RESET", "PRECISION", "ROUNDING", "ORG", "NAME"
    ]  # fmt: skip
    assert set(table[1]) <= {"-", " "}
    assert table[2].split()[:6] == ["api_calls", "COUNT", "calls", "MONTHLY", "6", "refuse"]
    assert table[0].index("AGGREGATION") == table[2].index("COUNT")
    docs = metered.json("metric", "list")
    assert [d["key"] for d in docs] == ["api_calls", "storage_gb"]
    rows = list(csv.DictReader(io.StringIO(metered.ok("metric", "list", fmt="csv").stdout)))
    assert [(r["key"], r["aggregationType"], r["orgId"]) for r in rows] == [
        ("api_calls", "COUNT", ""),
        ("storage_gb", "MAX", ""),
    ]


def test_empty_list(run: Cli) -> None:
    """An empty list is [] in JSON, a header in CSV and a note on stderr in a table."""
    assert run.json("metric", "list") == []
    assert run.ok("metric", "list", fmt="csv").stdout.startswith("id,key,")
    result = run.ok("metric", "list")
    assert result.stdout == ""
    assert "No metrics" in result.stderr


def test_org_scoped_metrics(metered: Cli) -> None:
    """An org's own metric is listed for that org and with --all-orgs, not globally."""
    metered.ok("metric", "define", "api_calls", "--org-id", "org-9", "-a", "sum")
    assert [d["key"] for d in metered.json("metric", "list", "--org-id", "org-9")] == ["api_calls"]
    assert len(metered.json("metric", "list")) == 2
    assert len(metered.json("metric", "list", "--all-orgs")) == 3
    assert metered.json("metric", "get", "api_calls", "--org-id", "org-9")["orgId"] == "org-9"
    assert "not both" in metered.fails("metric", "list", "--org-id", "x", "--all-orgs")


def test_update_changes_only_given_options(metered: Cli) -> None:
    """update changes the options given and keeps the rest."""
    doc = metered.json("metric", "update", "api_calls", "--name", "Requests", "-a", "sum")
    assert (doc["name"], doc["aggregationType"], doc["unit"]) == ("Requests", "SUM", "calls")
    assert metered.json("metric", "get", "api_calls")["name"] == "Requests"


def test_update_without_options_is_a_usage_error(metered: Cli) -> None:
    """update with nothing to change fails with one line and exit status 2."""
    result = metered("metric", "update", "api_calls")
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr


def test_define_twice_is_a_conflict(metered: Cli) -> None:
    """Defining an existing key prints one error line."""
    line = metered.fails("metric", "define", "api_calls")
    assert line == "Error: metric 'api_calls' already exists in the global scope"


def test_bad_key_is_one_line(run: Cli) -> None:
    """An invalid key is reported with its field name."""
    assert run.fails("metric", "define", "a" * 300).startswith("Error: key: ")


def test_delete_and_purge(metered: Cli) -> None:
    """delete removes the definition; --purge reports the records it removed."""
    metered.ok("usage", "record", "api_calls", "org", "o1")
    result = metered.json("metric", "delete", "api_calls", "--purge")
    assert result == {"deleted": "api_calls", "orgId": None, "purgedRecords": 1}
    assert metered.fails("metric", "get", "api_calls") == "Error: metric 'api_calls' not found"
    text = metered.ok("metric", "delete", "storage_gb").stdout
    assert text.strip() == "Deleted metric 'storage_gb'."


def test_not_found(run: Cli) -> None:
    """Getting, updating or deleting an unknown metric is one error line."""
    for args in (["get", "nope"], ["update", "nope", "--unit", "x"], ["delete", "nope"]):
        assert run.fails("metric", *args) == "Error: metric 'nope' not found"


def test_bad_choice_is_one_line(run: Cli) -> None:
    """An unknown aggregation type is one line that points at the command's help."""
    line = run.fails("metric", "define", "x", "-a", "median")
    assert "'median' is not one of" in line
    assert "tsmeter metric define --help" in line


def test_store_from_environment(run: Cli) -> None:
    """Without --store the URL comes from TSMETER_STORE_URL."""
    run.ok("metric", "define", "api_calls")
    env = {"TSMETER_STORE_URL": run.store}
    result = run.runner.invoke(cli, ["metric", "list", "--all-orgs"], env=env)
    assert result.exit_code == 0
    assert "api_calls" in result.stdout


def test_unsupported_store_url_is_one_line(run: Cli) -> None:
    """A store URL with an unknown scheme is reported in one line."""
    result = run.runner.invoke(cli, ["--store", "mongodb://x/y", "metric", "list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: url: unsupported store scheme 'mongodb'")
