"""Every dashboard query, as Grafana would send it, answered with rows by a real InfluxDB
loaded with the demo's month (records, hourly to yearly summaries, threshold events).

InfluxQL runs against the session's influxd 1.x; Flux against InfluxDB 2.x where one is
available (skips with the reason otherwise)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from tests import grafana_macros
from tests.influx2_server import Influx2Server
from tests.influx_server import InfluxServer
from tools import grafana
from tsmeter.cli.main import cli

DEMO = ["demo", "--records", "3000", "--month", "2026-03"]
DASHBOARDS = grafana_macros.load()


def load_demo(store_url: str) -> None:
    result = CliRunner().invoke(cli, ["--store", store_url, *DEMO])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def demo_db(
    influxd: InfluxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InfluxServer, str]]:
    """One database with the demo loaded, shared by this module's read-only tests."""
    name = f"grafana{os.getpid()}"
    tmp = tmp_path_factory.mktemp("grafana")
    influxd.create_database(name)
    try:
        load_demo(f"influxdb://127.0.0.1:{influxd.port}/{name}?writer=t&state={tmp / 's.db'}")
        yield influxd, name
    finally:
        influxd.drop_database(name)


def influxql_rows(server: InfluxServer, db: str, query: str) -> list[list[Any]]:
    answer = server.query(query, db=db)
    rows: list[list[Any]] = []
    for result in answer["results"]:
        for series in result.get("series", []):
            rows += series["values"]
    return rows


def names(kind: str) -> list[str]:
    return [n for n, d in DASHBOARDS.items() if grafana_macros.language(d) == kind]


@pytest.mark.parametrize("name", names("influxql"))
@pytest.mark.parametrize("rollup", grafana.ROLLUPS)
def test_influxql_queries_return_rows(
    demo_db: tuple[InfluxServer, str], name: str, rollup: str
) -> None:
    """Variables resolve as Grafana resolves them on load (All for multi-value ones, the first
    value otherwise); then every panel and annotation query returns rows, for every summary."""
    server, db = demo_db
    dashboard = DASHBOARDS[name]
    multi = grafana_macros.multi_flags(dashboard)

    def run_variable(query: str, values: grafana_macros.Values) -> list[str]:
        rows = influxql_rows(server, db, grafana_macros.influxql(query, values, multi))
        return sorted({str(row[-1]) for row in rows})

    values = grafana_macros.resolve(dashboard, run_variable)
    values["rollup"] = [rollup]
    assert values.get("subject_type") == ["org"]
    for where, query in grafana_macros.panel_queries(dashboard):
        sent = grafana_macros.influxql(query, values, multi)
        assert influxql_rows(server, db, sent), f"{name} {where}: no rows for\n{sent}"


def test_influxql_variables_narrow_the_data(demo_db: tuple[InfluxServer, str]) -> None:
    """One metric and one subject chosen: the overview's raw panel shows that metric only."""
    server, db = demo_db
    dashboard = DASHBOARDS["influxql/usage-overview.json"]
    multi = grafana_macros.multi_flags(dashboard)
    values = {"rollup": ["usage_daily"], "metric": ["api_calls"], "subject_type": ["org"],
              "subject": ["acme"]}  # fmt: skip
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Usage per metric (raw records)"]
    sent = grafana_macros.influxql(panel["targets"][0]["query"], values, multi)
    answer = server.query(sent, db=db)
    series = answer["results"][0]["series"]
    assert [s["tags"]["metric"] for s in series] == ["api_calls"]
    everything = sum(r[1] for r in influxql_rows(server, db, sent) if r[1] is not None)
    direct = influxql_rows(
        server, db,
        "SELECT count(\"quantity\") FROM \"usage\" WHERE \"metric\" = 'api_calls'"
        " AND \"subject_id\" = 'acme'",
    )  # fmt: skip
    assert everything == direct[0][1]


@pytest.fixture(scope="module")
def demo_bucket(influxdb2: Influx2Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[Influx2Server, str]
]:  # fmt: skip
    name = f"grafana{os.getpid()}"
    tmp = tmp_path_factory.mktemp("grafana2")
    influxdb2.create_bucket(name)
    try:
        load_demo(influxdb2.store_url(name, writer="t", state=str(tmp / "s.db")))
        yield influxdb2, name
    finally:
        influxdb2.drop_bucket(name)


@pytest.mark.parametrize("name", names("flux"))
def test_flux_queries_return_rows(demo_bucket: tuple[Influx2Server, str], name: str) -> None:
    """Against InfluxDB 2.x: every Flux variable, panel and annotation query returns rows."""
    server, bucket = demo_bucket
    dashboard = DASHBOARDS[name]
    with server.client() as client:
        api = client.query_api()

        def records(query: str) -> list[Any]:
            return [r for table in api.query(query) for r in table.records]

        def run_variable(query: str, values: grafana_macros.Values) -> list[str]:
            found = records(grafana_macros.flux(query, values, bucket))
            return sorted({str(r.get_value()) for r in found})

        values = grafana_macros.resolve(dashboard, run_variable)
        for where, query in grafana_macros.panel_queries(dashboard):
            sent = grafana_macros.flux(query, values, bucket)
            assert records(sent), f"{name} {where}: no rows for\n{sent}"
