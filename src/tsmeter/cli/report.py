"""``tsmeter report``: a self-contained HTML report of usage, limits and alerts."""

from __future__ import annotations

from datetime import datetime

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import emit_one
from tsmeter.cli.params import PERIODS, range_options, usage_error
from tsmeter.domain import PeriodType
from tsmeter.domain.validation import from_ns, to_ns
from tsmeter.extras import require
from tsmeter.files import replaced_whole
from tsmeter.reporting import chart_count, gather, render

__all__ = ["report"]


@click.command()
@range_options("default: the current month")
@click.option(
    "--metric",
    "metrics",
    metavar="KEY",
    multiple=True,
    help="Report this metric (repeat for several) [default: every metric].",
)
@click.option(
    "--period",
    type=PERIODS,
    default=None,
    help="Period of the usage-over-time charts [default: hourly up to 3 days, daily up to "
    "about 3 months, monthly up to 3 years, then yearly].",
)
@click.option(
    "--top",
    type=click.IntRange(min=1, max=100),
    default=10,
    show_default=True,
    help="How many subjects the top-subjects and threshold charts show.",
)
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    default="tsmeter-report.html",
    show_default=True,
    help="HTML file to write.",
)
@pass_state
def report(
    state: CliState,
    start: str | None,
    end: str | None,
    metrics: tuple[str, ...],
    period: str | None,
    top: int,
    output: str,
) -> None:
    """Write an HTML report of usage, thresholds and alerts for a period.

    For each metric: its usage per hour, day or month (the metric's
    aggregation over every record of the period), the top subjects, each
    subject's usage against every threshold (the limit drawn), and the alerts
    opened or resolved in the period or about a window overlapping it. Periods
    are calendar periods in --timezone. Numbers are exact: tables beside the
    charts give every digit.

    The file is self-contained (inline SVG charts, no script, nothing fetched
    from a network), so it can be mailed or archived. A new FILE is created
    readable by its owner only (0600); an existing FILE is replaced whole and
    keeps its permissions. Needs the report extra: pip install 'tsmeter[report]'.

    \b
    Example:
        tsmeter report -o usage.html
        tsmeter --timezone Europe/Paris report --from 2026-03-01 --to 2026-04-01 \\
            --metric api_calls --metric storage_gb --top 5 -o march.html
    """
    require("report")
    first, last = _range(state, start, end)
    data = gather(
        state.meter(),
        first,
        last,
        metrics=metrics,
        period=PeriodType(period.upper()) if period else None,
        top=top,
    )
    _write(output, render(data))
    charts = chart_count(data)
    doc = {
        "output": output,
        "from": data.start.isoformat(),
        "to": data.end.isoformat(),
        "timezone": data.timezone,
        "metrics": len(data.metrics),
        "charts": charts,
    }
    emit_one(
        state,
        doc,
        text=f"Wrote {output}: {len(data.metrics)} metrics, {charts} charts, "
        f"{data.start:%Y-%m-%d %H:%M} to {data.end:%Y-%m-%d %H:%M} ({data.timezone}).",
    )


def _range(state: CliState, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """The report's ``[from, to)``: the current month by default; a --from alone runs to the
    end of the current month (of its own month if later), a --to alone from the start of
    the month it ends in."""
    first = state.when("--from", start)
    last = state.when("--to", end)
    if first is not None and last is not None:
        if first >= last:
            raise usage_error(f"--to ({end}) must be after --from ({start})")
        return first, last
    calendar = state.meter().calendar
    if last is not None:
        return from_ns(calendar.start_of(PeriodType.MONTHLY, to_ns(last) - 1)), last
    month_start, month_end = state.current_month()
    if first is None:
        return month_start, month_end
    if first < month_end:
        return first, month_end
    return first, from_ns(calendar.bounds(PeriodType.MONTHLY, to_ns(first))[1])


def _write(output: str, text: str) -> None:
    """Write ``text`` to ``output`` whole (see :func:`~tsmeter.files.replaced_whole`)."""
    try:
        with replaced_whole(output) as out:
            out.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
