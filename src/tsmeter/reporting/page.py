"""The report as one self-contained HTML page: inline CSS and SVG charts, no script, no
request to anywhere (its Content-Security-Policy forbids every fetch).

Every value from the data goes through :func:`html.escape` (:func:`_e`) at the one place it
is written; the only markup not built here is matplotlib's SVG, which escapes its own text.
Tables beside the charts carry the exact numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from html import escape

from tsmeter.domain import MetricDefinition, PeriodType, UsageAlert
from tsmeter.reporting.charts import (
    alert_chart,
    exact,
    threshold_chart,
    top_subjects_chart,
    usage_chart,
)
from tsmeter.reporting.data import MetricReport, Report, ThresholdReport, WindowUsage

__all__ = ["chart_count", "render"]

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2733; background: #f6f8fb; margin: 0; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 4px; overflow-wrap: anywhere; }
h3 { font-size: 15px; margin: 22px 0 6px; }
.meta, .note, .empty { color: #52606d; }
.note { background: #fff8e1; border-left: 3px solid #d68910; padding: 6px 10px; }
nav ul { padding-left: 18px; columns: 3; }
section.metric { background: #fff; border: 1px solid #dde3ea; border-radius: 6px;
                 padding: 18px 22px; margin: 22px 0; }
figure.chart { margin: 6px 0; }
figure.chart svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e4e8ee; text-align: left;
         vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.t { white-space: nowrap; }
td.id { overflow-wrap: anywhere; white-space: pre-wrap; max-width: 420px; }
.exceeded { color: #c0392b; font-weight: 600; }
.approaching { color: #b9770e; font-weight: 600; }
details summary { cursor: pointer; color: #3b6fb6; }
.total strong { font-size: 17px; }
footer { color: #7b8794; font-size: 12px; margin-top: 30px; }
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_PER = {
    PeriodType.HOURLY: ("hour", "%a %d %b %Y %H:%M"),
    PeriodType.DAILY: ("day", "%a %d %b %Y"),
    PeriodType.WEEKLY: ("week", "week of %a %d %b %Y"),
    PeriodType.MONTHLY: ("month", "%B %Y"),
    PeriodType.YEARLY: ("year", "%Y"),
}
_MEANING = {
    "COUNT": "the number of records",
    "SUM": "the sum of all records",
    "AVG": "the mean of all records, rounded half to even to the metric's precision",
    "MAX": "the largest record",
    "MIN": "the smallest record",
    "LAST": "the latest record",
    "UNIQUE_COUNT": "distinct values of the unique property, counted per subject and added up",
    "TIME_WEIGHTED_SUM": "each reading held until the next, integrated over time",
}


def _unit(metric: MetricDefinition) -> str:
    """The unit of a metric's values: a time-weighted sum's is the unit times its time unit
    (``GB × hour``)."""
    if metric.aggregation_type.value == "TIME_WEIGHTED_SUM":
        return f"{metric.unit or 'value'} × {metric.time_unit.value.lower()}"
    return metric.unit


def _e(value: object) -> str:
    """Text (quotes too) escaped for HTML content and attribute values."""
    return escape(str(value), quote=True)


def _time(value: datetime | None, zone_of: datetime) -> str:
    """A time in the report's zone, to the minute with the offset; ``-`` for none."""
    if value is None:
        return "-"
    assert zone_of.tzinfo is not None
    return value.astimezone(zone_of.tzinfo).strftime("%Y-%m-%d %H:%M %z")


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: set[int],
    times: frozenset[int] = frozenset(),
) -> str:
    """A table of already escaped cells; columns in ``numeric`` aligned right, those in
    ``times`` kept on one line."""
    kinds = {**{i: " class=t" for i in times}, **{i: " class=n" for i in numeric}}
    head = "".join(f"<th{kinds.get(i, '')}>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{kinds.get(i, '')}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _id(text: str) -> str:
    return f'<span class="id">{_e(text)}</span>'


def chart_count(report: Report) -> int:
    """How many charts :func:`render` draws for ``report``: usage and top subjects for each
    metric with records, one per threshold with usage, one alert timeline per metric with
    alerts."""
    return sum(
        (2 if m.records else 0) + sum(1 for t in m.thresholds if t.usage) + (1 if m.alerts else 0)
        for m in report.metrics
    )


class _Charts:
    """Numbers the page's charts, so each SVG's ids are its own."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> int:
        self.count += 1
        return self.count


def render(report: Report) -> str:
    """The page for ``report``.

    Example: ``Path("report.html").write_text(render(gather(meter, start, end)))``.
    """
    start, end = report.start, report.end
    title = f"tsmeter usage report: {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"
    charts = _Charts()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        "<header><h1>Usage report</h1>",
        f'<p class="meta">From <strong>{_e(_time(start, start))}</strong> to '
        f"<strong>{_e(_time(end, start))}</strong> (exclusive), time zone "
        f"<strong>{_e(report.timezone)}</strong>. Generated {_e(_time(report.generated_at, start))}"
        f". {len(report.metrics)} metric{'s' if len(report.metrics) != 1 else ''}.</p>",
    ]
    if report.widened:
        parts.append(
            '<p class="note">The range asked for was not on whole hours: it was widened to '
            "the hours containing it, since usage is summarised per hour at the finest.</p>"
        )
    parts.append("</header>")
    if not report.metrics:
        parts.append(
            '<p class="empty">No metrics are defined in this store, so there is nothing to '
            "report. Define one with <code>tsmeter metric define</code>.</p>"
        )
    else:
        links = "".join(
            f'<li><a href="#metric-{i}">{_e(_metric_name(m))}</a></li>'
            for i, m in enumerate(report.metrics, 1)
        )
        parts.append(f"<nav><ul>{links}</ul></nav>")
    for index, item in enumerate(report.metrics, 1):
        parts.append(_section(index, item, report, charts))
    parts.append(
        "<footer>Values are exact: charts place them, the tables beside them give every "
        "digit. Made by tsmeter report; this file needs no network.</footer>"
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _metric_name(item: MetricReport) -> str:
    metric = item.metric
    return metric.key if metric.org_id is None else f"{metric.key} (org {metric.org_id})"


def _section(index: int, item: MetricReport, report: Report, charts: _Charts) -> str:
    metric = item.metric
    details = [metric.aggregation_type.value, f"precision {metric.precision}"]
    if metric.unit:
        details.insert(0, metric.unit)
    if metric.name:
        details.insert(0, metric.name)
    out = [
        f'<section class="metric" id="metric-{index}">',
        f"<h2>{_e(_metric_name(item))}</h2>",
        f'<p class="meta">{_e(" · ".join(details))}</p>',
    ]
    if not item.records:
        out.append('<p class="empty">No usage recorded in this period.</p>')
    else:
        assert item.total is not None
        out.append(
            f'<p class="total">Over the period: <strong>{_e(exact(item.total))}</strong> '
            f"{_e(_unit(metric))} ({_e(_MEANING[metric.aggregation_type.value])}), "
            f"{item.records:,} records, {item.subject_count:,} subjects.</p>"
        )
        out += _usage(item, report, charts)
        out += _subjects(item, charts)
    out += _thresholds(item, report, charts)
    out += _alerts(item, report, charts)
    out.append("</section>")
    return "\n".join(out)


def _figure(kind: str, svg: str) -> str:
    return f'<figure class="chart" data-chart="{_e(kind)}">{svg}</figure>'


def _usage(item: MetricReport, report: Report, charts: _Charts) -> list[str]:
    unit, fmt = _PER[item.period]
    rows = [
        [_e(b.start.strftime(fmt)), _e("-" if b.value is None else exact(b.value)),
         f"{b.records:,}"]
        for b in item.buckets
    ]  # fmt: skip
    return [
        f"<h3>Usage per {unit}</h3>",
        _figure("usage", usage_chart(charts.next(), item)),
        f"<details><summary>Exact values per {unit}</summary>",
        _table([_e(unit.capitalize()), "Value", "Records"], rows, {1, 2}),
        "</details>",
    ]


def _subjects(item: MetricReport, charts: _Charts) -> list[str]:
    rows = [
        [str(rank), _e(s.subject_type), _id(s.subject_id), _e(exact(s.value)), f"{s.records:,}"]
        for rank, s in enumerate(item.subjects, 1)
    ]
    return [
        f"<h3>Top subjects ({len(item.subjects)} of {item.subject_count})</h3>",
        _figure("subjects", top_subjects_chart(charts.next(), item)),
        _table(["#", "Type", "Subject", "Value", "Records"], rows, {0, 3, 4}),
    ]


def _status(value: Decimal, item: ThresholdReport) -> str:
    if value >= item.threshold.threshold:
        return '<span class="exceeded">exceeded</span>'
    if value >= item.warn:
        return '<span class="approaching">approaching</span>'
    return "under"


def _window_text(usage: WindowUsage, item: ThresholdReport, report: Report) -> str:
    if item.window is None or usage.start is None:
        return "lifetime"
    return usage.start.astimezone(report.start.tzinfo).strftime(_PER[item.window][1])


def _thresholds(item: MetricReport, report: Report, charts: _Charts) -> list[str]:
    if not item.thresholds:
        return []
    out = ["<h3>Thresholds</h3>"]
    zone = report.start.tzinfo
    assert zone is not None
    for t in item.thresholds:
        rule = t.threshold
        who = f"every {rule.subject_type}" if rule.subject_id == "*" else rule.subject_id
        window = "lifetime (all usage recorded)" if t.window is None else (
            f"per {_PER[t.window][0]}, windows overlapping the period")  # fmt: skip
        out.append(
            f"<p>Limit <strong>{_e(exact(rule.threshold))}</strong> {_e(item.metric.unit)} for "
            f"{_id(who)}, {_e(window)}; warns at {_e(exact(t.warn))}; action "
            f"{_e(rule.action.value)}. {len(t.exceeded)} exceeded, {len(t.approaching)} "
            "approaching.</p>"
        )
        if not t.usage:
            out.append('<p class="empty">No usage in its windows.</p>')
            continue
        out.append(_figure("threshold", threshold_chart(charts.next(), t, report.top, zone)))
        ranked = sorted(t.usage, key=lambda u: (-u.value, u.subject_id))
        rows = [
            [_e(_window_text(u, t, report)), _id(u.subject_id), _e(exact(u.value)),
             _e(_percent(u.value, rule.threshold)), _status(u.value, t)]
            for u in ranked
        ]  # fmt: skip
        table = _table(["Window", "Subject", "Usage", "Of limit", "State"], rows, {2, 3})
        if len(rows) <= 2 * report.top:
            out.append(table)
        else:
            out.append(f"<details><summary>Exact usage of all {len(rows)} subjects and "
                       f"windows</summary>{table}</details>")  # fmt: skip
    return out


def _percent(value: Decimal, limit: Decimal) -> str:
    """``value`` as a percentage of ``limit`` to one place (display only).

    >>> _percent(Decimal("1"), Decimal("3"))
    '33.3%'
    """
    if not limit:
        return "-"
    return f"{(value * 100 / limit).quantize(Decimal('0.1'))}%"


def _alerts(item: MetricReport, report: Report, charts: _Charts) -> list[str]:
    out = ["<h3>Alerts</h3>"]
    if not item.alerts:
        out.append('<p class="empty">No alert was opened or resolved in this period, and '
                   "none is about a window overlapping it.</p>")  # fmt: skip
        return out
    out.append(_figure("alerts", alert_chart(charts.next(), item, report.start, report.end)))
    out.append(_table(
        ["Opened", "Resolved", "Subject", "Level", "Window", "Usage", "Limit", "Status"],
        [_alert_row(a, report) for a in item.alerts],
        {5, 6},
        frozenset({0, 1}),
    ))  # fmt: skip
    return out


def _alert_row(alert: UsageAlert, report: Report) -> list[str]:
    window = (
        "lifetime"
        if alert.period_start is None
        else f"{_time(alert.period_start, report.start)} to {_time(alert.period_end, report.start)}"
    )
    return [
        _e(_time(alert.created_at, report.start)),
        _e(_time(alert.resolved_at, report.start)),
        _id(alert.subject_id),
        f'<span class="{_e(alert.level)}">{_e(alert.level)}</span>',
        _e(window),
        _e(exact(alert.actual_value)),
        _e(exact(alert.threshold_value)),
        _e(alert.status.value),
    ]
