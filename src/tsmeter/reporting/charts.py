"""The report's charts, drawn by matplotlib as SVG text to inline in the page (no script,
no network, text kept as text so labels stay exact and selectable).

Matplotlib only places marks: bar heights and line points are floats of the exact values,
while every number written on a chart is the exact Decimal as text. Names from the data
(subject ids) reach a chart through :func:`label`: control and invisible characters become
visible escapes, math text is off, and matplotlib escapes the SVG text itself.
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from tsmeter.domain import PeriodType
from tsmeter.extras import needs
from tsmeter.reporting.data import MetricReport, ThresholdReport, WindowUsage

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "alert_chart",
    "exact",
    "label",
    "threshold_chart",
    "top_subjects_chart",
    "usage_chart",
]

_WIDTH = 9.0  # inches; the page scales the SVG to its column
_BAR = "#3b6fb6"
_LIMIT = "#c0392b"
_WARN = "#d68910"
_LEVEL_COLOURS = {"exceeded": _LIMIT, "approaching": _WARN}
_LINES = ("#3b6fb6", "#2e8b57", "#8e44ad", "#c0392b", "#d68910", "#17a2b8", "#6c757d",
          "#e83e8c", "#795548", "#20c997")  # fmt: skip
_XML_HEAD = re.compile(r"\A\s*<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)
_TICKS = {
    PeriodType.HOURLY: "%d %b %H:%M",
    PeriodType.DAILY: "%a %d %b",
    PeriodType.WEEKLY: "%d %b %Y",
    PeriodType.MONTHLY: "%b %Y",
    PeriodType.YEARLY: "%Y",
}


def exact(value: Decimal) -> str:
    """An exact quantity with thousands separators, every digit kept.

    >>> exact(Decimal("1234567.50")), exact(Decimal("-3")), exact(Decimal("12E+3"))
    ('1,234,567.50', '-3', '12,000')
    """
    return format(value, ",f")


def label(text: str, limit: int = 32) -> str:
    """``text`` as a chart shows it: hidden characters (controls, bidi marks, line and
    paragraph separators) as ``\\uXXXX`` escapes, cut to ``limit`` characters with an ellipsis.

    >>> label("org\\n<1>"), label("x" * 40, 8)
    ('org\\\\u000a<1>', 'xxxxxxx…')
    """
    shown = "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") else c
        for c in text
    )
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


@contextmanager
def _figure(number: int, height: float) -> Iterator[tuple[Figure, Axes]]:
    """A fresh figure under the report's style; ids in its SVG are salted with ``number`` so
    several charts can share one page."""
    with needs("report"):
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    style = {
        "svg.fonttype": "none",
        "svg.hashsalt": f"tsmeter-report-chart-{number}",
        "text.parse_math": False,
        "font.family": "sans-serif",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 10,
        "axes.titleweight": "bold",
        "axes.titlelocation": "left",
    }
    with matplotlib.rc_context(cast(Any, style)):  # the stubs list every key as a Literal
        figure = Figure(figsize=(_WIDTH, height), layout="constrained")
        yield figure, figure.subplots()


def _svg(figure: Figure) -> str:
    """The figure as an SVG element (no XML header), scalable by the page."""
    out = io.StringIO()
    with warnings.catch_warnings():
        # text stays text in the SVG: the browser draws it with its own fonts, so a glyph
        # missing from matplotlib's font (an emoji in a name) only shifts a width estimate
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        figure.savefig(out, format="svg", metadata={"Date": None})
    return _XML_HEAD.sub("", out.getvalue(), count=1)


def _grouped(axis: Any) -> None:
    """Tick numbers with thousands separators, never an offset or scientific notation."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.10g}"))


def _stride(count: int, most: int = 16) -> int:
    return max(1, math.ceil(count / most))


def usage_chart(number: int, report: MetricReport) -> str:
    """Bars of the metric's value per period (periods without records drawn as gaps)."""
    metric = report.metric
    buckets = report.buckets
    with _figure(number, 2.8) as (figure, axes):
        heights = [math.nan if b.value is None else float(b.value) for b in buckets]
        axes.bar(range(len(buckets)), heights, color=_BAR, width=0.8)
        step = _stride(len(buckets))
        ticks = list(range(0, len(buckets), step))
        axes.set_xticks(ticks, [buckets[i].start.strftime(_TICKS[report.period]) for i in ticks])
        axes.tick_params(axis="x", labelrotation=45 if len(ticks) > 8 else 0)
        _grouped(axes.yaxis)
        axes.set_ylabel(label(metric.unit or metric.key, 24))
        axes.set_title(
            f"{label(metric.key, 48)}: {_meaning(metric.aggregation_type.value)} per "
            f"{_UNIT_OF[report.period]}"
        )
        axes.grid(axis="y", alpha=0.3)
        return _svg(figure)


_UNIT_OF = {
    PeriodType.HOURLY: "hour",
    PeriodType.DAILY: "day",
    PeriodType.WEEKLY: "week",
    PeriodType.MONTHLY: "month",
    PeriodType.YEARLY: "year",
}


def _meaning(aggregation: str) -> str:
    return {
        "COUNT": "records",
        "SUM": "sum",
        "AVG": "mean of records",
        "MAX": "largest record",
        "MIN": "smallest record",
        "LAST": "latest record",
        "UNIQUE_COUNT": "distinct values",
        "TIME_WEIGHTED_SUM": "held over time",
    }[aggregation]


def _hbars(
    axes: Axes, names: Sequence[str], values: Sequence[Decimal], colours: Sequence[str]
) -> None:
    """Horizontal bars, largest on top, each labelled with its exact value."""
    positions = range(len(names) - 1, -1, -1)
    bars = axes.barh(list(positions), [float(v) for v in values], color=list(colours))
    axes.set_yticks(list(positions), [label(n) for n in names])
    axes.bar_label(bars, labels=[exact(v) for v in values], padding=3, fontsize=8)
    _grouped(axes.xaxis)
    axes.margins(x=0.15)


def top_subjects_chart(number: int, report: MetricReport) -> str:
    """The top subjects' usage over the range as horizontal bars, exact values written."""
    subjects = report.subjects
    with _figure(number, 0.6 + 0.28 * max(3, len(subjects))) as (figure, axes):
        _hbars(
            axes,
            [s.subject_id for s in subjects],
            [s.value for s in subjects],
            [_BAR] * len(subjects),
        )
        axes.set_title(f"Top {len(subjects)} of {report.subject_count} subjects")
        return _svg(figure)


def _state_colour(value: Decimal, item: ThresholdReport) -> str:
    if value >= item.threshold.threshold:
        return _LIMIT
    if value >= item.warn:
        return _WARN
    return _BAR


def threshold_chart(number: int, item: ThresholdReport, top: int, zone: tzinfo) -> str:
    """Usage against a threshold: one window as bars per subject, several windows as lines
    of the subjects closest to the limit; the limit and the warn level drawn across."""
    limit, warn = float(item.threshold.threshold), float(item.warn)
    windows = sorted({u.start for u in item.usage}, key=lambda s: s.timestamp() if s else 0)
    title = f"Against the limit of {exact(item.threshold.threshold)} ({_window(item)})"
    if len(windows) <= 1:
        shown = sorted(item.usage, key=lambda u: (-u.value, u.subject_id))[:top]
        with _figure(number, 0.9 + 0.28 * max(3, len(shown))) as (figure, axes):
            _hbars(
                axes,
                [u.subject_id for u in shown],
                [u.value for u in shown],
                [_state_colour(u.value, item) for u in shown],
            )
            axes.axvline(limit, color=_LIMIT, linewidth=1.5, label="limit")
            if warn != limit:
                axes.axvline(warn, color=_WARN, linewidth=1, linestyle="--", label="warn level")
            axes.legend(loc="lower right", fontsize=8)
            axes.set_title(title)
            return _svg(figure)
    with _figure(number, 3.0) as (figure, axes):
        for index, (subject, points) in enumerate(_closest(item, top).items()):
            xs = [windows.index(u.start) for u in points]
            axes.plot(xs, [float(u.value) for u in points], marker="o", markersize=3,
                      color=_LINES[index % len(_LINES)], label=label(subject, 24))  # fmt: skip
        axes.axhline(limit, color=_LIMIT, linewidth=1.5, label="limit")
        if warn != limit:
            axes.axhline(warn, color=_WARN, linewidth=1, linestyle="--", label="warn level")
        step = _stride(len(windows))
        ticks = list(range(0, len(windows), step))
        fmt = _TICKS[item.window or PeriodType.YEARLY]
        axes.set_xticks(ticks, [_local(windows[i], zone).strftime(fmt) for i in ticks])
        axes.tick_params(axis="x", labelrotation=45 if len(ticks) > 8 else 0)
        _grouped(axes.yaxis)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        axes.set_title(title)
        axes.grid(axis="y", alpha=0.3)
        return _svg(figure)


def _local(value: datetime | None, zone: tzinfo) -> datetime:
    assert value is not None  # only lifetime windows have no start, and they are one window
    return value.astimezone(zone)


def _window(item: ThresholdReport) -> str:
    if item.window is None:
        return "lifetime"
    return f"per {_UNIT_OF[item.window]}"


def _closest(item: ThresholdReport, top: int) -> dict[str, list[WindowUsage]]:
    """The ``top`` subjects whose usage came closest to the limit, with their windows."""
    by_subject: dict[str, list[WindowUsage]] = {}
    for usage in item.usage:
        by_subject.setdefault(usage.subject_id, []).append(usage)
    ranked = sorted(by_subject, key=lambda s: (-max(u.value for u in by_subject[s]), s))
    return {s: by_subject[s] for s in ranked[:top]}


def _num(at: datetime) -> float:
    """``at`` as matplotlib's date number (an x position on a date axis)."""
    from matplotlib.dates import date2num

    return float(date2num(at))  # type: ignore[no-untyped-call]


def alert_chart(number: int, report: MetricReport, start: datetime, end: datetime) -> str:
    """The alert timeline over the report's range: one row per threshold, subject and level;
    a bar over the window each alert is about, a triangle where it opened and a dot where
    it was resolved (when those fall in the range; otherwise the date is written)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    zone = start.tzinfo
    alerts = report.alerts
    rows: dict[tuple[str, str, str], int] = {}
    for alert in alerts:
        rows.setdefault((alert.threshold_id, alert.subject_id, alert.level), len(rows))
    notes: dict[int, dict[str, None]] = {}  # row: the dates outside the range, in order
    with _figure(number, 0.9 + 0.34 * max(3, len(rows))) as (figure, axes):
        for alert in alerts:
            y = len(rows) - 1 - rows[(alert.threshold_id, alert.subject_id, alert.level)]
            colour = _LEVEL_COLOURS.get(alert.level, _BAR)
            left = max(start, alert.period_start or start)
            right = min(end, alert.period_end or end)
            if left < right:
                x0, x1 = _num(left), _num(right)
                axes.barh(y, x1 - x0, left=x0, height=0.5, color=colour, alpha=0.3)
            for at, marker, verb in ((alert.created_at, "^", "opened"),
                                     (alert.resolved_at, "o", "resolved")):  # fmt: skip
                if at is None:
                    continue
                if start <= at < end:
                    axes.plot([_num(at)], [y], marker=marker, color=colour, markersize=7,
                              zorder=3)  # fmt: skip
                else:
                    notes.setdefault(y, {})[f"{verb} {at.astimezone(zone):%Y-%m-%d %H:%M}"] = None
        for y, texts in notes.items():  # one note per row, each date once
            axes.annotate(", ".join(texts), (1, y), xycoords=("axes fraction", "data"),
                          xytext=(-4, 0), textcoords="offset points", ha="right",
                          va="center", fontsize=7.5, color="#52606d")  # fmt: skip
        names = sorted(rows, key=rows.__getitem__)
        axes.set_yticks(
            [len(rows) - 1 - i for i in range(len(rows))],
            [f"{label(s, 24)} · {level}" for _, s, level in names],
        )
        axes.set_ylim(-0.7, len(rows) - 0.3)
        axes.set_xlim(_num(start), _num(end))
        locator = AutoDateLocator(tz=zone)  # type: ignore[no-untyped-call]
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=zone))  # type: ignore[no-untyped-call]
        axes.set_title(
            f"Alerts ({len(alerts)}): bar = the window an alert is about, ▲ opened, ● resolved"
        )
        axes.grid(axis="x", alpha=0.3)
        return _svg(figure)
