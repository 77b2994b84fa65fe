"""Without ``state=``, each InfluxDB database keeps its own state file: two databases on one
server never share metric definitions, and a store an earlier version served from the single
default file keeps using it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import tsmeter
from tests.influx_server import InfluxServer
from tsmeter.bootstrap import default_state_path, default_store_path
from tsmeter.cli.main import cli


@pytest.fixture(autouse=True)
def _own_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("TSMETER_STORE_URL", "TSMETER_STATE_URL", "TSMETER_OUTBOX"):
        monkeypatch.delenv(name, raising=False)


def test_two_databases_keep_their_own_metrics(influxd: InfluxServer) -> None:
    influxd.create_database("sp_a")
    influxd.create_database("sp_b")
    try:
        base = f"influxdb://127.0.0.1:{influxd.port}"
        with tsmeter.connect(f"{base}/sp_a", mirror=False) as meter:
            meter.define_metric("api_calls", aggregation_type="COUNT")
        with tsmeter.connect(f"{base}/sp_b", mirror=False) as meter:
            assert meter.list_metrics() == []
            meter.define_metric("api_calls", aggregation_type="SUM")  # no conflict
        with tsmeter.connect(f"{base}/sp_a", mirror=False) as meter:
            assert [m.aggregation_type.value for m in meter.list_metrics()] == ["COUNT"]
        files = sorted(p.name for p in (default_store_path().parent / "state").iterdir()
                       if p.suffix == ".db")  # fmt: skip
        assert len(files) == 2
        assert all(name.startswith(f"state-127.0.0.1-{influxd.port}-sp_") for name in files)
    finally:
        influxd.drop_database("sp_a")
        influxd.drop_database("sp_b")


def test_the_demo_runs_on_a_fresh_database_after_another_has_metrics(
    influxd: InfluxServer,
) -> None:
    influxd.create_database("sp_old")
    influxd.create_database("sp_fresh")
    try:
        base = f"influxdb://127.0.0.1:{influxd.port}"
        with tsmeter.connect(f"{base}/sp_old", mirror=False) as meter:
            meter.define_metric("api_calls", aggregation_type="COUNT")
        result = CliRunner().invoke(cli, ["--store", f"{base}/sp_fresh", "demo",
                                          "--records", "2000"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "already has metrics" not in result.output
    finally:
        influxd.drop_database("sp_old")
        influxd.drop_database("sp_fresh")


def test_a_store_served_by_the_old_single_file_keeps_it(
    influx_db: tuple[InfluxServer, str],
) -> None:
    server, db = influx_db
    legacy = default_store_path()
    url = f"influxdb://127.0.0.1:{server.port}/{db}"
    with tsmeter.connect(f"{url}?state={legacy}", mirror=False) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.record("api_calls", "org", "o1", id="r-1")
    target = f"http://127.0.0.1:{server.port}/{db}"
    assert default_state_path(target) == str(legacy)
    with tsmeter.connect(url, mirror=False) as meter:  # no state=: the old file, as before
        assert [m.key for m in meter.list_metrics()] == ["api_calls"]
    other = f"http://127.0.0.1:{server.port}/{db}_other"
    assert default_state_path(other) != str(legacy)
