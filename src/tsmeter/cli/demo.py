"""``tsmeter demo``: a month of realistic usage, recorded, aggregated and reported."""

from __future__ import annotations

import re
import shlex
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.demo_data import (
    INCIDENT_ORG,
    METRICS,
    ORGS,
    PREPAID_ORG,
    generate,
    incident_day,
    month_bounds,
)
from tsmeter.cli.output import progress, table_lines
from tsmeter.domain import (
    AggregationResult,
    AggregationType,
    EvaluationResult,
    PeriodType,
    ThresholdAction,
    UsageAlert,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.quantities import avg_units, from_units, to_units
from tsmeter.domain.validation import from_ns
from tsmeter.errors import QuotaExceededError
from tsmeter.limits.quotas import QuotaDecision
from tsmeter.metering.meter import Meter

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


def _n(value: Decimal | float) -> str:
    """An exact quantity with thousands separators and its own decimal places.

    >>> _n(Decimal("1234567.80")), _n(Decimal("12E+3")), _n(20.0), _n(2.5)
    ('1,234,567.80', '12,000', '20', '2.5')
    """
    if isinstance(value, float):
        value = Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
    return format(value, ",f")


def _short(value: Decimal) -> str:
    """Like :func:`_n` without the trailing zeros of the fraction (exact, never rounded): a
    limit and its default warn level (80 %: ``432.0``) read ``432``.

    >>> _short(Decimal("432.0")), _short(Decimal("12.50")), _short(Decimal("300"))
    ('432', '12.5', '300')
    """
    text = _n(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _nice(value: Decimal) -> Decimal:
    """``value`` rounded half to even to two significant digits (a plan limit a person
    would choose), as an integer.

    >>> _nice(Decimal("12345.6")), _nice(Decimal("0.4")), _nice(Decimal("75"))
    (Decimal('12000'), Decimal('0'), Decimal('75'))
    """
    step = Decimal(10) ** max(0, max(value, Decimal(1)).adjusted() - 1)
    return Decimal(int((value / step).to_integral_value(ROUND_HALF_EVEN) * step))


def _total(rows: Sequence[UsageSummary], attr: str) -> Decimal:
    """The exact sum of one Decimal field of ``rows``."""
    return sum((getattr(r, attr) for r in rows), Decimal(0))


def month_total(
    agg: AggregationType, rows: Sequence[UsageSummary], precision: int = 0
) -> tuple[Decimal, str]:
    """A metric's total over every subject for one period, and what that number means (an
    AVG: the sum over the count, rounded half to even to ``precision`` places)."""
    if agg is AggregationType.AVG:
        count = sum(r.record_count for r in rows)
        units = to_units("sum", _total(rows, "sum"), precision, None)
        return from_units(avg_units(units, count), precision), "mean of all records"
    meaning = {
        AggregationType.COUNT: "number of records",
        AggregationType.SUM: "sum of all records",
        AggregationType.MAX: "sum of each org's peak",
        AggregationType.MIN: "sum of each org's minimum",
        AggregationType.LAST: "sum of each org's latest value",
    }[agg]
    return _total(rows, "total_quantity"), meaning


@dataclass
class _Thresholds:
    """The thresholds the demo set (each with what it stands for), what evaluating them
    raised, and how the record past the BLOCK threshold went."""

    rules: list[tuple[UsageThreshold, str]]
    evaluation: EvaluationResult
    alerts: list[UsageAlert]
    blocked: list[str]


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
    thresholds: _Thresholds


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

    Defines five metrics (api_calls COUNT, compute_minutes SUM, storage_gb
    MAX, response_ms AVG, credits SUM that never resets), records a month of
    seeded usage by ten organisations (weekday and daytime peaks, one
    incident) through record_batch and aggregates it hourly to yearly. Then it
    sets three thresholds (a plan limit on api_calls and a fair-use limit on
    compute_minutes for every org, and a BLOCK limit on one org's credits),
    evaluates them as of the month's end and tries one record past the BLOCK
    limit. It reports totals, top organisations, a daily chart, the alerts
    raised, the refused record and timings, then suggests commands to try.

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
        meter.define_metric(
            m.key,
            aggregation_type=m.aggregation,
            unit=m.unit,
            name=m.name,
            reset_period=m.reset,
            precision=m.precision,
        )
    recorded_in = 0.0
    count = 0
    with progress(records, "Recording") as (advance, _say):
        for chunk in generate(meter.calendar, start_ns, end_ns, records, seed):
            t0 = time.perf_counter()
            meter.record_batch(chunk)
            recorded_in += time.perf_counter() - t0
            count += len(chunk)
            advance(len(chunk))
    t0 = time.perf_counter()
    aggregations = [meter.aggregate(p) for p in PeriodType]
    aggregated_in = time.perf_counter() - t0
    thresholds = _set_thresholds(meter, from_ns(start_ns), from_ns(end_ns))
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
        thresholds,
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
        value, meaning = month_total(agg, summaries[m.key], m.precision)
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
    out += ["", *_threshold_section(run.thresholds)]
    date = f"--from {start:%Y-%m-%d} --to {end:%Y-%m-%d}"
    incident = start.replace(day=incident_day(start))
    next_day = incident + timedelta(days=1)
    blocking = any(rule.action is ThresholdAction.BLOCK for rule, _ in run.thresholds.rules)
    check = [f"  tsmeter {run.flags} threshold check credits org {PREPAID_ORG}   # exit status 3"]
    out += [
        "",
        "Try next:",
        f"  tsmeter {run.flags} metric list",
        f"  tsmeter {run.flags} usage summary api_calls --period daily {date}",
        f"  tsmeter {run.flags} usage summary response_ms --period hourly "
        f"--subject-id {INCIDENT_ORG} --from {incident:%Y-%m-%d} --to {next_day:%Y-%m-%d}",
        f"  tsmeter {run.flags} --format json usage summary storage_gb --period monthly {date}",
        f"  tsmeter {run.flags} threshold list",
        f"  tsmeter {run.flags} alert list --status pending",
        *(check if blocking else []),
        f"  tsmeter {run.flags} usage export compute_minutes -o compute_minutes.csv",
        f"  tsmeter {run.flags} usage import compute_minutes.csv   # all already recorded",
        "",
    ]
    return out


def _daily_chart(meter: Meter, run: _Run, incident_org: str) -> list[str]:
    """Daily api_calls as horizontal bars, then an hour-of-day sparkline."""
    zone = meter.calendar.zone
    daily: dict[datetime, Decimal] = defaultdict(Decimal)
    for row in meter.get_usage_summaries("api_calls", "DAILY", start=run.start, end=run.end):
        daily[row.period_start] += row.total_quantity
    hourly: dict[int, Decimal] = defaultdict(Decimal)
    for row in meter.get_usage_summaries("api_calls", "HOURLY", start=run.start, end=run.end):
        hourly[row.period_start.astimezone(zone).hour] += row.total_quantity
    peak = float(max(daily.values(), default=0))
    out = ["Daily api_calls, all organisations"]
    for day in sorted(daily):
        local = day.astimezone(zone)
        spike = (
            "  <- " + incident_org + " retry storm" if (local.day == incident_day(local)) else ""
        )
        drawn = bar(float(daily[day]), peak, 40)
        out.append(f"  {local:%a %d}  {drawn:<40}  {_n(daily[day]):>9}{spike}")
    hours = [float(hourly.get(h, 0)) for h in range(24)]
    out += [
        "",
        f"api_calls by hour of day ({meter.timezone}):",
        f"  {sparkline(hours)}",
        "  0     6     12    18   23",
    ]
    return out


def _used(meter: Meter, key: str, start: datetime, end: datetime, org: str | None) -> Decimal:
    """``key``'s usage in ``[start, end)``, of every org or one (exact)."""
    rows = meter.get_usage_summaries(key, "MONTHLY", start=start, end=end, subject_id=org)
    return _total(rows, "total_quantity")


def _set_thresholds(meter: Meter, start: datetime, end: datetime) -> _Thresholds:
    """Set the demo's thresholds from the month's usage, evaluate them as of the month's end,
    then try to record more credits for the org past its BLOCK limit."""
    api = _used(meter, "api_calls", start, end, None)
    compute = _used(meter, "compute_minutes", start, end, None)
    shares = sum(Decimal(repr(o.api_share)) for o in ORGS)
    plan = _nice(api * 23 / shares)
    fair_use = _nice(compute * Decimal("0.21"))
    monthly: dict[str, Any] = {"period_type": "MONTHLY", "action": "ALERT"}
    rules = [
        (meter.create_threshold("api_calls", "org", plan, **monthly), "the plan limit"),
        (meter.create_threshold("compute_minutes", "org", fair_use, **monthly), "fair use"),
    ]
    # A quota decision applies to the window containing the present, and the demo month is
    # over: a monthly BLOCK limit could not refuse a record today. Credits never reset, so
    # their (lifetime) BLOCK limit counts the month's usage and refuses the next record.
    spent = _used(meter, "credits", start, end, PREPAID_ORG)
    if spent > 0:
        pack = _nice(spent * Decimal("0.85"))
        rules.append(
            (
                meter.create_threshold("credits", "org", pack, PREPAID_ORG, action="BLOCK"),
                "a prepaid pack",
            )
        )
    evaluation = meter.evaluate_thresholds(now=end - timedelta(microseconds=1))
    ids = {rule.id for rule, _ in rules}
    alerts = [a for a in meter.list_alerts() if a.threshold_id in ids]
    if spent > 0:
        blocked = _try_past_the_limit(meter)
    else:
        blocked = [f"No BLOCK example: {PREPAID_ORG} spent no credits in so few records."]
    return _Thresholds(rules, evaluation, alerts, blocked)


def _try_past_the_limit(meter: Meter) -> list[str]:
    """Record 20 more credits for the prepaid org with ``enforce=True``: refused."""
    call = f'record("credits", "org", "{PREPAID_ORG}", 20, enforce=True)'
    try:
        meter.record("credits", "org", PREPAID_ORG, 20, id="demo-past-the-pack", enforce=True)
    except QuotaExceededError as exc:
        decision = exc.decision
        assert isinstance(decision, QuotaDecision)
        used, limit = decision.used or Decimal(0), decision.limit or Decimal(0)
        return [
            f"Blocked: {call} raised QuotaExceededError:",
            f"  {PREPAID_ORG} has used {_n(used)} of its {_n(limit)} credits; nothing recorded.",
        ]
    return [f"Not blocked: {call} was recorded."]


def _threshold_section(thresholds: _Thresholds) -> list[str]:
    """The thresholds, the alerts evaluating them raised and the refused record."""
    units = {m.key: m.unit for m in METRICS}
    result = thresholds.evaluation
    out = [
        f"Thresholds, evaluated as of the end of the month ({result.thresholds} thresholds, "
        f"{result.subjects} org checks)"
    ]
    rows = []
    for rule, purpose in thresholds.rules:
        who = "every org" if rule.subject_id == "*" else rule.subject_id
        per = "per month" if rule.period_type is PeriodType.MONTHLY else "lifetime"
        warn = _short(rule.warn_threshold or rule.threshold)
        limit = f"{_short(rule.threshold)} {units[rule.metric_key]}"
        rows.append([rule.metric_key, who, limit, per, warn, rule.action.value, purpose])
    headers = ["METRIC", "FOR", "LIMIT", "WINDOW", "WARN AT", "ACTION", "PURPOSE"]
    out += ["  " + line for line in table_lines(headers, rows, {2, 4})]
    out += ["", f"Alerts raised: {result.exceeded} exceeded, {result.approaching} approaching"]
    actions = {rule.id: rule.action.value for rule, _ in thresholds.rules}
    order = {m.key: i for i, m in enumerate(METRICS)}
    alerts = sorted(
        thresholds.alerts,
        key=lambda a: (a.level != "exceeded", order.get(a.metric_key, 0), -a.percentage),
    )
    rows = [
        [
            a.subject_id,
            a.metric_key,
            a.level,
            _n(a.actual_value),
            _n(a.threshold_value),
            f"{a.percentage:.0f}%",
            actions.get(a.threshold_id, ""),
        ]
        for a in alerts
    ]
    headers = ["ORG", "METRIC", "LEVEL", "USAGE", "LIMIT", "OF LIMIT", "ACTION"]
    out += ["  " + line for line in table_lines(headers, rows, {3, 4, 5})]
    quiet = len(ORGS) - len({a.subject_id for a in alerts})
    out += [f"  {quiet} other organisations raised no alert", ""]
    out += thresholds.blocked
    return out
