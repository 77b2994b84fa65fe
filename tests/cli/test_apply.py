"""``tsmeter apply FILE``: the plan printed first in each format, --dry-run, idempotency,
--prune, exact limits, hostile names, and a bad file that changes nothing; on the embedded
store and on a fleet's PostgreSQL catalog."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tests.cli.conftest import Cli, one_line_error
from tsmeter.cli.main import cli

FILE = """\
metrics:
  - key: api_calls
    aggregation_type: count
    unit: calls
    precision: 0
  - key: spend_usd
    unit: USD
    precision: 2
    rounding: half_even
channels:
  ops:
    emails: [ops@example.com]
    webhook: https://hooks.example.com/t?token=s3cr3t
thresholds:
  - metric: api_calls
    subject_type: org
    limit: 10000
    warn_at: 90%
    action: block
    notify: [ops]
  - metric: spend_usd
    subject_type: org
    subject_id: acme
    limit: 0.1
"""


def write(tmp: Path, text: str, name: str = "tsmeter.yaml") -> str:
    path = tmp / name
    path.write_text(text, "utf-8")
    return str(path)


def dry_run(run: Cli, *args: str, fmt: str | None = None) -> str:
    """Run ``apply ... --dry-run`` on a store that differs from the file: exit status 4
    (drift); return what it printed."""
    result = run("apply", *args, "--dry-run", fmt=fmt)
    assert result.exit_code == 4, result.output
    return result.stdout


def state(run: Cli) -> tuple[Any, Any]:
    """The metrics and thresholds in the store, as JSON."""
    return run.json("metric", "list", "--all-orgs"), run.json("threshold", "list")


def test_dry_run_prints_the_plan_and_changes_nothing(run: Cli, tmp_path: Path) -> None:
    """--dry-run shows every create with its fields, says nothing changed, and the store
    stays empty; the webhook's token is never printed."""
    out = dry_run(run, write(tmp_path, FILE))
    lines = out.splitlines()
    assert lines[0].endswith("tsmeter.yaml: 4 to create, 0 to update, 0 to delete, 0 unchanged.")
    assert lines[-1] == "Dry run: nothing was changed."
    rows = [line.split() for line in lines if line.startswith("create")]
    assert ["create", "threshold", "spend_usd", "org", "acme", "ALERT", "limit", "0.1"] in rows
    assert ["create", "threshold", "api_calls", "org", "*", "BLOCK", "warn_at", "9000"] in rows
    assert ["create", "metric", "spend_usd", "rounding", "HALF_EVEN"] in rows
    assert "s3cr3t" not in out and "token=***" in out
    assert state(run) == ([], [])


def test_apply_then_apply_again_changes_nothing(run: Cli, tmp_path: Path) -> None:
    """The first apply creates everything, exactly; the second prints no changes and leaves
    every stored field (updated_at included) as it was."""
    path = write(tmp_path, FILE)
    assert run.ok("apply", path).stdout.splitlines()[-1] == "Applied 4 changes."
    metrics, thresholds = state(run)
    assert [(m["key"], m["precision"]) for m in metrics] == [("api_calls", 0), ("spend_usd", 2)]
    spend = next(t for t in thresholds if t["metricKey"] == "spend_usd")
    assert Decimal(spend["threshold"]) == Decimal("0.1") and spend["threshold"] == "0.1"
    again = run.ok("apply", path).stdout.splitlines()
    assert again == [
        "Plan for " + path + ": 0 to create, 0 to update, 0 to delete, 4 unchanged.",
        f"No changes: the store matches {path}.",
    ]
    assert state(run) == (metrics, thresholds)


def test_json_plan_shows_updates_field_by_field(run: Cli, tmp_path: Path) -> None:
    """An edited file's plan in JSON: each changed field with before and after, decimals as
    exact strings; the store then holds the new values."""
    run.ok("apply", write(tmp_path, FILE))
    edited = FILE.replace("limit: 0.1", "limit: 0.25").replace("unit: calls", "unit: requests")
    doc = json.loads(dry_run(run, write(tmp_path, edited), fmt="json"))
    assert (doc["dryRun"], doc["changed"], doc["applied"]) == (True, True, False)
    assert doc["summary"] == {"create": 0, "update": 2, "delete": 0, "unchanged": 2}
    changes = [(s["kind"], s["metricKey"], s["changes"]) for s in doc["steps"]
               if s["action"] == "update"]  # fmt: skip
    assert changes == [
        ("metric", "api_calls", [{"field": "unit", "before": "calls", "after": "requests"}]),
        ("threshold", "spend_usd", [{"field": "limit", "before": "0.1", "after": "0.25"},
                                    {"field": "warn_at", "before": "0.08", "after": "0.20"}]),
    ]  # fmt: skip
    assert run.json("metric", "get", "api_calls")["unit"] == "calls"  # dry run: unchanged
    applied = run.json("apply", str(tmp_path / "tsmeter.yaml"))
    assert applied["applied"] is True
    assert run.json("metric", "get", "api_calls")["unit"] == "requests"
    hook = next(s for s in applied["steps"] if s["metricKey"] == "api_calls" and s["kind"]
                == "threshold")  # fmt: skip
    assert hook["action"] == "unchanged"
    assert "s3cr3t" not in json.dumps(doc)


def test_csv_plan_has_one_row_per_field(run: Cli, tmp_path: Path) -> None:
    """CSV: a header and one row per changed field (a step without changes: one row)."""
    run.ok("apply", write(tmp_path, FILE))
    edited = FILE.replace("limit: 10000", "limit: 20000")
    out = dry_run(run, write(tmp_path, edited), fmt="csv")
    lines = out.splitlines()
    assert lines[0].startswith("action,kind,path,metricKey,orgId,thresholdId")
    updates = [line for line in lines if line.startswith("update,")]
    assert len(updates) == 2 and ",limit,10000,20000," in updates[0]
    assert ",warn_at,9000,18000," in updates[1]
    assert sum(line.startswith("unchanged,") for line in lines) == 3


def test_prune_deletes_only_what_is_absent(run: Cli, tmp_path: Path) -> None:
    """Without --prune, extra metrics and thresholds are kept and counted; with it they are
    deleted, the plan notes a deleted metric's recorded usage, and declared items stay."""
    path = write(tmp_path, FILE)
    run.ok("apply", path)
    run.ok("metric", "define", "legacy")
    run.ok("usage", "record", "legacy", "org", "o1", "5")
    run.ok("threshold", "create", "api_calls", "user", "5")
    kept = run.ok("apply", path).stdout
    assert (
        "; kept, not in " + path + ": 1 metric and 1 threshold (--prune" in kept
        and "No changes" in kept
    )
    declared = state(run)
    out = run.ok("apply", path, "--prune").stdout
    assert "0 to create, 0 to update, 2 to delete, 4 unchanged" in out
    assert "Note: metric legacy has recorded usage: its records stay in the store" in out
    metrics, thresholds = state(run)
    assert [m["key"] for m in metrics] == ["api_calls", "spend_usd"]
    assert metrics == [m for m in declared[0] if m["key"] != "legacy"]
    assert thresholds == [t for t in declared[1] if t["subjectType"] != "user"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (FILE.replace("precision: 0", "precison: 0"),
         "metrics[0].precison: unknown key (did you mean 'precision'?)"),
        (FILE.replace("limit: 0.1", "limit: -0.1"),
         "thresholds[1].limit: must be greater than zero"),
        (FILE.replace("notify: [ops]", "notify: [pager]"),
         "thresholds[0].notify: unknown channel 'pager'"),
        (FILE + "  - metric: nowhere\n    subject_type: org\n    limit: 1\n",
         "thresholds[2].metric: no metric 'nowhere'"),
    ],
)  # fmt: skip
def test_a_bad_file_changes_nothing(run: Cli, tmp_path: Path, text: str, expected: str) -> None:
    """A mistake anywhere is one Error line naming the file and the place; nothing of the
    file's valid part is applied."""
    path = write(tmp_path, text)
    line = run.fails("apply", path)
    assert line.startswith(f"Error: {path}: ") and expected in line
    assert state(run) == ([], [])


def test_a_precision_change_is_refused_before_anything_changes(run: Cli, tmp_path: Path) -> None:
    """A precision cannot change; the other edits of the same file are not applied either."""
    run.ok("apply", write(tmp_path, FILE))
    before = state(run)
    edited = FILE.replace("precision: 2", "precision: 4").replace("unit: calls", "unit: x")
    line = run.fails("apply", write(tmp_path, edited))
    assert "metrics[1].precision: cannot change from 2 to 4" in line
    assert state(run) == before


def test_yaml_and_toml_plan_alike(run: Cli, tmp_path: Path) -> None:
    """The TOML form of the file plans the same steps and, once the YAML is applied, finds
    nothing to change."""
    toml = """
[[metrics]]
key = "api_calls"
aggregation_type = "count"
unit = "calls"
precision = 0

[[metrics]]
key = "spend_usd"
unit = "USD"
precision = 2
rounding = "half_even"

[channels.ops]
emails = ["ops@example.com"]
webhook = "https://hooks.example.com/t?token=s3cr3t"

[[thresholds]]
metric = "api_calls"
subject_type = "org"
limit = 10000
warn_at = "90%"
action = "block"
notify = ["ops"]

[[thresholds]]
metric = "spend_usd"
subject_type = "org"
subject_id = "acme"
limit = 0.1
"""
    toml_path = write(tmp_path, toml, "tsmeter.toml")
    yaml_path = write(tmp_path, FILE)

    def steps(path: str) -> list[Any]:
        doc = json.loads(dry_run(run, path, fmt="json"))
        return [{k: v for k, v in s.items() if k != "thresholdId"} for s in doc["steps"]]

    assert steps(toml_path) == steps(yaml_path)
    run.ok("apply", yaml_path)
    assert "No changes" in run.ok("apply", toml_path, "--dry-run").stdout  # in sync: status 0


HOSTILE = ["a,b=c \"q\" 's'", "ünï 😀", "rtl\u202eevil", "back\\slash", "- x: y"]


def test_hostile_names_are_data(run: Cli, tmp_path: Path) -> None:
    """Keys, orgs and subject ids with commas, quotes, unicode, bidi controls and YAML syntax
    are stored as written (JSON), shown escaped in the table, and found unchanged again."""
    doc = {
        "metrics": [{"key": n, "org_id": n, "description": f"{n}\nsecond line"} for n in HOSTILE],
        "thresholds": [{"metric": n, "org_id": n, "subject_type": n, "subject_id": n,
                        "limit": "0.5"} for n in HOSTILE],
    }  # fmt: skip
    path = write(tmp_path, yaml.safe_dump(doc, allow_unicode=True))
    out = run.ok("apply", path).stdout
    assert "rtl\\u202eevil" in out and "\u202e" not in out
    metrics, thresholds = state(run)
    assert sorted((m["key"], m["orgId"], m["description"]) for m in metrics) == sorted(
        (n, n, f"{n}\nsecond line") for n in HOSTILE
    )
    assert sorted((t["subjectType"], t["subjectId"], t["threshold"]) for t in thresholds) == sorted(
        (n, n, "0.5") for n in HOSTILE
    )
    assert "No changes" in run.ok("apply", path).stdout


def test_a_bad_file_never_opens_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is read and checked first: a bad file on a store URL that does not exist is
    an error about the file, and no store file appears."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "none.db"
    result = CliRunner().invoke(
        cli, ["--store", str(store), "apply", write(tmp_path, "metrics: [{key: 1}]")]
    )
    assert "metrics[0].key: must be text" in one_line_error(result)
    assert not store.exists()


@pytest.mark.postgres
def test_apply_on_a_fleets_postgresql_catalog(
    influx_db: tuple[Any, str], pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an InfluxDB store whose catalog is the fleet's PostgreSQL: the same plan, exact
    limits, a second apply with no changes, and --prune."""
    monkeypatch.chdir(tmp_path)
    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={pg_url}"
    fleet = Cli(CliRunner(), url, tmp_path / "unused")
    path = write(tmp_path, FILE)
    first = fleet.json("apply", path)
    assert first["summary"] == {"create": 4, "update": 0, "delete": 0, "unchanged": 0}
    thresholds = fleet.json("threshold", "list")
    assert sorted(t["threshold"] for t in thresholds) == ["0.1", "10000"]
    again = fleet.json("apply", path)
    assert (again["changed"], again["summary"]["unchanged"]) == (False, 4)
    fleet.ok("metric", "define", "legacy")
    pruned = fleet.json("apply", path, "--prune")
    assert [(s["action"], s["metricKey"]) for s in pruned["steps"] if s["action"] == "delete"] == [
        ("delete", "legacy")
    ]
    assert [m["key"] for m in fleet.json("metric", "list")] == ["api_calls", "spend_usd"]
