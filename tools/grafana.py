"""Grafana dashboards for tsmeter's InfluxDB point schema: the source of the JSON in
``dashboards/``.

Two dashboards ("Usage overview", "Subject detail"), each in two query languages: InfluxQL
(InfluxDB 1.x, 2.x through its v1 compatibility API, 3.x) and Flux (2.x). They reference the
datasources provisioned by ``grafana/provisioning/datasources/tsmeter.yaml`` by uid.

Regenerate after a change (a test fails while the committed files are stale)::

    .venv/bin/python -m tools.grafana dashboards

Nothing runs at import time; this module imports nothing else of tsmeter.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DATASOURCES", "FLUX_UID", "INFLUXQL_UID", "dashboards", "render", "write"]

INFLUXQL_UID = "tsmeter-influxql"
FLUX_UID = "tsmeter-flux"
DATASOURCES = {"influxql": INFLUXQL_UID, "flux": FLUX_UID}

ROLLUPS = ("usage_hourly", "usage_daily", "usage_weekly", "usage_monthly", "usage_yearly")
# Grafana's JSON model version these files were written for (Grafana 11 migrates older ones).
SCHEMA_VERSION = 39

Json = dict[str, Any]


# -- building blocks ------------------------------------------------------------------------
def _ds(lang: str) -> Json:
    return {"type": "influxdb", "uid": DATASOURCES[lang]}


def _target(lang: str, query: str, ref: str = "A", *, table: bool = False, alias: str = "") -> Json:
    target: Json = {"datasource": _ds(lang), "refId": ref, "query": query}
    if lang == "influxql":
        target.update(rawQuery=True, resultFormat="table" if table else "time_series")
        if alias:
            target["alias"] = alias
    return target


def _panel(
    pid: int,
    kind: str,
    title: str,
    lang: str,
    targets: list[Json],
    grid: tuple[int, int, int, int],
    description: str,
    **extra: Any,
) -> Json:
    x, y, w, h = grid
    panel: Json = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": _ds(lang),
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
    }
    panel.update(extra)
    return panel


def _query_var(
    lang: str, name: str, label: str, query: str, *, multi: bool, refresh: int = 2
) -> Json:
    var: Json = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": _ds(lang),
        "query": query,
        "definition": query,
        "refresh": refresh,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
    }
    return var


def _rollup_var() -> Json:
    options = [
        {"text": r.removeprefix("usage_"), "value": r, "selected": r == ROLLUPS[0]} for r in ROLLUPS
    ]
    return {
        "type": "custom",
        "name": "rollup",
        "label": "Summaries",
        "query": ",".join(f"{r.removeprefix('usage_')} : {r}" for r in ROLLUPS),
        "current": {"text": "hourly", "value": ROLLUPS[0]},
        "options": options,
        "multi": False,
        "includeAll": False,
    }


def _dashboard(uid: str, title: str, tags: list[str], variables: list[Json], annotations: Json,
               panels: list[Json], description: str) -> Json:  # fmt: skip
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tsmeter", *tags],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-30d", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": [_builtin_annotation(), annotations]},
        "panels": panels,
    }


def _builtin_annotation() -> Json:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def _annotation(lang: str, query: str) -> Json:
    target: Json = {"refId": "Anno", "query": query, "fromAnnotations": True,
                    "textColumn": "data", "tagsColumn": "event,metric,subject_id"}  # fmt: skip
    if lang == "influxql":
        target.update(rawQuery=True, resultFormat="table")
    return {
        "name": "Threshold events",
        "datasource": _ds(lang),
        "enable": True,
        "iconColor": "red",
        "target": target,
        # the same fields at the top level, for Grafana versions that read them there
        "query": query,
        "textColumn": "data",
        "tagsColumn": "event,metric,subject_id",
    }


THRESHOLD_COLUMNS = {
    "metric": "Metric",
    "subject_type": "Subject type",
    "subject_id": "Subject",
    "level": "Level",
    "actualValue": "Usage",
    "thresholdValue": "Threshold",
    "percentage": "% of threshold",
    "action": "Action",
    "periodStart": "Period start",
    "periodEnd": "Period end",
}


def _threshold_table_transformations() -> list[Json]:
    """Grafana unpacks the JSON in ``data`` (thresholds live in tsmeter's catalog, not in
    InfluxDB: the latest ``threshold.*`` event per subject carries usage, limit and %)."""
    return [
        {"id": "extractFields", "options": {"source": "data", "format": "json", "replace": False}},
        {
            "id": "organize",
            "options": {
                "excludeByName": dict.fromkeys(
                    ("data", "alertId", "thresholdId", "status", "Time", "_time"), True
                ),
                "indexByName": {k: i for i, k in enumerate(THRESHOLD_COLUMNS)},
                "renameByName": THRESHOLD_COLUMNS,
            },
        },
        {"id": "sortBy", "options": {"sort": [{"field": "% of threshold", "desc": True}]}},
    ]


# -- InfluxQL -------------------------------------------------------------------------------
_QL_FILTER = (
    '"metric" =~ /^$metric$/ AND "subject_type" =~ /^$subject_type$/'
    ' AND "subject_id" =~ /^$subject$/'
)
_QL_ONE = "\"subject_type\" = '$subject_type' AND \"subject_id\" = '$subject'"


def _influxql_overview() -> Json:
    f = _QL_FILTER
    variables = [
        _rollup_var(),
        _query_var("influxql", "metric", "Metric",
                   'SHOW TAG VALUES FROM "usage" WITH KEY = "metric"', multi=True),
        _query_var("influxql", "subject_type", "Subject type",
                   'SHOW TAG VALUES FROM "usage" WITH KEY = "subject_type"'
                   ' WHERE "metric" =~ /^$metric$/', multi=True),
        _query_var("influxql", "subject", "Subject",
                   'SHOW TAG VALUES FROM "usage" WITH KEY = "subject_id"'
                   ' WHERE "metric" =~ /^$metric$/ AND "subject_type" =~ /^$subject_type$/',
                   multi=True),
    ]  # fmt: skip
    events = (
        'SELECT "data", "event", "metric", "subject_id" FROM "metering_events"'
        f' WHERE $timeFilter AND "event" =~ /^threshold\\./ AND {f}'
    )
    panels = [
        _panel(1, "timeseries", "Usage per metric ($rollup summaries)", "influxql", [_target(
            "influxql",
            f'SELECT sum("sum") FROM "$rollup" WHERE $timeFilter AND {f}'
            ' GROUP BY time($__interval), "metric" fill(none)',
            alias="$tag_metric")],
            (0, 0, 12, 9),
            "Sum of the summaries' sum field per metric (for COUNT metrics the number of records)."
            " Summaries exist once aggregation has run; see the raw panel otherwise."),
        _panel(2, "timeseries", "Usage per metric (raw records)", "influxql", [_target(
            "influxql",
            f'SELECT sum("quantity") FROM "usage" WHERE $timeFilter AND {f}'
            ' GROUP BY time($__interval), "metric" fill(none)',
            alias="$tag_metric")],
            (12, 0, 12, 9),
            "Sum of recorded quantities straight from the raw points: current before aggregation"
            " has run, slower over long ranges."),
        _panel(3, "table", "Top subjects ($rollup summaries)", "influxql", [_target(
            "influxql",
            'SELECT top("total", "subject_id", 10) AS "total" FROM ('
            f'SELECT sum("sum") AS "total" FROM "$rollup" WHERE $timeFilter AND {f}'
            ' GROUP BY "metric", "subject_id") GROUP BY "metric"',
            table=True)],
            (0, 9, 12, 9),
            "The ten subjects with the largest summed usage per metric in the time range.",
            transformations=[{"id": "sortBy", "options": {"sort": [{"field": "total",
                                                                    "desc": True}]}}]),
        _panel(4, "table", "Current period: usage against thresholds", "influxql", [_target(
            "influxql",
            'SELECT last("data") AS "data" FROM "metering_events"'
            f" WHERE $timeFilter AND \"event\" =~ /^threshold\\./ AND {f}"
            ' GROUP BY "metric", "subject_type", "subject_id"',
            table=True)],
            (12, 9, 12, 9),
            "The latest threshold event per metric and subject: usage, threshold and percentage"
            " as tsmeter evaluated them (the thresholds themselves live in tsmeter's catalog).",
            transformations=_threshold_table_transformations()),
        _panel(5, "table", "Threshold events", "influxql", [_target(
            "influxql", events, table=True)],
            (0, 18, 24, 8),
            "Every threshold.* event in the range (also shown as annotations).",
            transformations=[{"id": "extractFields",
                              "options": {"source": "data", "format": "json"}}]),
    ]  # fmt: skip
    return _dashboard(
        "tsmeter-usage-overview-influxql", "tsmeter: Usage overview (InfluxQL)", ["influxql"],
        variables, _annotation("influxql", events), panels,
        "Usage per metric, top subjects and thresholds. InfluxQL: InfluxDB 1.x, 2.x (v1"
        " compatibility API) and 3.x.",
    )  # fmt: skip


def _influxql_subject() -> Json:
    one = _QL_ONE
    variables = [
        _rollup_var(),
        _query_var("influxql", "subject_type", "Subject type",
                   'SHOW TAG VALUES FROM "usage" WITH KEY = "subject_type"', multi=False),
        _query_var("influxql", "subject", "Subject",
                   'SHOW TAG VALUES FROM "usage" WITH KEY = "subject_id"'
                   " WHERE \"subject_type\" = '$subject_type'", multi=False),
    ]  # fmt: skip
    events = (
        'SELECT "data", "event", "metric", "subject_id" FROM "metering_events"'
        f" WHERE $timeFilter AND {one}"
    )
    panels = [
        _panel(1, "timeseries", "Usage per metric ($rollup summaries)", "influxql", [_target(
            "influxql",
            f'SELECT sum("sum") FROM "$rollup" WHERE $timeFilter AND {one}'
            ' GROUP BY time($__interval), "metric" fill(none)',
            alias="$tag_metric")],
            (0, 0, 12, 9), "Sum of the summaries' sum field per metric for this subject."),
        _panel(2, "timeseries", "Peak per metric ($rollup summaries)", "influxql", [_target(
            "influxql",
            f'SELECT max("max") FROM "$rollup" WHERE $timeFilter AND {one}'
            ' GROUP BY time($__interval), "metric" fill(none)',
            alias="$tag_metric")],
            (12, 0, 12, 9), "Largest single quantity per metric (MAX metrics' usage)."),
        _panel(3, "timeseries", "Raw records per metric", "influxql", [_target(
            "influxql",
            f'SELECT sum("quantity") FROM "usage" WHERE $timeFilter AND {one}'
            ' GROUP BY time($__interval), "metric" fill(none)',
            alias="$tag_metric")],
            (0, 9, 12, 9), "Recorded quantities from the raw points (before aggregation)."),
        _panel(4, "table", "Totals in range per metric", "influxql", [_target(
            "influxql",
            'SELECT sum("count") AS "records", sum("sum") AS "sum",'
            ' sum("sum") / sum("count") AS "avg", min("min") AS "min", max("max") AS "max"'
            f' FROM "$rollup" WHERE $timeFilter AND {one} GROUP BY "metric"',
            table=True)],
            (12, 9, 12, 9),
            "Count, sum, average (sum / count), min and max over the range from the summaries;"
            " the metric's own aggregation type decides which one is its usage."),
        _panel(5, "table", "Threshold events", "influxql", [_target(
            "influxql", events, table=True)],
            (0, 18, 24, 8), "Threshold events of this subject (also shown as annotations).",
            transformations=_threshold_table_transformations()),
    ]  # fmt: skip
    return _dashboard(
        "tsmeter-subject-detail-influxql", "tsmeter: Subject detail (InfluxQL)", ["influxql"],
        variables, _annotation("influxql", events), panels,
        "One subject across all metrics. InfluxQL: InfluxDB 1.x, 2.x (v1 compatibility) and 3.x.",
    )  # fmt: skip


# -- Flux -----------------------------------------------------------------------------------
_FROM = (
    "from(bucket: v.defaultBucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
)
_FLUX_FILTER = (
    "  |> filter(fn: (r) => r.metric =~ /^${metric:regex}$/"
    " and r.subject_type =~ /^${subject_type:regex}$/"
    " and r.subject_id =~ /^${subject:regex}$/)\n"
)
_FLUX_ONE = (
    '  |> filter(fn: (r) => r.subject_type == "${subject_type}" and r.subject_id == "${subject}")\n'
)


def _flux_tag_values(tag: str, predicate: str) -> str:
    return (
        'import "influxdata/influxdb/schema"\n\n'
        f'schema.tagValues(bucket: v.defaultBucket, tag: "{tag}",'
        f' predicate: (r) => r._measurement == "usage"{predicate},'
        " start: v.timeRangeStart, stop: v.timeRangeStop)"
    )


def _flux_series(measurement: str, field: str, fn: str, flt: str) -> str:
    return (
        _FROM
        + f'  |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}")\n'
        + flt
        + '  |> group(columns: ["metric"])\n'
        + f"  |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)\n"
        + '  |> rename(columns: {_value: "value"})'
    )


def _flux_events(flt: str) -> str:
    return (
        _FROM
        + '  |> filter(fn: (r) => r._measurement == "metering_events" and r._field == "data")\n'
        + "  |> filter(fn: (r) => r.event =~ /^threshold\\./)\n"
        + flt
        + "  |> group()\n"
        + '  |> rename(columns: {_value: "data"})\n'
        + '  |> keep(columns: ["_time", "data", "event", "metric", "subject_type", "subject_id"])'
    )


def _flux_latest_events(flt: str) -> str:
    return (
        _FROM
        + '  |> filter(fn: (r) => r._measurement == "metering_events" and r._field == "data")\n'
        + "  |> filter(fn: (r) => r.event =~ /^threshold\\./)\n"
        + flt
        + '  |> group(columns: ["metric", "subject_type", "subject_id"])\n'
        + "  |> last()\n"
        + "  |> group()\n"
        + '  |> rename(columns: {_value: "data"})\n'
        + '  |> keep(columns: ["data", "metric", "subject_type", "subject_id"])'
    )


def _flux_overview() -> Json:
    f = _FLUX_FILTER
    variables = [
        _rollup_var(),
        _query_var("flux", "metric", "Metric", _flux_tag_values("metric", ""), multi=True),
        _query_var("flux", "subject_type", "Subject type", _flux_tag_values(
            "subject_type", " and r.metric =~ /^${metric:regex}$/"), multi=True),
        _query_var("flux", "subject", "Subject", _flux_tag_values(
            "subject_id", " and r.metric =~ /^${metric:regex}$/"
            " and r.subject_type =~ /^${subject_type:regex}$/"), multi=True),
    ]  # fmt: skip
    top = (
        _FROM
        + '  |> filter(fn: (r) => r._measurement == "${rollup}" and r._field == "sum")\n'
        + f
        + '  |> group(columns: ["metric", "subject_type", "subject_id"])\n'
        + "  |> sum()\n"
        + '  |> group(columns: ["metric"])\n'
        + "  |> top(n: 10)\n"
        + "  |> group()\n"
        + '  |> rename(columns: {_value: "total"})\n'
        + '  |> keep(columns: ["metric", "subject_type", "subject_id", "total"])'
    )
    panels = [
        _panel(1, "timeseries", "Usage per metric (${rollup} summaries)", "flux",
               [_target("flux", _flux_series("${rollup}", "sum", "sum", f))], (0, 0, 12, 9),
               "Sum of the summaries' sum field per metric (for COUNT metrics the number of"
               " records). Summaries exist once aggregation has run; see the raw panel otherwise."),
        _panel(2, "timeseries", "Usage per metric (raw records)", "flux",
               [_target("flux", _flux_series("usage", "quantity", "sum", f))], (12, 0, 12, 9),
               "Sum of recorded quantities straight from the raw points."),
        _panel(3, "table", "Top subjects (${rollup} summaries)", "flux",
               [_target("flux", top)], (0, 9, 12, 9),
               "The ten subjects with the largest summed usage per metric in the time range.",
               transformations=[{"id": "sortBy", "options": {"sort": [{"field": "total",
                                                                       "desc": True}]}}]),
        _panel(4, "table", "Current period: usage against thresholds", "flux",
               [_target("flux", _flux_latest_events(f))], (12, 9, 12, 9),
               "The latest threshold event per metric and subject: usage, threshold and"
               " percentage as tsmeter evaluated them.",
               transformations=_threshold_table_transformations()),
        _panel(5, "table", "Threshold events", "flux", [_target("flux", _flux_events(f))],
               (0, 18, 24, 8), "Every threshold.* event in the range (also annotations).",
               transformations=[{"id": "extractFields",
                                 "options": {"source": "data", "format": "json"}}]),
    ]  # fmt: skip
    return _dashboard(
        "tsmeter-usage-overview-flux",
        "tsmeter: Usage overview (Flux)",
        ["flux"],
        variables,
        _annotation("flux", _flux_events(f)),
        panels,
        "Usage per metric, top subjects and thresholds. Flux: InfluxDB 2.x.",
    )


def _flux_subject() -> Json:
    one = _FLUX_ONE
    variables = [
        _rollup_var(),
        _query_var("flux", "subject_type", "Subject type",
                   _flux_tag_values("subject_type", ""), multi=False),
        _query_var("flux", "subject", "Subject", _flux_tag_values(
            "subject_id", ' and r.subject_type == "${subject_type}"'), multi=False),
    ]  # fmt: skip
    totals = (
        _FROM
        + '  |> filter(fn: (r) => r._measurement == "${rollup}")\n'
        + one
        + 'counts = data |> filter(fn: (r) => r._field == "count" or r._field == "sum")'
        + ' |> group(columns: ["metric", "_field"]) |> sum()\n'
        + 'highs = data |> filter(fn: (r) => r._field == "max")'
        + ' |> group(columns: ["metric", "_field"]) |> max()\n'
        + 'lows = data |> filter(fn: (r) => r._field == "min")'
        + ' |> group(columns: ["metric", "_field"]) |> min()\n\n'
        + "union(tables: [counts, highs, lows])\n"
        + '  |> keep(columns: ["metric", "_field", "_value"])\n'
        + '  |> group(columns: ["metric"])\n'
        + '  |> pivot(rowKey: ["metric"], columnKey: ["_field"], valueColumn: "_value")\n'
        + "  |> map(fn: (r) => ({r with avg: if r.count > 0 then r.sum / float(v: r.count)"
        + " else 0.0}))\n"
        + "  |> group()"
    )
    totals = "data = " + totals
    panels = [
        _panel(1, "timeseries", "Usage per metric (${rollup} summaries)", "flux",
               [_target("flux", _flux_series("${rollup}", "sum", "sum", one))], (0, 0, 12, 9),
               "Sum of the summaries' sum field per metric for this subject."),
        _panel(2, "timeseries", "Peak per metric (${rollup} summaries)", "flux",
               [_target("flux", _flux_series("${rollup}", "max", "max", one))], (12, 0, 12, 9),
               "Largest single quantity per metric (MAX metrics' usage)."),
        _panel(3, "timeseries", "Raw records per metric", "flux",
               [_target("flux", _flux_series("usage", "quantity", "sum", one))], (0, 9, 12, 9),
               "Recorded quantities from the raw points (before aggregation)."),
        _panel(4, "table", "Totals in range per metric", "flux",
               [_target("flux", totals)], (12, 9, 12, 9),
               "Count, sum, average (sum / count), min and max over the range from the summaries;"
               " the metric's own aggregation type decides which one is its usage."),
        _panel(5, "table", "Threshold events", "flux", [_target("flux", _flux_events(one))],
               (0, 18, 24, 8), "Threshold events of this subject (also shown as annotations).",
               transformations=_threshold_table_transformations()),
    ]  # fmt: skip
    return _dashboard(
        "tsmeter-subject-detail-flux",
        "tsmeter: Subject detail (Flux)",
        ["flux"],
        variables,
        _annotation("flux", _flux_events(one)),
        panels,
        "One subject across all metrics. Flux: InfluxDB 2.x.",
    )


# -- output ---------------------------------------------------------------------------------
def dashboards() -> dict[str, Json]:
    """Every dashboard by its path relative to ``dashboards/``."""
    return {
        "influxql/usage-overview.json": _influxql_overview(),
        "influxql/subject-detail.json": _influxql_subject(),
        "flux/usage-overview.json": _flux_overview(),
        "flux/subject-detail.json": _flux_subject(),
    }


def render(dashboard: Json) -> str:
    """The committed text of one dashboard (stable: sorted keys, two-space indent)."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    """Write every dashboard under ``directory``; return the paths written."""
    written = []
    for name, dashboard in dashboards().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.grafana [DIRECTORY]`` (default ``dashboards``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for path in write(Path(args[0] if args else "dashboards")):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
