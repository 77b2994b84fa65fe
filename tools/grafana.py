"""Grafana dashboards for tsmeter's InfluxDB point schema, generated from a metric catalog: the
source of the JSON in ``dashboards/``.

Two dashboards ("Usage overview", "Subject detail"), each in two query languages: InfluxQL
(InfluxDB 1.x, 2.x through its v1 compatibility API, 3.x) and Flux (2.x). They reference the
datasources provisioned by ``grafana/provisioning/datasources/tsmeter.yaml`` by uid.

What a panel means (the rules the tests check):

- one metric per panel, never two metrics on one axis: each metric has its own panels, with
  its unit on the axis;
- each metric with its own aggregation over its summaries' integer components
  (``count``, ``units_sum``, ``units_min``, ``units_max``, ``units_last``):
  COUNT ``sum(count)``; SUM ``sum(units_sum)``; AVG ``sum(units_sum) / sum(count)`` (the mean of
  the records, never a mean of means); MAX ``max(units_max)``; MIN ``min(units_min)``; LAST
  ``last(units_last)`` per subject. Units are divided by ``10 ** precision`` of the metric;
- the summaries variable lists the summary measurements found, each period in each zone
  (``usage_daily``, ``usage_daily.Europe/Paris``), so a meter's own zone is selectable;
- a metric that declares dimensions also gets a panel "by dimension": its usage over time
  from the raw records (measurement ``usage``), one series per value of the dimension chosen
  in the variable ``dimension`` (the ``dim.<name>`` tag keys of the raw measurement; records
  without a value are the series with an empty value). Raw records are read for this, since
  summaries are per subject only: COUNT ``count(units)``, SUM ``sum(units)``, AVG
  ``mean(units)`` (of the records themselves), MAX ``max(units)``, MIN ``min(units)``,
  LAST ``last(units)`` per subject and value; scaled as above. Metrics of the record-level types
  (UNIQUE_COUNT, TIME_WEIGHTED_SUM: nothing in the summaries) are left out;
- threshold annotations are regions over the window the event is about (``periodStart`` ..
  ``periodEnd`` of its data), windows that started up to 367 days before the time range
  included. Flux reads the event's JSON; InfluxQL cannot, so it reads the points the store
  writes for each threshold event to ``threshold_windows`` (time = window start, ``end_ms``
  = window end, ``text``; see docs/stores.md).

Regenerate after a change (a test fails while the committed files are stale)::

    .venv/bin/python -m tools.grafana dashboards
    tsmeter --format json metric list --all-orgs > metrics.json
    .venv/bin/python -m tools.grafana out/ --metrics metrics.json   # for your own catalog

The committed files are generated for the demo's metrics (``tsmeter demo``).
Nothing runs at import time.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tsmeter.adapters.influxdb.lineprotocol import tag_value
from tsmeter.adapters.influxdb.schema import RAW, THRESHOLD_WINDOWS
from tsmeter.domain import AggregationType, MetricDefinition

__all__ = [
    "DATASOURCES",
    "DIMENSION_KEYS",
    "FIELDS",
    "FLUX_UID",
    "INFLUXQL_UID",
    "PERIODS",
    "dashboards",
    "demo_metrics",
    "render",
    "write",
]

INFLUXQL_UID = "tsmeter-influxql"
FLUX_UID = "tsmeter-flux"
DATASOURCES = {"influxql": INFLUXQL_UID, "flux": FLUX_UID}

PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")
# every summary measurement: usage_<period> (UTC) or usage_<period>.<zone>
SUMMARIES_PATTERN = r"^usage_(hourly|daily|weekly|monthly|yearly)(\..+)?$"
# Grafana's JSON model version these files were written for (Grafana 11 migrates older ones).
SCHEMA_VERSION = 39
# the field each aggregation type reads, and how its values combine (InfluxQL / Flux function)
FIELDS: dict[AggregationType, tuple[str, str]] = {
    AggregationType.COUNT: ("count", "sum"),
    AggregationType.SUM: ("units_sum", "sum"),
    AggregationType.AVG: ("units_sum", "sum"),  # divided by sum(count)
    AggregationType.MAX: ("units_max", "max"),
    AggregationType.MIN: ("units_min", "min"),
    AggregationType.LAST: ("units_last", "last"),
}
MEANING = {
    AggregationType.COUNT: "number of records",
    AggregationType.SUM: "sum of the records",
    AggregationType.AVG: "mean of the records (sum / count)",
    AggregationType.MAX: "largest record",
    AggregationType.MIN: "smallest record",
    AggregationType.LAST: "latest record, per subject",
}
# the tag keys the variable ``dimension`` offers: a dimension's tag on raw points (its name is
# an identifier, so the key can stand in a quoted identifier or a Flux string as it is)
DIMENSION_KEYS = r"^dim\.[A-Za-z_][A-Za-z0-9_]{0,63}$"
# how the raw records of a metric combine in the "by dimension" panel (field ``units``)
RAW_FUNCTIONS: dict[AggregationType, str] = {
    AggregationType.COUNT: "count",
    AggregationType.SUM: "sum",
    AggregationType.AVG: "mean",  # of the records themselves: sum(units) / count(units)
    AggregationType.MAX: "max",
    AggregationType.MIN: "min",
    AggregationType.LAST: "last",
}
# an annotation window that starts this long before the time range is still found (a yearly
# window is at most 366 days); lifetime windows that began earlier are not
WINDOW_LOOKBACK = "367d"

Json = dict[str, Any]


def demo_metrics() -> list[MetricDefinition]:
    """The metrics ``tsmeter demo`` defines (the committed dashboards are made for them)."""
    from tsmeter.cli.demo_data import METRICS

    return [
        MetricDefinition(key=m.key, name=m.name, unit=m.unit, aggregation_type=m.aggregation,
                         reset_period=m.reset)
        for m in METRICS
    ]  # fmt: skip


# -- quoting: metric keys are data, whatever characters they hold ------------------------------
_PLAIN = re.compile(r"[A-Za-z0-9_.:-]+")


def _hex_regex(value: str) -> str:
    """An RE2 pattern matching exactly ``value``: word characters as themselves, everything
    else as ``\\x{..}`` (so no quote, slash, ``$`` or ``[[`` reaches InfluxDB or Grafana's
    variable interpolation as syntax)."""
    body = "".join(c if c.isascii() and (c.isalnum() or c == "_") else f"\\x{{{ord(c):x}}}"
                   for c in value)  # fmt: skip
    return f"/^{body}$/"


def _ql_tag_is(tag: str, value: str) -> str:
    stored = tag_value(value)
    if _PLAIN.fullmatch(stored):
        return f"\"{tag}\" = '{stored}'"
    return f'"{tag}" =~ {_hex_regex(stored)}'


def _flux_tag_is(tag: str, value: str) -> str:
    stored = tag_value(value)
    if _PLAIN.fullmatch(stored):
        return f'r.{tag} == "{stored}"'
    return f"r.{tag} =~ {_hex_regex(stored)}"


def _ql_metric(metric: MetricDefinition) -> str:
    org = _ql_tag_is("org", metric.org_id) if metric.org_id else "\"org\" = ''"
    return f"{_ql_tag_is('metric', metric.key)} AND {org}"


def _flux_metric(metric: MetricDefinition) -> str:
    org = (_flux_tag_is("org", metric.org_id) if metric.org_id
           else '(not exists r.org or r.org == "")')  # fmt: skip
    return f"{_flux_tag_is('metric', metric.key)} and {org}"


def _text(value: str) -> str:
    """Text for a title: Grafana interpolates ``$name`` there, so ``$`` becomes ``＄``."""
    return value.replace("$", "\uff04").replace("[[", "[\u200b[")


def _label(metric: MetricDefinition) -> str:
    name = metric.name or metric.key
    unit = f" ({metric.unit})" if metric.unit else ""
    org = f" [{metric.org_id}]" if metric.org_id else ""
    return _text(f"{name}{unit}{org}")


def _unit(metric: MetricDefinition) -> str:
    return f"suffix: {metric.unit}" if metric.unit else "none"


def scale(metric: MetricDefinition) -> int:
    """What a summary's units are divided by: 1 for COUNT (records), else 10 ** precision."""
    return 1 if metric.aggregation_type is AggregationType.COUNT else 10**metric.precision


def _ql_scaled(expr: str, metric: MetricDefinition) -> str:
    s = scale(metric)
    # a float literal: InfluxQL types int / int as an integer inside a subquery (truncated)
    return expr if s == 1 else f"{expr} / {s}.0"


def _flux_scaled(expr: str, metric: MetricDefinition) -> str:
    s = scale(metric)
    return f"float(v: {expr})" if s == 1 else f"float(v: {expr}) / {s}.0"


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


def _panel(pid: int, kind: str, title: str, lang: str, query: str, grid: tuple[int, int, int, int],
           description: str, *, metric: MetricDefinition | None = None, table: bool = False,
           alias: str = "", **extra: Any) -> Json:  # fmt: skip
    x, y, w, h = grid
    panel: Json = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": _ds(lang),
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [_target(lang, query, table=table, alias=alias)],
    }
    if metric is not None:
        panel["fieldConfig"] = {"defaults": {"unit": _unit(metric)}, "overrides": []}
    panel.update(extra)
    return panel


def _query_var(
    lang: str, name: str, label: str, query: str, *, multi: bool, refresh: int = 2
) -> Json:
    return {
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


def _threshold_columns(metric: MetricDefinition) -> dict[str, str]:
    unit = f" ({_text(metric.unit)})" if metric.unit else ""
    return {
        "subject_type": "Subject type",
        "subject_id": "Subject",
        "level": "Level",
        "actualValue": f"Usage{unit}",
        "thresholdValue": f"Threshold{unit}",
        "percentage": "% of threshold",
        "action": "Action",
        "periodStart": "Period start",
        "periodEnd": "Period end",
    }


def _threshold_table_transformations(metric: MetricDefinition) -> list[Json]:
    """Grafana unpacks the JSON in ``data`` (thresholds live in tsmeter's catalog, not in
    InfluxDB: the latest ``threshold.*`` event per subject carries usage, limit and %)."""
    columns = _threshold_columns(metric)
    return [
        {"id": "extractFields", "options": {"source": "data", "format": "json", "replace": False}},
        {
            "id": "organize",
            "options": {
                "excludeByName": dict.fromkeys(
                    ("data", "alertId", "thresholdId", "status", "metric", "Time", "_time"), True
                ),
                "indexByName": {k: i for i, k in enumerate(columns)},
                "renameByName": columns,
            },
        },
        {"id": "sortBy", "options": {"sort": [{"field": "% of threshold", "desc": True}]}},
    ]


def _top_transformations() -> list[Json]:
    return [{"id": "sortBy", "options": {"sort": [{"field": "usage", "desc": True}]}}]


# -- InfluxQL -------------------------------------------------------------------------------
_QL_SUBJECTS = '"subject_type" =~ /^$subject_type$/ AND "subject_id" =~ /^$subject$/'
_QL_ONE = '"subject_type" =~ /^${subject_type:regex}$/ AND "subject_id" =~ /^${subject:regex}$/'


def _ql_value(metric: MetricDefinition) -> str:
    """The metric's usage over the summaries a query selects, in the metric's own units."""
    agg = metric.aggregation_type
    field, fn = FIELDS[agg]
    if agg is AggregationType.AVG:
        total = _ql_scaled('sum("units_sum")', metric)
        return f'{total} / sum("count")'
    return _ql_scaled(f'{fn}("{field}")', metric)


def _ql_series(metric: MetricDefinition, subjects: str) -> tuple[str, str]:
    """(query, alias) of the metric's usage over time; LAST metrics one series per subject."""
    per_subject = metric.aggregation_type is AggregationType.LAST
    group = ', "subject_type", "subject_id"' if per_subject else ""
    query = (
        f'SELECT {_ql_value(metric)} AS "usage" FROM "$summaries"'
        f" WHERE $timeFilter AND {_ql_metric(metric)} AND {subjects}"
        f" GROUP BY time($__interval){group} fill(none)"
    )
    return query, "$tag_subject_type/$tag_subject_id" if per_subject else "usage"


def _ql_top(metric: MetricDefinition) -> str:
    return (
        'SELECT top("usage", "subject_type", "subject_id", 10) AS "usage" FROM ('
        f'SELECT {_ql_value(metric)} AS "usage" FROM "$summaries"'
        f" WHERE $timeFilter AND {_ql_metric(metric)} AND {_QL_SUBJECTS}"
        ' GROUP BY "subject_type", "subject_id")'
    )


def _ql_total(metric: MetricDefinition) -> str:
    return (
        f'SELECT {_ql_value(metric)} AS "usage" FROM "$summaries"'
        f" WHERE $timeFilter AND {_ql_metric(metric)} AND {_QL_ONE}"
    )


def _ql_thresholds(metric: MetricDefinition, subjects: str) -> str:
    return (
        'SELECT last("data") AS "data" FROM "metering_events"'
        f' WHERE $timeFilter AND "event" =~ /^threshold\\./ AND {_ql_metric(metric)}'
        f' AND {subjects} GROUP BY "subject_type", "subject_id"'
    )


def _ql_annotation(subjects: str) -> Json:
    """Threshold events as regions over the window each one is about, from the points the
    store writes for them to ``threshold_windows``: time = the window's start, ``end_ms`` its
    end (epoch ms). Windows that started up to WINDOW_LOOKBACK before the time range and
    overlap it are found (InfluxQL takes ``<epoch>ms - 367d``)."""
    query = (
        f'SELECT "end_ms", "text", "event", "metric", "subject_id" FROM "{THRESHOLD_WINDOWS}"'
        f" WHERE time >= ${{__from}}ms - {WINDOW_LOOKBACK} AND time < ${{__to}}ms"
        f' AND "end_ms" > ${{__from}} AND {subjects}'
    )
    columns = {"textColumn": "text", "tagsColumn": "event,metric,subject_id",
               "timeEndColumn": "end_ms"}  # fmt: skip
    target: Json = {"refId": "Anno", "query": query, "fromAnnotations": True, "rawQuery": True,
                    "resultFormat": "table", **columns}  # fmt: skip
    return {
        "name": "Threshold events (over their window)",
        "datasource": _ds("influxql"),
        "enable": True,
        "iconColor": "red",
        "target": target,
        # the same fields at the top level, for Grafana versions that read them there
        "query": query,
        **columns,
    }


def _ql_raw_value(metric: MetricDefinition) -> str:
    """The metric's usage over the raw records a query selects, in the metric's own units."""
    return _ql_scaled(f'{RAW_FUNCTIONS[metric.aggregation_type]}("units")', metric)


def _ql_by_dimension(metric: MetricDefinition, subjects: str) -> str:
    """The metric's usage over time from its raw records, one series per value of the chosen
    dimension tag (LAST: per subject and value)."""
    per_subject = ', "subject_type", "subject_id"' if metric.aggregation_type is (
        AggregationType.LAST) else ""  # fmt: skip
    return (
        f'SELECT {_ql_raw_value(metric)} AS "usage" FROM "{RAW}"'
        f" WHERE $timeFilter AND {_ql_metric(metric)} AND {subjects}"
        f' GROUP BY time($__interval), "${{dimension:raw}}"{per_subject} fill(none)'
    )


def _dimension_var(lang: str) -> Json:
    """The variable ``dimension``: the ``dim.<name>`` tag keys of the raw measurement."""
    if lang == "influxql":
        query = f'SHOW TAG KEYS FROM "{RAW}"'
    else:
        query = (
            'import "influxdata/influxdb/schema"\n\n'
            f'schema.tagKeys(bucket: v.defaultBucket, predicate: (r) => r._measurement == "{RAW}",'
            " start: v.timeRangeStart, stop: v.timeRangeStop)\n"
            f"  |> filter(fn: (r) => r._value =~ /{DIMENSION_KEYS}/)"
        )
    var = _query_var(lang, "dimension", "Dimension", query, multi=False)
    var["regex"] = f"/{DIMENSION_KEYS}/"
    return var


def _ql_variables(*, one: bool) -> list[Json]:
    summaries = _query_var(
        "influxql", "summaries", "Summaries (period.zone)",
        f"SHOW MEASUREMENTS WITH MEASUREMENT =~ /{SUMMARIES_PATTERN}/", multi=False,
    )  # fmt: skip
    where = " WHERE \"subject_type\" =~ /^${subject_type:regex}$/" if one else (
        ' WHERE "subject_type" =~ /^$subject_type$/')  # fmt: skip
    return [
        summaries,
        _query_var("influxql", "subject_type", "Subject type",
                   'SHOW TAG VALUES FROM "$summaries" WITH KEY = "subject_type"', multi=not one),
        _query_var("influxql", "subject", "Subject",
                   f'SHOW TAG VALUES FROM "$summaries" WITH KEY = "subject_id"{where}',
                   multi=not one),
    ]  # fmt: skip


# -- Flux -----------------------------------------------------------------------------------
_FROM = (
    "from(bucket: v.defaultBucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
)
_FLUX_SUBJECTS = (
    "r.subject_type =~ /^${subject_type:regex}$/ and r.subject_id =~ /^${subject:regex}$/"
)


def _flux_summaries(metric: MetricDefinition, subjects: str, fields: Sequence[str]) -> str:
    wanted = " or ".join(f'r._field == "{f}"' for f in fields)
    return (
        _FROM
        + f'  |> filter(fn: (r) => r._measurement == "${{summaries}}" and ({wanted}))\n'
        + f"  |> filter(fn: (r) => {_flux_metric(metric)})\n"
        + f"  |> filter(fn: (r) => {subjects})\n"
    )


def _flux_series(metric: MetricDefinition, subjects: str) -> str:
    agg = metric.aggregation_type
    field, fn = FIELDS[agg]
    window = 'every: v.windowPeriod, createEmpty: false, timeSrc: "_start"'
    if agg is AggregationType.AVG:
        return (
            _flux_summaries(metric, subjects, ("units_sum", "count"))
            + '  |> group(columns: ["_field"])\n'
            + f"  |> aggregateWindow({window}, fn: sum)\n"
            + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
            + "  |> map(fn: (r) => ({_time: r._time, usage: "
            + _flux_scaled("r.units_sum", metric)
            + " / float(v: r.count)}))"
        )
    group = '["subject_type", "subject_id"]' if agg is AggregationType.LAST else "[]"
    return (
        _flux_summaries(metric, subjects, (field,))
        + f"  |> group(columns: {group})\n"
        + '  |> sort(columns: ["_time"])\n'
        + f"  |> aggregateWindow({window}, fn: {fn})\n"
        + f"  |> map(fn: (r) => ({{r with _value: {_flux_scaled('r._value', metric)}}}))\n"
        + '  |> rename(columns: {_value: "usage"})\n'
        + '  |> keep(columns: ["_time", "usage", "subject_type", "subject_id"])'
    )


def _flux_per_subject(metric: MetricDefinition, subjects: str) -> str:
    """One row per subject: its usage over the time range (columns subject_type, subject_id,
    usage)."""
    agg = metric.aggregation_type
    field, fn = FIELDS[agg]
    by = '["subject_type", "subject_id"]'
    if agg is AggregationType.AVG:
        return (
            _flux_summaries(metric, subjects, ("units_sum", "count"))
            + '  |> group(columns: ["subject_type", "subject_id", "_field"])\n'
            + "  |> sum()\n"
            + f'  |> pivot(rowKey: {by}, columnKey: ["_field"], valueColumn: "_value")\n'
            + "  |> group()\n"
            + "  |> map(fn: (r) => ({subject_type: r.subject_type, subject_id: r.subject_id,"
            + f" usage: {_flux_scaled('r.units_sum', metric)} / float(v: r.count)}}))\n"
        )
    return (
        _flux_summaries(metric, subjects, (field,))
        + f"  |> group(columns: {by})\n"
        + '  |> sort(columns: ["_time"])\n'
        + f"  |> {fn}()\n"
        + "  |> group()\n"
        + "  |> map(fn: (r) => ({subject_type: r.subject_type, subject_id: r.subject_id,"
        + f" usage: {_flux_scaled('r._value', metric)}}}))\n"
    )


def _flux_by_dimension(metric: MetricDefinition, subjects: str) -> str:
    """The metric's usage over time from its raw records, one series per value of the chosen
    dimension tag (column ``dimension``; LAST: per subject and value)."""
    agg = metric.aggregation_type
    window = 'every: v.windowPeriod, createEmpty: false, timeSrc: "_start"'
    by = '"dimension", "subject_type", "subject_id"' if agg is AggregationType.LAST else (
        '"dimension"')  # fmt: skip
    query = (
        _FROM
        + f'  |> filter(fn: (r) => r._measurement == "{RAW}" and r._field == "units")\n'
        + f"  |> filter(fn: (r) => {_flux_metric(metric)})\n"
        + f"  |> filter(fn: (r) => {subjects})\n"
        + '  |> map(fn: (r) => ({r with dimension: if exists r["${dimension}"]'
        + ' then r["${dimension}"] else ""}))\n'
        + f"  |> group(columns: [{by}])\n"
        + '  |> sort(columns: ["_time"])\n'
    )
    return (
        query
        + f"  |> aggregateWindow({window}, fn: {RAW_FUNCTIONS[agg]})\n"
        + f"  |> map(fn: (r) => ({{r with _value: {_flux_scaled('r._value', metric)}}}))\n"
        + '  |> rename(columns: {_value: "usage"})\n'
        + '  |> keep(columns: ["_time", "usage", "dimension", "subject_type", "subject_id"])'
    )


def _flux_top(metric: MetricDefinition) -> str:
    return _flux_per_subject(metric, _FLUX_SUBJECTS) + '  |> top(n: 10, columns: ["usage"])'


def _flux_total(metric: MetricDefinition) -> str:
    # one subject: its row is the total
    return _flux_per_subject(metric, _FLUX_SUBJECTS) + '  |> keep(columns: ["usage"])'


def _flux_thresholds(metric: MetricDefinition, subjects: str) -> str:
    return (
        _FROM
        + '  |> filter(fn: (r) => r._measurement == "metering_events" and r._field == "data")\n'
        + "  |> filter(fn: (r) => r.event =~ /^threshold\\./)\n"
        + f"  |> filter(fn: (r) => {_flux_metric(metric)})\n"
        + f"  |> filter(fn: (r) => {subjects})\n"
        + '  |> group(columns: ["subject_type", "subject_id"])\n'
        + "  |> last()\n"
        + "  |> group()\n"
        + '  |> rename(columns: {_value: "data"})\n'
        + '  |> keep(columns: ["data", "subject_type", "subject_id"])'
    )


def _flux_annotation(subjects: str) -> Json:
    """Threshold events as regions over the window each one is about: its data's periodStart
    and periodEnd (the point's own time is when the threshold was evaluated)."""
    query = (
        'import "experimental"\nimport "experimental/json"\n\n'
        "from(bucket: v.defaultBucket)\n"
        f"  |> range(start: experimental.subDuration(d: {WINDOW_LOOKBACK},"
        " from: v.timeRangeStart))\n"
        '  |> filter(fn: (r) => r._measurement == "metering_events" and r._field == "data")\n'
        "  |> filter(fn: (r) => r.event =~ /^threshold\\./)\n"
        f"  |> filter(fn: (r) => {subjects})\n"
        "  |> map(fn: (r) => {\n"
        "      w = json.parse(data: bytes(v: r._value))\n"
        "      return {time: time(v: w.periodStart), timeEnd: time(v: w.periodEnd),\n"
        '          text: r.event + " " + r.metric + " " + r.subject_type + "/" + r.subject_id'
        ' + ": " + r._value,\n'
        '          tags: r.event + "," + r.metric + "," + r.subject_id}\n'
        "  })\n"
        "  |> filter(fn: (r) => r.time < v.timeRangeStop and r.timeEnd > v.timeRangeStart)\n"
        "  |> group()"
    )
    mappings = {
        key: {"source": "field", "value": key} for key in ("time", "timeEnd", "text", "tags")
    }
    return {
        "name": "Threshold events (over their window)",
        "datasource": _ds("flux"),
        "enable": True,
        "iconColor": "red",
        "target": {"refId": "Anno", "query": query},
        "mappings": mappings,
    }


def _flux_tag_values(tag: str, predicate: str) -> str:
    return (
        'import "influxdata/influxdb/schema"\n\n'
        f'schema.tagValues(bucket: v.defaultBucket, tag: "{tag}",'
        f' predicate: (r) => r._measurement == "${{summaries}}"{predicate},'
        " start: v.timeRangeStart, stop: v.timeRangeStop)"
    )


def _flux_variables(*, one: bool) -> list[Json]:
    summaries = (
        'import "influxdata/influxdb/schema"\n\n'
        "schema.measurements(bucket: v.defaultBucket, start: v.timeRangeStart,"
        " stop: v.timeRangeStop)\n"
        f"  |> filter(fn: (r) => r._value =~ /{SUMMARIES_PATTERN}/)"
    )
    return [
        _query_var("flux", "summaries", "Summaries (period.zone)", summaries, multi=False),
        _query_var("flux", "subject_type", "Subject type", _flux_tag_values("subject_type", ""),
                   multi=not one),
        _query_var("flux", "subject", "Subject", _flux_tag_values(
            "subject_id", " and r.subject_type =~ /^${subject_type:regex}$/"), multi=not one),
    ]  # fmt: skip


# -- dashboards -----------------------------------------------------------------------------
def _describe(metric: MetricDefinition) -> str:
    field, fn = FIELDS[metric.aggregation_type]
    how = (
        "sum(units_sum) / sum(count)"
        if metric.aggregation_type is AggregationType.AVG
        else f"{fn}({field})"
    )
    scaled = f", divided by {scale(metric)}" if scale(metric) != 1 else ""
    return (
        f"{_text(metric.key)}: {metric.aggregation_type.value} metric,"
        f" the {MEANING[metric.aggregation_type]}"
        f" ({how} over the selected summaries{scaled})."
    )


def _overview(lang: str, metrics: Sequence[MetricDefinition]) -> Json:
    panels: list[Json] = []
    pid = 1
    for i, m in enumerate(metrics):
        y = 9 * i
        if lang == "influxql":
            series, alias = _ql_series(m, _QL_SUBJECTS)
            top, thresholds = _ql_top(m), _ql_thresholds(m, _QL_SUBJECTS)
        else:
            series, alias = _flux_series(m, _FLUX_SUBJECTS), ""
            top, thresholds = _flux_top(m), _flux_thresholds(m, _FLUX_SUBJECTS)
        label = _label(m)
        panels += [
            _panel(pid, "timeseries", f"{label}: {MEANING[m.aggregation_type]}", lang, series,
                   (0, y, 12, 9), _describe(m) + " Summaries exist once aggregation has run.",
                   metric=m, alias=alias),
            _panel(pid + 1, "table", f"{label}: top subjects", lang, top, (12, y, 6, 9),
                   "The ten subjects with the most usage in the time range, " + _describe(m),
                   metric=m, table=True, transformations=_top_transformations()),
            _panel(pid + 2, "table", f"{label}: against thresholds", lang, thresholds,
                   (18, y, 6, 9),
                   "The latest threshold event per subject: usage, threshold and percentage as"
                   " tsmeter evaluated them (the thresholds live in tsmeter's catalog).",
                   table=True, transformations=_threshold_table_transformations(m)),
        ]  # fmt: skip
        pid += 3
    variables = _ql_variables(one=False) if lang == "influxql" else _flux_variables(one=False)
    dimensioned = [m for m in metrics if m.dimensions]
    if dimensioned:
        variables.append(_dimension_var(lang))
    top = 9 * len(metrics)
    for k, m in enumerate(dimensioned):
        query = (_ql_by_dimension(m, _QL_SUBJECTS) if lang == "influxql"
                 else _flux_by_dimension(m, _FLUX_SUBJECTS))  # fmt: skip
        declared = ", ".join(f"dim.{name}" for name in m.dimension_names)
        panels.append(_panel(
            pid, "timeseries", f"{_label(m)}: usage by dimension", lang, query,
            (12 * (k % 2), top + 9 * (k // 2), 12, 9),
            _describe(m).replace("over the selected summaries", "over the raw records")
            + f" One series per value of the dimension chosen above ({_text(declared)});"
            " records without a value are the series with an empty value.",
            metric=m,
        ))  # fmt: skip
        pid += 1
    annotation = (
        _ql_annotation(_QL_SUBJECTS) if lang == "influxql" else _flux_annotation(_FLUX_SUBJECTS)
    )
    title = "InfluxQL" if lang == "influxql" else "Flux"
    return _dashboard(
        f"tsmeter-usage-overview-{lang}", f"tsmeter: Usage overview ({title})", [lang],
        variables, annotation, panels,
        "Each metric with its own aggregation and unit, its top subjects and thresholds. "
        + ("InfluxQL: InfluxDB 1.x, 2.x (v1 compatibility API) and 3.x." if lang == "influxql"
           else "Flux: InfluxDB 2.x."),
    )  # fmt: skip


def _subject(lang: str, metrics: Sequence[MetricDefinition]) -> Json:
    panels: list[Json] = []
    pid = 1
    for i, m in enumerate(metrics):
        y = 8 * i
        if lang == "influxql":
            series, alias = _ql_series(m, _QL_ONE)
            total, thresholds = _ql_total(m), _ql_thresholds(m, _QL_ONE)
        else:
            series, alias = _flux_series(m, _FLUX_SUBJECTS), ""
            total, thresholds = _flux_total(m), _flux_thresholds(m, _FLUX_SUBJECTS)
        label = _label(m)
        panels += [
            _panel(pid, "timeseries", f"{label}: {MEANING[m.aggregation_type]}", lang, series,
                   (0, y, 12, 8), _describe(m), metric=m, alias=alias),
            _panel(pid + 1, "stat", f"{label}: in range", lang, total, (12, y, 4, 8),
                   "Usage over the whole time range, " + _describe(m), metric=m, table=True,
                   options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                              "values": False}}),
            _panel(pid + 2, "table", f"{label}: threshold events", lang, thresholds,
                   (16, y, 8, 8), "This subject's latest threshold event for the metric.",
                   table=True, transformations=_threshold_table_transformations(m)),
        ]  # fmt: skip
        pid += 3
    variables = _ql_variables(one=True) if lang == "influxql" else _flux_variables(one=True)
    annotation = _ql_annotation(_QL_ONE) if lang == "influxql" else _flux_annotation(_FLUX_SUBJECTS)
    title = "InfluxQL" if lang == "influxql" else "Flux"
    return _dashboard(
        f"tsmeter-subject-detail-{lang}", f"tsmeter: Subject detail ({title})", [lang],
        variables, annotation, panels,
        "One subject, each metric with its own aggregation and unit. "
        + ("InfluxQL: InfluxDB 1.x, 2.x (v1 compatibility) and 3.x." if lang == "influxql"
           else "Flux: InfluxDB 2.x."),
    )  # fmt: skip


# -- output ---------------------------------------------------------------------------------
def dashboards(metrics: Sequence[MetricDefinition] | None = None) -> dict[str, Json]:
    """Every dashboard for ``metrics`` (default: the demo's) by its path under ``dashboards/``."""
    given = list(demo_metrics() if metrics is None else metrics)
    chosen = [m for m in given if not m.record_level]  # nothing of theirs in the summaries
    if not chosen:
        raise ValueError(
            "no metrics: a dashboard needs at least one metric definition (of a type other than"
            " UNIQUE_COUNT and TIME_WEIGHTED_SUM, which have no summaries to chart)"
        )
    return {
        "influxql/usage-overview.json": _overview("influxql", chosen),
        "influxql/subject-detail.json": _subject("influxql", chosen),
        "flux/usage-overview.json": _overview("flux", chosen),
        "flux/subject-detail.json": _subject("flux", chosen),
    }


def render(dashboard: Json) -> str:
    """The committed text of one dashboard (stable: sorted keys, two-space indent)."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path, metrics: Sequence[MetricDefinition] | None = None) -> list[Path]:
    """Write every dashboard under ``directory``; return the paths written."""
    written = []
    for name, dashboard in dashboards(metrics).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    return written


def load_metrics(path: Path) -> list[MetricDefinition]:
    """Metric definitions from JSON: a list as ``tsmeter --format json metric list`` prints."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    items = doc if isinstance(doc, list) else doc.get("items", doc.get("metrics", []))
    return [MetricDefinition.model_validate(item) for item in items]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.grafana [DIRECTORY] [--metrics FILE]`` (default ``dashboards``, the
    demo's metrics)."""
    parser = argparse.ArgumentParser(prog="python -m tools.grafana", description=__doc__)
    parser.add_argument("directory", nargs="?", default="dashboards", type=Path)
    parser.add_argument("--metrics", type=Path, help="JSON list of metric definitions")
    args = parser.parse_args(argv)
    metrics = load_metrics(args.metrics) if args.metrics else None
    for m in metrics or ():
        if m.record_level:
            print(f"left out: {m.key} ({m.aggregation_type.value} has no summaries to chart)")
    for path in write(args.directory, metrics):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
