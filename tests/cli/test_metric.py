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
        "KEY", "AGGREGATION", "UNIT", "RESET", "PRECISION", "ROUNDING", "ORG", "DIMENSIONS",
        "UNIQUE", "NAME"
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


def test_define_with_dimensions_unique_property_and_time_unit(run: Cli) -> None:
    """--dimension NAME[:MAX], --dimension-values NAME=A,B, --unique-property and --time-unit
    reach the definition; get and list show them."""
    run.ok("metric", "define", "tokens", "--dimension", "model:50", "--dimension", "tier",
           "--dimension-values", "region=eu,us")  # fmt: skip
    doc = run.json("metric", "get", "tokens")
    assert doc["dimensions"] == [
        {"name": "model", "maxValues": 50, "values": None},
        {"name": "tier", "maxValues": 100, "values": None},
        {"name": "region", "maxValues": 100, "values": ["eu", "us"]},
    ]
    run.ok("metric", "define", "mau", "-a", "unique_count", "--unique-property", "user_id")
    run.ok("metric", "define", "storage", "-a", "TIME_WEIGHTED_SUM", "--time-unit", "day")
    assert run.json("metric", "get", "mau")["uniqueProperty"] == "user_id"
    stored = run.json("metric", "get", "storage")
    assert (stored["aggregationType"], stored["timeUnit"]) == ("TIME_WEIGHTED_SUM", "DAY")
    lines = run.ok("metric", "get", "tokens").stdout.splitlines()
    assert "dimensions       model (max 50), tier (max 100), region (eu, us)" in lines
    table = run.ok("metric", "list").stdout.splitlines()
    row = next(line for line in table if line.startswith("mau"))
    assert row[table[0].index("UNIQUE") :].startswith("user_id")
    assert "model (max 50), tier (max 100), region (eu, us)" in "\n".join(table)


def test_update_changes_the_dimensions_it_names(run: Cli) -> None:
    """update --dimension changes a bound, --dimension-values a closed set; the dimensions
    not named stay; a new name, another unique property or time unit is refused."""
    run.ok("metric", "define", "tokens", "--dimension", "model", "--dimension-values",
           "region=eu,us")  # fmt: skip
    run.ok("metric", "update", "tokens", "--dimension", "model:500")
    run.ok("metric", "update", "tokens", "--dimension-values", "region=eu,us,ap")
    assert run.json("metric", "get", "tokens")["dimensions"] == [
        {"name": "model", "maxValues": 500, "values": None},
        {"name": "region", "maxValues": 100, "values": ["eu", "us", "ap"]},
    ]
    error = run.fails("metric", "update", "tokens", "--dimension", "zone")
    assert error.startswith("Error: dimensions: dimension names cannot change")
    run.ok("metric", "define", "mau", "-a", "unique_count", "--unique-property", "user_id")
    assert "cannot change from 'user_id' to 'account'" in run.fails(
        "metric", "update", "mau", "--unique-property", "account")  # fmt: skip
    assert "cannot change from UNIQUE_COUNT to SUM" in run.fails(
        "metric", "update", "mau", "-a", "sum")  # fmt: skip
    assert "timeUnit: cannot change from HOUR to DAY" in run.fails(
        "metric", "update", "tokens", "--time-unit", "day")  # fmt: skip


def test_bad_property_options_are_one_line_errors(run: Cli) -> None:
    """Malformed options are usage errors; bad names and bounds name the field."""
    assert "MAX must be a whole number" in run.fails(
        "metric", "define", "t", "--dimension", "model:many")  # fmt: skip
    assert "give NAME=A,B" in run.fails("metric", "define", "t", "--dimension-values", "x")
    assert "dimensions[0].name: must be a letter" in run.fails(
        "metric", "define", "t", "--dimension", "user id")  # fmt: skip
    assert "dimensions[0].max_values" in run.fails(
        "metric", "define", "t", "--dimension", "model:0")  # fmt: skip
    assert "uniqueProperty: required for a UNIQUE_COUNT metric" in run.fails(
        "metric", "define", "t", "-a", "unique_count")  # fmt: skip
    assert "'week' is not one of 'second', 'minute', 'hour', 'day'" in run.fails(
        "metric", "define", "t", "--time-unit", "week")  # fmt: skip
