"""``tsmeter influx init`` against the session's real influxd."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tests.influx_server import InfluxServer
from tsmeter.cli.main import cli


def test_influx_init_creates_the_database(influxd: InfluxServer, tmp_path: Path) -> None:
    """init creates a missing database, and running it again is harmless."""
    url = f"influxdb://127.0.0.1:{influxd.port}/cli_init_db?state={tmp_path / 'state.db'}"
    runner = CliRunner()
    try:
        for _ in range(2):
            result = runner.invoke(cli, ["--store", url, "influx", "init"])
            assert result.exit_code == 0, result.output
            assert "'cli_init_db' is ready" in result.output
        names = influxd.query("SHOW DATABASES")["results"][0]["series"][0]["values"]
        assert ["cli_init_db"] in names
    finally:
        influxd.drop_database("cli_init_db")


def test_influx_init_on_the_embedded_store_is_one_clear_error(tmp_path: Path) -> None:
    """On a SQLite store the command says it needs an InfluxDB store, in one line."""
    store = ["--store", str(tmp_path / "x.db"), "--create"]
    result = CliRunner().invoke(cli, [*store, "influx", "init"])
    assert result.exit_code == 1
    assert "is not an InfluxDB store" in result.output
    assert "Traceback" not in result.output


def test_influx_convert_on_the_embedded_store_is_one_clear_error(tmp_path: Path) -> None:
    """convert, too, says it needs an InfluxDB store (the embedded store converts itself)."""
    store = ["--store", str(tmp_path / "x.db"), "--create"]
    result = CliRunner().invoke(cli, [*store, "influx", "convert"])
    assert result.exit_code == 1
    assert "is not an InfluxDB store" in result.output
    assert "Traceback" not in result.output
