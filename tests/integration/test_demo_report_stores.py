"""The demo's report is the same, digit for digit, on the embedded store and on a real
influxd: the stores hold and sum exact integers, so no total depends on the store."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from tests.cli.conftest import Cli
from tests.influx_server import InfluxServer
from tsmeter.cli.demo_data import METRICS

ARGS = ("demo", "--records", "20000", "--month", "2026-03", "--seed", "7")
# lines that name the store, or measure time, differ by nature
VARYING = re.compile(r"store |records/s|\d s\b|\d\.\d+ s|wall time|--store", re.I)


def _report(cli: Cli) -> list[str]:
    out = cli.ok(*ARGS).stdout
    return [line for line in out.splitlines() if not VARYING.search(line)]


def _summaries(cli: Cli) -> dict[str, list[str]]:
    """Every daily summary of every demo metric, as JSON (totals are decimal strings)."""
    out: dict[str, list[str]] = {}
    for metric in cli.json("metric", "list"):
        rows = cli.json("usage", "summary", metric["key"], "--period", "daily", "--from",
                        "2026-03-01T00:00:00Z", "--to", "2026-04-01T00:00:00Z")  # fmt: skip
        out[metric["key"]] = sorted(json.dumps(row, sort_keys=True) for row in rows)
    return out


def test_demo_report_is_identical_on_sqlite_and_influxdb(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """The report and every monthly summary (as JSON, decimal strings) match exactly."""
    server, name = influx_db
    embedded = Cli(CliRunner(), str(tmp_path / "embedded.db"), tmp_path / "embedded.db")
    embedded.ok("--create", "metric", "list")  # the demo needs a store to exist
    url = f"influxdb://127.0.0.1:{server.port}/{name}?state={tmp_path / 'state.db'}"
    influx = Cli(CliRunner(), url, tmp_path / "state.db")
    left, right = _report(embedded), _report(influx)
    assert any("compute_minutes" in line for line in left)
    assert left == right
    daily = _summaries(embedded)
    assert len(daily) == len(METRICS) and all(daily.values())
    assert daily == _summaries(influx)
