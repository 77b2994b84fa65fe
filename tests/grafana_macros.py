"""What Grafana does to a dashboard query before it reaches InfluxDB, done the same way here:
time and interval macros, template variables (multi-value ones as escaped regex alternations,
as Grafana's InfluxDB datasource does), Flux's ``v.*`` variables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"

# Bounds that cover the demo's month (2026-03), the start of its yearly summary (a summary
# point sits at its period's start) and the threshold events, which carry the
# wall-clock time of the evaluation.
START = "2026-01-01T00:00:00Z"
INTERVAL = "1d"
INFLUXQL_TIME_FILTER = f"time >= '{START}' AND time <= now()"

_REGEX_SPECIALS = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")

Values = Mapping[str, Sequence[str]]


def regex_escape(value: str) -> str:
    """Grafana's regex escaping of a variable value (kbn.regexEscape)."""
    return _REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), value)


def as_regex(values: Sequence[str]) -> str:
    """A multi-value variable inside ``/^...$/``: escaped, alternatives in parentheses."""
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def load() -> dict[str, dict[str, Any]]:
    """Every committed dashboard by its path relative to dashboards/."""
    return {
        p.relative_to(DASHBOARDS).as_posix(): json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(DASHBOARDS.rglob("*.json"))
    }


def language(dashboard: Mapping[str, Any]) -> str:
    """``influxql`` or ``flux``, from the dashboard's tags."""
    (lang,) = {"influxql", "flux"} & set(dashboard["tags"])
    return lang


def variables(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name, in dependency (declaration) order."""
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def panel_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, query) for every panel target and annotation of a dashboard."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["query"]
    for annotation in dashboard["annotations"]["list"]:
        if "target" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["target"]["query"]


def _substitute(query: str, values: Values, multi: Mapping[str, bool], flux: bool) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        fmt = m.group(2)
        if name not in values:
            return m.group(0)
        chosen = values[name]
        if fmt == "regex" or (not flux and multi.get(name, False)):
            return as_regex(chosen)
        assert len(chosen) == 1, f"${name} is single-valued"
        return chosen[0]

    return _VARIABLE.sub(replace, query)


def _assert_known(query: str, values: Values) -> None:
    """Every variable the query names has a value (checked before substitution: values are
    data and may hold ``$`` themselves)."""
    for m in _VARIABLE.finditer(query):
        name = m.group(1) or m.group(3)
        assert name in values, f"unsubstituted ${name} in {query!r}"


def influxql(
    query: str,
    values: Values,
    multi: Mapping[str, bool],
    *,
    start: datetime | None = None,
    stop: datetime | None = None,
) -> str:
    """An InfluxQL query as Grafana sends it, for the range ``START`` .. now unless given:
    ``$timeFilter`` as above (or absolute ``ms`` bounds), ``${__from}`` and ``${__to}`` in
    epoch milliseconds (Grafana's global variables)."""
    first = start or datetime.fromisoformat(START)
    last = stop or datetime.now(UTC)
    time_filter = INFLUXQL_TIME_FILTER if start is None and stop is None else (
        f"time >= {_ms(first)}ms and time <= {_ms(last)}ms")  # fmt: skip
    query = query.replace("$timeFilter", time_filter)
    query = query.replace("${__from}", str(_ms(first))).replace("${__to}", str(_ms(last)))
    query = query.replace("$__interval", INTERVAL)
    _assert_known(query, values)
    return _substitute(query, values, multi, flux=False)


def _ms(when: datetime) -> int:
    return int(when.timestamp()) * 1000 + when.microsecond // 1000


def flux(query: str, values: Values, bucket: str) -> str:
    """A Flux query as Grafana sends it (its ``v.*`` macros replaced by literals)."""
    query = (
        query.replace("v.timeRangeStart", START)
        .replace("v.timeRangeStop", "now()")
        .replace("v.windowPeriod", INTERVAL)
        .replace("v.defaultBucket", json.dumps(bucket))
    )
    _assert_known(query, values)
    assert "v." not in query.replace("(v: ", ""), f"unsubstituted in {query!r}"
    return _substitute(query, values, {}, flux=True)


def resolve(
    dashboard: Mapping[str, Any], run: Callable[[str, Values], list[str]]
) -> dict[str, list[str]]:
    """Every template variable's value as Grafana sets it on load: a custom variable its
    current value, a query variable all its values ("All") when multi, else the first one;
    a variable's ``regex`` (``/pattern/``, no capture group) keeps the values it matches.
    ``run(query, values_so_far)`` answers a variable query."""
    values: dict[str, list[str]] = {}
    for name, var in variables(dashboard).items():
        if var["type"] == "custom":
            values[name] = [var["current"]["value"]]
            continue
        found = run(var["query"], values)
        if var.get("regex"):
            keep = re.compile(var["regex"][1:-1])
            found = [v for v in found if keep.search(v)]
        assert found, f"variable ${name} has no values"
        values[name] = found if var["multi"] else found[:1]
    return values


def multi_flags(dashboard: Mapping[str, Any]) -> dict[str, bool]:
    """Which variables are multi-value (regex-escaped and joined by Grafana)."""
    return {n: bool(v.get("multi") or v.get("includeAll")) for n, v in variables(dashboard).items()}
