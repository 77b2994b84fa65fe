"""The Grafana dashboards, their provisioning and the docker-compose stack, checked without a
server: structure, staleness against the generator, Flux syntax (Flux's own parser)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import fluxcheck, grafana_macros
from tests.grafana_macros import DASHBOARDS, ROOT
from tools import grafana
from tsmeter.adapters.influxdb.lineprotocol import tag_value
from tsmeter.adapters.influxdb.schema import THRESHOLD_WINDOWS
from tsmeter.domain import AggregationType, MetricDefinition

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


def test_the_dashboards_have_what_the_issue_asks_for(dashboards: dict[str, Any]) -> None:
    """Variables summaries (every period in every zone) / subject type / subject, threshold
    annotations; per metric its usage over time, top subjects (overview) or the range total
    (subject detail), and its thresholds; Subject detail covers one subject."""
    for lang in ("influxql", "flux"):
        overview = dashboards[f"{lang}/usage-overview.json"]
        variables = grafana_macros.variables(overview)
        assert list(variables) == ["summaries", "subject_type", "subject"]
        assert grafana.SUMMARIES_PATTERN in variables["summaries"]["query"]
        pattern = re.compile(grafana.SUMMARIES_PATTERN)
        assert pattern.match("usage_daily") and pattern.match("usage_daily.Europe/Paris")
        assert not pattern.match("usage") and not pattern.match("usage_dirty")
        (events,) = [a for a in overview["annotations"]["list"] if "target" in a]
        source = "metering_events" if lang == "flux" else THRESHOLD_WINDOWS
        assert f'"{source}"' in events["target"]["query"]
        kinds = [(p["type"], p["title"].rsplit(": ", 1)[-1]) for p in overview["panels"]]
        assert len(kinds) == 3 * len(grafana.demo_metrics())
        assert ("table", "top subjects") in kinds and ("table", "against thresholds") in kinds
        detail = dashboards[f"{lang}/subject-detail.json"]
        detail_vars = grafana_macros.variables(detail)
        assert not detail_vars["subject"]["multi"] and "metric" not in detail_vars
        assert "stat" in {p["type"] for p in detail["panels"]}


# -- semantics: what each panel shows ------------------------------------------------------
A = AggregationType
# (functions, fields) a metric's panel may use, by aggregation type
EXPECTED = {
    A.COUNT: ({"sum"}, {"count"}),
    A.SUM: ({"sum"}, {"units_sum"}),
    A.AVG: ({"sum"}, {"units_sum", "count"}),
    A.MAX: ({"max"}, {"units_max"}),
    A.MIN: ({"min"}, {"units_min"}),
    A.LAST: ({"last"}, {"units_last"}),
}
CATALOG = [
    MetricDefinition(key="calls", aggregation_type=A.COUNT, unit="calls", precision=0),
    MetricDefinition(key="eur", aggregation_type=A.SUM, unit="EUR", precision=2),
    MetricDefinition(key="ms", aggregation_type=A.AVG, unit="ms", precision=3),
    MetricDefinition(key="gb", aggregation_type=A.MAX, unit="GB", precision=0),
    MetricDefinition(key="low", aggregation_type=A.MIN, unit="°C", precision=1),
    MetricDefinition(key="bal", aggregation_type=A.LAST, unit="credits", precision=12),
    MetricDefinition(key="o'k $summaries \\ [[x]]/\"", aggregation_type=A.SUM, unit="u"),
    MetricDefinition(key="eur", aggregation_type=A.MAX, unit="EUR", precision=2, org_id="o2"),
]
_QL_METRIC = re.compile(r'"metric" (?:= \'([^\']*)\'|=~ (/\^.*?\$/))')
_FLUX_METRIC = re.compile(r'r\.metric (?:== "([^"]*)"|=~ (/\^.*?\$/))')
_QL_FUNCTIONS = re.compile(r"\b(sum|max|min|last|mean|count|first|top|median)\(")
_QL_FIELDS = re.compile(r'"(count|units_\w+|sum|min|max|last|quantity|units)"')
_FLUX_FUNCTIONS = re.compile(r"(?:fn: |\|> )(sum|max|min|last|mean|count|first|median)\b")
_FLUX_FIELDS = re.compile(r'r\._field == "(\w+)"')
_SCALE = re.compile(r" / (\d+)\.0\b")


def _matches_key(found: tuple[str, str], key: str) -> bool:
    """Whether a query's metric condition selects exactly the tag InfluxDB stores for key."""
    key = tag_value(key)
    literal, regex = found
    if literal:
        return literal == key
    body = regex[2:-2]
    decoded = re.sub(r"\\x\{([0-9a-f]+)\}", lambda m: chr(int(m.group(1), 16)), body)
    return decoded == key


def _panel_metric(lang: str, query: str, metrics: list[MetricDefinition]) -> MetricDefinition:
    pattern = _QL_METRIC if lang == "influxql" else _FLUX_METRIC
    found = pattern.findall(query)
    assert len(found) == 1, f"a panel names exactly one metric: {found}"
    org = re.search(r'"org" = \'([^\']*)\'|r\.org == "([^"]*)"', query)
    org_id = (org.group(1) or org.group(2)) if org else None
    (metric,) = [
        m for m in metrics if _matches_key(found[0], m.key) and m.org_id == (org_id or None)
    ]
    return metric


def grafana_annotation_columns(annotation: dict[str, Any], columns: list[str]) -> dict[str, str]:
    """What Grafana's InfluxQL annotation parser makes of a table's columns (its order of
    tests: time, title, tags and text by substring, time end by name)."""
    tags = [t for t in annotation.get("tagsColumn", "").replace(" ", "").split(",") if t]
    roles = {}
    for column in columns:
        if column.lower() == "time":
            roles[column] = "time"
        elif column == annotation.get("titleColumn"):
            roles[column] = "title"
        elif any(t in column for t in tags):
            roles[column] = "tags"
        elif annotation.get("textColumn") and annotation["textColumn"] in column:
            roles[column] = "text"
        elif column == annotation.get("timeEndColumn"):
            roles[column] = "timeEnd"
    return roles


_QL_SELECTED = re.compile(r'^SELECT (.*?) FROM "(\w+)" WHERE (.*)$')


def check_influxql_annotation(dashboard: dict[str, Any]) -> None:
    """The InfluxQL threshold annotation is a region over each event's window: it reads the
    store's threshold_windows points (time = window start, end_ms = window end in epoch ms,
    Grafana's time end column), finds windows that started up to WINDOW_LOOKBACK before the
    range and overlap it, and keeps the dashboard's subject filter."""
    (annotation,) = [a for a in dashboard["annotations"]["list"] if "target" in a]
    target = annotation["target"]
    query = target["query"]
    assert annotation["query"] == query
    found = _QL_SELECTED.match(query)
    assert found, query
    columns = [c.strip().strip('"') for c in found.group(1).split(",")]
    assert found.group(2) == THRESHOLD_WINDOWS
    for mapping in (target, annotation):
        roles = grafana_annotation_columns(mapping, ["time", *columns])
        assert roles["end_ms"] == "timeEnd" and roles["text"] == "text", roles
        assert roles["time"] == "time" and roles["event"] == roles["metric"] == "tags", roles
    where = found.group(3)
    assert f"time >= ${{__from}}ms - {grafana.WINDOW_LOOKBACK}" in where
    assert "time < ${__to}ms" in where and '"end_ms" > ${__from}' in where
    assert "$timeFilter" not in where  # that bound would miss windows begun before the range
    assert '"subject_type" =~ /^' in where and '"subject_id" =~ /^' in where


def _reads_raw(query: str) -> bool:
    return 'FROM "usage"' in query or 'r._measurement == "usage"' in query


def check_by_dimension(panel: dict[str, Any], lang: str, metric: MetricDefinition) -> None:
    """A "by dimension" panel: the metric's raw records (field units) under its aggregation's
    function over the records, scaled to its precision, with its unit; grouped by the tag the
    variable ``dimension`` names (LAST: per subject too)."""
    assert metric.dimensions, panel["title"]
    query = panel["targets"][0]["query"]
    want = grafana.RAW_FUNCTIONS[metric.aggregation_type]
    if lang == "influxql":
        assert set(_QL_FUNCTIONS.findall(query)) == {want}, (panel["title"], query)
        assert set(_QL_FIELDS.findall(query)) - {"usage"} == {"units"}
        group = query.split("GROUP BY")[-1]
        assert '"${dimension:raw}"' in group
        per_subject = '"subject_id"' in group
    else:
        assert set(_FLUX_FUNCTIONS.findall(query)) == {want}, (panel["title"], query)
        assert set(_FLUX_FIELDS.findall(query)) == {"units"}
        assert 'r["${dimension}"]' in query
        per_subject = 'group(columns: ["dimension", "subject_type", "subject_id"])' in query
    assert per_subject == (metric.aggregation_type is A.LAST), panel["title"]
    scales = {int(x) for x in _SCALE.findall(query)}
    assert scales == (set() if scale_of(metric) == 1 else {scale_of(metric)}), panel["title"]
    unit = panel["fieldConfig"]["defaults"]["unit"]
    assert unit == (f"suffix: {metric.unit}" if metric.unit else "none"), panel["title"]


def scale_of(metric: MetricDefinition) -> int:
    return 1 if metric.aggregation_type is A.COUNT else 10**metric.precision


def check_semantics(dashboard: dict[str, Any], metrics: list[MetricDefinition]) -> int:
    """Every panel that reads summaries: one metric, its aggregation's functions and fields
    only, divided by 10**precision (not for COUNT), labelled with the metric's unit; LAST per
    subject in a time series; the InfluxQL annotation (:func:`check_influxql_annotation`);
    return how many panels were checked."""
    lang = grafana_macros.language(dashboard)
    if lang == "influxql":
        check_influxql_annotation(dashboard)
    checked = 0
    for panel in dashboard["panels"]:
        (target,) = panel["targets"]
        query = target["query"]
        reads_summaries = ('FROM "$summaries"' in query) or (
            'r._measurement == "${summaries}"' in query
        )
        metric = _panel_metric(lang, query, metrics)
        if _reads_raw(query):
            check_by_dimension(panel, lang, metric)
            continue
        if not reads_summaries:
            assert "metering_events" in query and "fieldConfig" not in panel, panel["title"]
            continue
        functions, fields = EXPECTED[metric.aggregation_type]
        if lang == "influxql":
            used_fns = set(_QL_FUNCTIONS.findall(query)) - {"top"}
            used_fields = set(_QL_FIELDS.findall(query)) - {"usage"}
        else:
            used_fns = set(_FLUX_FUNCTIONS.findall(query))
            used_fields = set(_FLUX_FIELDS.findall(query))
        assert used_fns == functions, (panel["title"], used_fns)
        assert used_fields == fields, (panel["title"], used_fields)
        scales = {int(s) for s in _SCALE.findall(query)}
        if metric.aggregation_type is A.COUNT or metric.precision == 0:
            assert not scales, panel["title"]  # a number of records, or whole units
        else:
            assert scales == {10**metric.precision}, (panel["title"], scales)
        unit = panel["fieldConfig"]["defaults"]["unit"]
        assert unit == (f"suffix: {metric.unit}" if metric.unit else "none"), panel["title"]
        if panel["type"] == "timeseries":
            per_subject = (
                '"subject_id"' in query.split("GROUP BY")[-1]
                if lang == "influxql"
                else '["subject_type", "subject_id"]' in query
            )
            assert per_subject == (metric.aggregation_type is A.LAST), panel["title"]
        checked += 1
    return checked


def test_each_panel_shows_one_metric_with_its_own_aggregation(
    dashboards: dict[str, Any],
) -> None:
    """The committed dashboards (the demo's metrics): no panel adds two metrics, a MAX metric
    is never summed, every number is scaled to its metric's precision and carries its unit."""
    for name, dashboard in dashboards.items():
        assert check_semantics(dashboard, grafana.demo_metrics()) == 2 * len(
            grafana.demo_metrics()
        ), name


def test_semantics_hold_for_every_aggregation_precision_and_hostile_key() -> None:
    generated = grafana.dashboards(CATALOG)
    for name, dashboard in generated.items():
        assert check_semantics(dashboard, CATALOG) == 2 * len(CATALOG), name
        text = json.dumps([p["targets"] for p in dashboard["panels"]])
        assert "$summaries \\\\" not in text and "[[x]]" not in text  # keys never syntax
        for panel in dashboard["panels"]:
            assert "$" not in panel["title"].replace("＄", ""), panel["title"]
    values = {"summaries": ["usage_daily"], "subject_type": ["org"], "subject": ["acme"]}
    fluxcheck.assert_valid(*[
        grafana_macros.flux(q, values, "b")
        for name, d in generated.items() if name.startswith("flux/")
        for _, q in grafana_macros.panel_queries(d)
    ])  # fmt: skip


def test_flux_annotations_are_regions_over_the_events_window(dashboards: dict[str, Any]) -> None:
    """Flux: the annotation's time and timeEnd are the event's periodStart and periodEnd
    (not the time the threshold was evaluated), and events whose window overlaps the range
    are found even when they were evaluated long after it."""
    for name in ("flux/usage-overview.json", "flux/subject-detail.json"):
        (annotation,) = [a for a in dashboards[name]["annotations"]["list"] if "target" in a]
        query = annotation["target"]["query"]
        assert "time: time(v: w.periodStart)" in query
        assert "timeEnd: time(v: w.periodEnd)" in query
        assert "r.time < v.timeRangeStop and r.timeEnd > v.timeRangeStart" in query
        assert "range(start: experimental.subDuration(" in query and "stop:" not in query
        assert annotation["mappings"]["time"] == {"source": "field", "value": "time"}
        assert annotation["mappings"]["timeEnd"] == {"source": "field", "value": "timeEnd"}


def test_influxql_annotations_are_regions_over_the_events_window(
    dashboards: dict[str, Any],
) -> None:
    """InfluxQL: the annotation's time is the window start of the threshold_windows point and
    its time end the ``end_ms`` field, mapped as Grafana's time end column (checked on a real
    influxd in tests/integration/test_dashboard_queries.py)."""
    for name in ("influxql/usage-overview.json", "influxql/subject-detail.json"):
        check_influxql_annotation(dashboards[name])
        (annotation,) = [a for a in dashboards[name]["annotations"]["list"] if "target" in a]
        assert annotation["target"]["timeEndColumn"] == annotation["timeEndColumn"] == "end_ms"


def test_flux_queries_parse_after_grafanas_substitution(dashboards: dict[str, Any]) -> None:
    """Every Flux panel, annotation and variable query, with Grafana's macros and variables
    substituted (values with regex specials among them), is accepted by Flux's parser."""
    values = {"summaries": ["usage_daily.Europe/Paris"], "subject_type": ["org", "a.b/c"],
              "subject": ["acme"]}  # fmt: skip
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


DIMENSIONED = [
    MetricDefinition(key="calls", aggregation_type=A.COUNT, unit="calls", precision=0,
                     dimensions=[{"name": "model"}, {"name": "region"}]),
    MetricDefinition(key="eur", aggregation_type=A.SUM, unit="EUR", precision=2,
                     dimensions=[{"name": "plan"}]),
    MetricDefinition(key="ms", aggregation_type=A.AVG, unit="ms", precision=3,
                     dimensions=[{"name": "model"}]),
    MetricDefinition(key="gb", aggregation_type=A.MAX, unit="GB", precision=0),
    MetricDefinition(key="bal", aggregation_type=A.LAST, unit="credits", precision=12,
                     dimensions=[{"name": "pool"}]),
    MetricDefinition(key="o'k $x [[y]]", aggregation_type=A.MIN, unit="u", precision=1,
                     dimensions=[{"name": "model"}], org_id="o2"),
    MetricDefinition(key="users", aggregation_type=A.UNIQUE_COUNT, unique_property="user_id",
                     dimensions=[{"name": "model"}]),
]  # fmt: skip


def test_usage_by_dimension_panels_and_variable() -> None:
    """Each metric with dimensions gets a "usage by dimension" panel on the overview (not the
    subject detail), after the per-metric rows; the variable ``dimension`` lists the raw
    measurement's tag keys and keeps the ``dim.<identifier>`` ones (so its value is never
    syntax); metrics without dimensions get neither, record-level metrics are left out; the
    Flux queries parse."""
    generated = grafana.dashboards(DIMENSIONED)
    charted = [m for m in DIMENSIONED if not m.record_level]
    with_dims = [m for m in charted if m.dimensions]
    keys = re.compile(grafana.DIMENSION_KEYS)
    assert keys.match("dim.model") and keys.match("dim._x9")
    for bad in ("dim.", "dim.a b", 'dim.a"', "dim.a/", "metric", "dimx.y", "dim.1a", "w"):
        assert not keys.match(bad), bad
    for name, dashboard in generated.items():
        lang = grafana_macros.language(dashboard)
        variables = grafana_macros.variables(dashboard)
        raw = [p for p in dashboard["panels"] if _reads_raw(p["targets"][0]["query"])]
        if "subject-detail" in name:
            assert not raw and "dimension" not in variables
            continue
        assert list(variables) == ["summaries", "subject_type", "subject", "dimension"]
        var = variables["dimension"]
        assert var["regex"] == f"/{grafana.DIMENSION_KEYS}/" and not var["multi"]
        assert ('SHOW TAG KEYS FROM "usage"' if lang == "influxql"
                else "schema.tagKeys(") in var["query"]  # fmt: skip
        assert [p["title"] for p in raw] == [
            f"{grafana._label(m)}: usage by dimension" for m in with_dims
        ]
        assert min(p["id"] for p in raw) == 3 * len(charted) + 1
        assert all(p["gridPos"]["y"] >= 9 * len(charted) for p in raw)
        assert check_semantics(dashboard, charted) == 2 * len(charted)
        for panel in raw:
            assert "$" not in panel["title"].replace("＄", ""), panel["title"]
            declared = panel["description"]
            metric = _panel_metric(lang, panel["targets"][0]["query"], charted)
            assert all(f"dim.{n}" in declared for n in metric.dimension_names)
    plain = grafana.dashboards(CATALOG)
    assert all("dimension" not in grafana_macros.variables(d) for d in plain.values())
    with pytest.raises(ValueError, match="UNIQUE_COUNT"):
        grafana.dashboards(DIMENSIONED[-1:])
    values = {"summaries": ["usage_daily"], "subject_type": ["org"], "subject": ["acme"],
              "dimension": ["dim.model"]}  # fmt: skip
    fluxcheck.assert_valid(*[
        grafana_macros.flux(q, values, "b")
        for name, d in generated.items() if name.startswith("flux/")
        for q in [*(q for _, q in grafana_macros.panel_queries(d)),
                  *(v["query"] for v in grafana_macros.variables(d).values())]
    ])  # fmt: skip
