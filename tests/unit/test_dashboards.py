"""The Grafana dashboards, their provisioning and the docker-compose stack, checked without a
server: structure, staleness against the generator, Flux syntax (Flux's own parser)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import fluxcheck, grafana_macros
from tests.grafana_macros import DASHBOARDS, ROOT
from tools import grafana

DASHBOARD_UIDS = {
    "influxql/usage-overview.json": "tsmeter-usage-overview-influxql",
    "influxql/subject-detail.json": "tsmeter-subject-detail-influxql",
    "flux/usage-overview.json": "tsmeter-usage-overview-flux",
    "flux/subject-detail.json": "tsmeter-subject-detail-flux",
}
BUILTIN_UIDS = {"-- Grafana --"}
EXACT_TAG = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+$")
COMPOSE = ROOT / "docker-compose.yml"


def yaml_file(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    doc = yaml_file(ROOT / "grafana/provisioning/datasources/tsmeter.yaml")
    assert doc["apiVersion"] == 1
    return {ds["uid"]: ds for ds in doc["datasources"]}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return grafana_macros.load()


def datasource_uids(node: Any) -> set[str]:
    """Every ``datasource.uid`` anywhere in a JSON tree."""
    found: set[str] = set()
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            found.add(ds["uid"])
        for value in node.values():
            found |= datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            found |= datasource_uids(value)
    return found


# -- dashboards -----------------------------------------------------------------------------
def test_committed_dashboards_are_the_generators_output(dashboards: dict[str, Any]) -> None:
    """The generator is the source of truth: regenerate with `python -m tools.grafana
    dashboards` when this fails. No stray JSON either."""
    expected = grafana.dashboards()
    assert set(dashboards) == set(expected)
    for name, dashboard in expected.items():
        text = (DASHBOARDS / name).read_text(encoding="utf-8")
        assert text == grafana.render(dashboard), f"{name} is stale: run python -m tools.grafana"


def test_dashboards_have_stable_uids_and_titles(dashboards: dict[str, Any]) -> None:
    assert {name: d["uid"] for name, d in dashboards.items()} == DASHBOARD_UIDS
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(titles)) == len(titles)
    for name, d in dashboards.items():
        assert grafana_macros.language(d) == name.split("/")[0]
        assert len(d["uid"]) <= 40 and re.fullmatch(r"[a-z0-9-]+", d["uid"])


def test_panel_ids_are_unique_and_every_panel_has_a_query(dashboards: dict[str, Any]) -> None:
    for name, d in dashboards.items():
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in d["panels"]:
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                assert target["query"].strip(), f"{name}: panel {panel['title']!r} empty query"
                assert target["datasource"]["uid"] == panel["datasource"]["uid"]


def test_dashboards_reference_only_provisioned_datasources(dashboards: dict[str, Any]) -> None:
    provisioned = set(provisioned_datasources())
    assert provisioned == {grafana.INFLUXQL_UID, grafana.FLUX_UID}
    for name, d in dashboards.items():
        used = datasource_uids(d) - BUILTIN_UIDS
        lang = grafana_macros.language(d)
        assert used == {grafana.DATASOURCES[lang]}, name


def test_the_overview_has_what_the_issue_asks_for(dashboards: dict[str, Any]) -> None:
    """Variables metric / subject type / subject, threshold-event annotations, summaries and raw
    usage, top subjects, the usage-against-thresholds table; Subject detail covers one subject."""
    for lang in ("influxql", "flux"):
        overview = dashboards[f"{lang}/usage-overview.json"]
        assert {"metric", "subject_type", "subject", "rollup"} <= set(
            grafana_macros.variables(overview)
        )
        (events,) = [a for a in overview["annotations"]["list"] if "target" in a]
        assert "metering_events" in events["target"]["query"]
        queries = " ".join(q for _, q in grafana_macros.panel_queries(overview))
        for needle in ('"usage"', "rollup", "metering_events", "top("):
            assert needle in queries, (lang, needle)
        titles = [p["title"] for p in overview["panels"]]
        assert "Current period: usage against thresholds" in titles
        detail = dashboards[f"{lang}/subject-detail.json"]
        detail_vars = grafana_macros.variables(detail)
        assert not detail_vars["subject"]["multi"] and "metric" not in detail_vars


def test_flux_queries_parse_after_grafanas_substitution(dashboards: dict[str, Any]) -> None:
    """Every Flux panel, annotation and variable query, with Grafana's macros and variables
    substituted (values with regex specials among them), is accepted by Flux's parser."""
    values = {"rollup": ["usage_daily"], "metric": ["api_calls", "a.b/c"],
              "subject_type": ["org"], "subject": ["acme"]}  # fmt: skip
    sources = []
    for name, d in dashboards.items():
        if grafana_macros.language(d) != "flux":
            continue
        queries = [q for _, q in grafana_macros.panel_queries(d)]
        queries += [
            v["query"] for v in grafana_macros.variables(d).values() if v["type"] == "query"
        ]
        for query in queries:
            assert "v.timeRangeStart" in query and "v.timeRangeStop" in query, name
            sources.append(grafana_macros.flux(query, values, "metering"))
    assert len(sources) > 10
    fluxcheck.assert_valid(*sources)


def test_grafana_regex_escaping_matches_grafana() -> None:
    assert grafana_macros.as_regex(["a.b/c", "x"]) == r"(a\.b\/c|x)"
    assert grafana_macros.as_regex(["only"]) == "only"


# -- provisioning and compose ---------------------------------------------------------------
def test_datasource_provisioning() -> None:
    ds = provisioned_datasources()
    influxql, flux = ds[grafana.INFLUXQL_UID], ds[grafana.FLUX_UID]
    assert influxql["type"] == flux["type"] == "influxdb"
    assert influxql["jsonData"]["httpHeaderName1"] == "Authorization"
    assert influxql["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUXDB_ADMIN_TOKEN}"
    assert influxql["jsonData"]["dbName"] == "${INFLUXDB_BUCKET}"
    assert flux["jsonData"]["version"] == "Flux"
    assert flux["jsonData"]["defaultBucket"] == "${INFLUXDB_BUCKET}"
    assert flux["secureJsonData"]["token"] == "${INFLUXDB_ADMIN_TOKEN}"


def test_compose_file_pins_images_binds_localhost_and_mounts_existing_paths() -> None:
    compose = yaml_file(COMPOSE)
    services = compose["services"]
    assert set(services) == {"influxdb", "grafana", "tsmeter"}
    assert re.fullmatch(r"influxdb:2\.7\.\d+", services["influxdb"]["image"])
    assert re.fullmatch(r"grafana/grafana:1[1-9]\.\d+\.\d+", services["grafana"]["image"])
    assert services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert services["tsmeter"]["command"] == ["tsmeter", "scheduler", "run"]
    named = set(compose["volumes"])
    for name, service in services.items():
        image = service["image"]
        if "build" not in service:
            assert EXACT_TAG.match(image) and "latest" not in image, (name, image)
        assert "healthcheck" in service, name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in named, (name, source)
    dockerfile = (ROOT / services["tsmeter"]["build"] / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and ".[influxdb,scheduler]" in dockerfile


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    provider = yaml_file(ROOT / "grafana/provisioning/dashboards/tsmeter.yaml")["providers"][0]
    grafana_volumes = yaml_file(COMPOSE)["services"]["grafana"]["volumes"]
    assert f"./dashboards:{provider['options']['path']}:ro" in grafana_volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana_volumes


def test_no_secrets_in_compose_and_env_example_covers_every_variable() -> None:
    """Secrets come from .env (${VAR}); .env.example names every variable compose and the
    provisioning files use, with placeholder values only."""
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    used |= set(re.findall(r"\$\{(\w+)", (ROOT / "grafana/provisioning").joinpath(
        "datasources/tsmeter.yaml").read_text()))  # fmt: skip
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert used <= set(example), used - set(example)
    for key, value in example.items():
        if any(word in key for word in ("PASSWORD", "TOKEN")):
            assert value.startswith("change-me"), key
            assert f"{key}:" not in text or f"${{{key}" in text
    for line in text.splitlines():
        if re.search(r"(PASSWORD|TOKEN)\w*:", line):
            assert "${" in line, line
