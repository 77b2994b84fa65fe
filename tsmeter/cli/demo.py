"""``tsmeter demo``: a month of realistic usage, recorded, aggregated and reported."""

from __future__ import annotations

import math
import re
import shlex
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.demo_data import (
    INCIDENT_ORG,
    METRICS,
    ORGS,
    generate,
    incident_day,
    month_bounds,
)
from tsmeter.cli.output import progress, table_lines
from tsmeter.domain import AggregationResult, AggregationType, PeriodType, UsageSummary
from tsmeter.domain.validation import from_ns
from tsmeter.service import Meter

__all__ = ["DEFAULT_STORE", "demo"]

DEFAULT_STORE = "tsmeter-demo.db"
_EIGHTHS = " ▏▎▍▌▋▊▉"
_SPARKS = "▁▂▃▄▅▆▇█"


def bar(value: float, maximum: float, width: int) -> str:
    """A horizontal bar of ``value`` against ``maximum`` in ``width`` cells (eighth steps).

    >>> bar(5, 10, 4)
    '██'
    """
    eighths = round(8 * width * value / maximum) if maximum > 0 else 0
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def sparkline(values: Sequence[float]) -> str:
    """One character per value, from ▁ (lowest) to █ (highest).

    >>> sparkline([0, 5, 10])
    '▁▅█'
    """
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_SPARKS[min(7, int((v - low) / span * 8))] for v in values)


def _n(value: float) -> str:
    return f"{value:,.0f}" if value.is_integer() or abs(value) >= 1000 else f"{value:,.1f}"


def _nice(value: float) -> float:
    """``value`` rounded to two significant digits (a plan limit a person would choose)."""
    step = 10 ** max(0, math.floor(math.log10(max(value, 1))) - 1)
    return float(round(value / step) * step)


def month_total(agg: AggregationType, rows: Sequence[UsageSummary]) -> tuple[float, str]:
    """A metric's total over every subject for one period, and what that number means."""
    if agg is AggregationType.AVG:
        count = sum(r.record_count for r in rows)
        return (sum(r.sum for r in rows) / count if count else 0.0), "mean of all records"
    meaning = {
        AggregationType.COUNT: "number of records",
        AggregationType.SUM: "sum of all records",
        AggregationType.MAX: "sum of each org's peak",
        AggregationType.MIN: "sum of each org's minimum",
        AggregationType.LAST: "sum of each org's latest value",
    }[agg]
    return sum(r.total_quantity for r in rows), meaning


@dataclass
class _Run:
    """What the demo did, for the report."""

    store: str
    flags: str
    start: datetime
    end: datetime
    records: int
    recorded_in: float
    aggregated_in: float
    aggregations: list[AggregationResult]
    limit: float


def _open_store(state: CliState) -> tuple[Meter, str]:
    if state.store is None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(DEFAULT_STORE + suffix).unlink(missing_ok=True)
        return state.open(DEFAULT_STORE), DEFAULT_STORE
    meter = state.open(state.store)
    if meter.list_metrics(all_orgs=True):
        raise click.ClickException(
            f"store {state.store!r} already has metrics; the demo needs an empty store "
            f"(run it without --store to use ./{DEFAULT_STORE}, which it recreates)"
        )
    return meter, state.store


@click.command()
@click.option(
    "--records",
    type=click.IntRange(min=100),
    default=200_000,
    show_default=True,
    help="How many usage records to generate.",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Seed of the random generator (same seed, same data).",
)
@click.option(
    "--month",
    metavar="YYYY-MM",
    default=None,
    help="Calendar month to fill [default: the previous month].",
)
@pass_state
def demo(state: CliState, records: int, seed: int, month: str | None) -> None:
    """Record a realistic month of usage, aggregate it and print a report.

    Defines four metrics (api_calls COUNT, compute_minutes SUM, storage_gb
    MAX, response_ms AVG) and a plan limit, records a month of seeded usage by
    ten organisations (weekday and daytime peaks, one incident) through
    record_batch, aggregates it hourly to yearly and reports totals, top
    organisations, a daily chart and timings, then suggests commands to try.

    Without --store it works in ./tsmeter-demo.db, which it deletes first so
    re-runs give the same report. With --store it uses that store, which
    must not have any metric yet. The report is text whatever --format says.

    \b
    Example:
        tsmeter demo
        tsmeter --timezone Europe/Paris demo --records 500000 --month 2026-03 --seed 7
    """
    if month is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise click.BadParameter(f"expected YYYY-MM, got {month!r}", param_hint="'--month'")
    began = time.perf_counter()
    meter, store = _open_store(state)
    start_ns, end_ns = month_bounds(meter.calendar, month, datetime.now(UTC))
    for m in METRICS:
        meter.define_metric(m.key, aggregation_type=m.aggregation, unit=m.unit, name=m.name)
    recorded_in = 0.0
    count = api_calls = 0
    with progress(records, "Recording") as (advance, _say):
        for chunk in generate(meter.calendar, start_ns, end_ns, records, seed):
            api_calls += sum(1 for item in chunk if item["metricKey"] == "api_calls")
            t0 = time.perf_counter()
            meter.record_batch(chunk)
            recorded_in += time.perf_counter() - t0
            count += len(chunk)
            advance(len(chunk))
    limit = _nice(api_calls / sum(o.api_share for o in ORGS) * 23)
    meter.create_threshold(
        "api_calls",
        "org",
        limit,
        "*",
        period_type="MONTHLY",
        action="ALERT",
        warn_threshold=limit * 0.8,
    )
    t0 = time.perf_counter()
    aggregations = [meter.aggregate(p) for p in PeriodType]
    aggregated_in = time.perf_counter() - t0
    flags = f"--store {shlex.quote(store)}"
    if state.timezone is not None:
        flags += f" --timezone {shlex.quote(state.timezone)}"
    run = _Run(
        store,
        flags,
        from_ns(start_ns),
        from_ns(end_ns),
        count,
        recorded_in,
        aggregated_in,
        aggregations,
        limit,
    )
    for line in report(meter, run):
        click.echo(line)
    click.echo(f"Total wall time: {time.perf_counter() - began:.1f} s.")


def report(meter: Meter, run: _Run) -> list[str]:
    """The demo's report, as lines of text (the last line, total wall time, is added later)."""
    zone = meter.calendar.zone
    start, end = run.start.astimezone(zone), run.end.astimezone(zone)
    summaries = {
        m.key: meter.get_usage_summaries(m.key, "MONTHLY", start=run.start, end=run.end)
        for m in METRICS
    }
    written = sum(a.summaries_written for a in run.aggregations)
    rate = run.records / run.recorded_in if run.recorded_in else 0.0
    out = [
        f"tsmeter demo: {start:%B %Y} ({meter.timezone}), store {run.store}",
        "",
        f"Recorded {run.records:,} usage records of {len(ORGS)} organisations in "
        f"{run.recorded_in:.2f} s ({rate:,.0f} records/s).",
        f"Aggregated them into {written:,} hourly to yearly summaries in "
        f"{run.aggregated_in:.2f} s.",
        "",
        "Month totals",
    ]
    rows = []
    for m in METRICS:
        agg = AggregationType(m.aggregation)
        value, meaning = month_total(agg, summaries[m.key])
        records = sum(r.record_count for r in summaries[m.key])
        rows.append([m.key, m.aggregation, m.unit, f"{records:,}", _n(value), meaning])
    headers = ["METRIC", "AGGREGATION", "UNIT", "RECORDS", "MONTH TOTAL", "MEANING"]
    out += ["  " + line for line in table_lines(headers, rows, {3, 4})]
    out += ["", "Top organisations (monthly value per org)"]
    for m in METRICS:
        top = sorted(summaries[m.key], key=lambda r: (-r.total_quantity, r.subject_id))[:3]
        listed = " · ".join(f"{r.subject_id} {_n(r.total_quantity)}" for r in top)
        out.append(f"  {m.key:<16} {listed}")
    out += ["", *_daily_chart(meter, run, INCIDENT_ORG)]
    out += ["", *_limit_section(summaries["api_calls"], run.limit)]
    date = f"--from {start:%Y-%m-%d} --to {end:%Y-%m-%d}"
    incident = start.replace(day=incident_day(start))
    next_day = incident + timedelta(days=1)
    out += [
        "",
        "Try next:",
        f"  tsmeter {run.flags} metric list",
        f"  tsmeter {run.flags} usage summary api_calls --period daily {date}",
        f"  tsmeter {run.flags} usage summary response_ms --period hourly "
        f"--subject-id {INCIDENT_ORG} --from {incident:%Y-%m-%d} --to {next_day:%Y-%m-%d}",
        f"  tsmeter {run.flags} --format json usage summary storage_gb --period monthly {date}",
        f"  tsmeter {run.flags} threshold list",
        f"  tsmeter {run.flags} usage export compute_minutes -o compute_minutes.csv",
        f"  tsmeter {run.flags} usage import compute_minutes.csv   # all already recorded",
        "",
    ]
    return out


def _daily_chart(meter: Meter, run: _Run, incident_org: str) -> list[str]:
    """Daily api_calls as horizontal bars, then an hour-of-day sparkline."""
    zone = meter.calendar.zone
    daily: dict[datetime, float] = defaultdict(float)
    for row in meter.get_usage_summaries("api_calls", "DAILY", start=run.start, end=run.end):
        daily[row.period_start] += row.total_quantity
    hourly: dict[int, float] = defaultdict(float)
    for row in meter.get_usage_summaries("api_calls", "HOURLY", start=run.start, end=run.end):
        hourly[row.period_start.astimezone(zone).hour] += row.total_quantity
    peak = max(daily.values(), default=0.0)
    out = ["Daily api_calls, all organisations"]
    for day in sorted(daily):
        local = day.astimezone(zone)
        spike = (
            "  <- " + incident_org + " retry storm" if (local.day == incident_day(local)) else ""
        )
        out.append(f"  {local:%a %d}  {bar(daily[day], peak, 40):<40}  {daily[day]:>9,.0f}{spike}")
    hours = [hourly.get(h, 0.0) for h in range(24)]
    out += [
        "",
        f"api_calls by hour of day ({meter.timezone}):",
        f"  {sparkline(hours)}",
        "  0     6     12    18   23",
    ]
    return out


def _limit_section(api: Sequence[UsageSummary], limit: float) -> list[str]:
    """Each organisation's api_calls against the demo's plan limit."""
    warn = limit * 0.8
    out = [f"Plan limit: {limit:,.0f} api_calls per org per month, warning at 80 % ({warn:,.0f})"]
    rows = []
    below = 0
    for row in sorted(api, key=lambda r: (-r.total_quantity, r.subject_id)):
        share = row.total_quantity / limit
        if row.total_quantity < warn:
            below += 1
            continue
        status = "exceeded" if row.total_quantity >= limit else "approaching"
        rows.append([row.subject_id, f"{row.total_quantity:,.0f}", f"{share:.0%}", status])
    out += [
        "  " + line
        for line in table_lines(["ORG", "API CALLS", "OF LIMIT", "STATUS"], rows, {1, 2})
    ]
    out.append(f"  {below} other organisations below 80 %")
    return out
