"""``tsmeter aggregate``: roll records up into summaries."""

from __future__ import annotations

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import Column, emit_list, json_fields, progress
from tsmeter.cli.params import PERIODS, range_options, usage_error
from tsmeter.domain import AggregationResult, PeriodType

__all__ = ["aggregate"]

_COLUMNS = [
    Column("PERIOD", "period_type"),
    Column("SUMMARIES", "summaries_written", right=True),
    Column("PERIODS", "periods_recomputed", right=True),
    Column("RECORDS", "records_seen", right=True),
    Column("FROM", "range_start"),
    Column("TO", "range_end"),
]


@click.command()
@click.option(
    "--period",
    "periods",
    type=PERIODS,
    multiple=True,
    help="Period type to aggregate; repeatable [default: --all].",
)
@click.option("--all", "all_periods", is_flag=True, help="Every period type, hourly to yearly.")
@range_options("default: every period touched since the last run")
@pass_state
def aggregate(
    state: CliState,
    periods: tuple[str, ...],
    all_periods: bool,
    start: str | None,
    end: str | None,
) -> None:
    """Roll records up into summaries, in the configured time zone.

    Without --from/--to the run is incremental: every period that received
    records since the last run is recomputed, late records included. With a
    range, every period overlapping it is recomputed. Re-running gives the
    same summaries. Queries never need it (they include new records), but
    stored summaries make them fast. On a terminal a progress bar counts the
    period types done.

    \b
    Example:
        tsmeter aggregate --all
        tsmeter aggregate --period daily --period monthly --from 2026-01-01 --to 2026-02-01
    """
    if periods and all_periods:
        raise usage_error("give --period or --all, not both")
    chosen = {p.upper() for p in periods}
    order = [p for p in PeriodType if not chosen or p.value in chosen]
    meter = state.meter()
    lo, hi = state.when("--from", start), state.when("--to", end)
    results: list[AggregationResult] = []
    # on a terminal, a bar over the period types (each a roll-up of its own)
    with progress(len(order), "Aggregating") as (advance, _say):
        for period in order:
            results.append(meter.aggregate(period, lo, hi))
            advance(1)
    emit_list(state, results, _COLUMNS, fields=json_fields(AggregationResult))
