"""``tsmeter metric``: define, change, delete and show metric definitions."""

from __future__ import annotations

from typing import Any

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import Column, emit_list, emit_one, json_fields
from tsmeter.cli.params import AGGREGATIONS, RESET_PERIODS, ROUNDINGS, org_option, usage_error
from tsmeter.domain import MetricDefinition
from tsmeter.domain.quantities import DEFAULT_PRECISION, MAX_PRECISION

__all__ = ["metric"]

_NONE = {"rounding": "refuse"}  # a metric without rounding refuses extra decimal places

_COLUMNS = [
    Column("KEY", "key"),
    Column("AGGREGATION", "aggregation_type"),
    Column("UNIT", "unit"),
    Column("RESET", "reset_period"),
    Column("PRECISION", "precision", right=True),
    Column("ROUNDING", "rounding", none="refuse"),
    Column("ORG", "org_id"),
    Column("NAME", "name"),
]


def _fields(**options: Any) -> dict[str, Any]:
    """The options that were given, as Meter keyword arguments (enums upper-cased;
    ``--rounding refuse`` is ``rounding=None``: more decimal places are refused)."""
    fields = {k: v for k, v in options.items() if v is not None}
    for key in ("aggregation_type", "reset_period", "rounding"):
        if key in fields:
            fields[key] = str(fields[key]).upper()
    if fields.get("rounding") == "REFUSE":
        fields["rounding"] = None
    return fields


def _definition_options(fn: Any) -> Any:
    """The options that describe a metric (shared by define and update)."""
    for decorator in reversed(
        [
            click.option("--name", default=None, help="Human-readable name."),
            click.option("--description", default=None, help="What the metric measures."),
            click.option("--unit", default=None, help="Unit of a quantity, e.g. calls or GB."),
            click.option(
                "--aggregation-type",
                "-a",
                "aggregation_type",
                type=AGGREGATIONS,
                default=None,
                help="How records combine per period [define default: sum].",
            ),
            click.option(
                "--reset-period",
                type=RESET_PERIODS,
                default=None,
                help="When running usage restarts [define default: monthly].",
            ),
            click.option(
                "--precision",
                type=click.IntRange(0, MAX_PRECISION),
                default=None,
                help="Decimal places a quantity keeps, 0 to 12; quantities are stored as "
                f"exact integers of that many places [define default: {DEFAULT_PRECISION}]; "
                "fixed once the metric is defined.",
            ),
            click.option(
                "--rounding",
                type=ROUNDINGS,
                default=None,
                help="How a value with more decimal places is rounded (half_even, half_up: "
                "to nearest; up, down: away from or toward zero; ceiling, floor); refuse: "
                "such a value is an error [define default: refuse].",
            ),
        ]
    ):
        fn = decorator(fn)
    return fn


@click.group()
def metric() -> None:
    """Define and inspect metrics (what usage is counted in).

    \b
    Example:
        tsmeter metric define api_calls --aggregation-type count --unit calls
        tsmeter metric define spend_usd --unit USD --precision 2 --rounding half_even
        tsmeter metric list
    """


@metric.command()
@click.argument("key")
@_definition_options
@org_option("Define the metric for this organisation only (default: global).")
@pass_state
def define(
    state: CliState,
    key: str,
    name: str | None,
    description: str | None,
    unit: str | None,
    aggregation_type: str | None,
    reset_period: str | None,
    precision: int | None,
    rounding: str | None,
    org_id: str | None,
) -> None:
    """Define a metric KEY; it is an error if KEY exists in that scope.

    Quantities are exact decimals with --precision places (default 6). A value
    with more places is refused unless --rounding says how to round it.

    \b
    Example:
        tsmeter metric define storage_gb --aggregation-type max --unit GB \\
            --name "Storage" --reset-period monthly
        tsmeter metric define spend_usd --unit USD --precision 2 --rounding half_up
    """
    fields = _fields(
        name=name,
        description=description,
        unit=unit,
        aggregation_type=aggregation_type,
        reset_period=reset_period,
        precision=precision,
        rounding=rounding,
    )
    item = state.meter().define_metric(key, org_id=org_id, **fields)
    emit_one(state, item, none=_NONE)


@metric.command()
@click.argument("key")
@_definition_options
@org_option()
@pass_state
def update(
    state: CliState,
    key: str,
    name: str | None,
    description: str | None,
    unit: str | None,
    aggregation_type: str | None,
    reset_period: str | None,
    precision: int | None,
    rounding: str | None,
    org_id: str | None,
) -> None:
    """Change a metric's name, description, unit, aggregation type, reset period,
    precision or rounding.

    Only the options given change. Summaries keep their components, so a new
    aggregation type applies to past periods as well. The precision is fixed
    once the metric is defined (its values are stored as integers of its
    places); a new rounding applies to values recorded from then on.

    \b
    Example:
        tsmeter metric update api_calls --unit requests --name "API requests"
        tsmeter metric update spend_usd --rounding refuse
    """
    changes = _fields(
        name=name,
        description=description,
        unit=unit,
        aggregation_type=aggregation_type,
        reset_period=reset_period,
        precision=precision,
        rounding=rounding,
    )
    if not changes:
        raise usage_error("nothing to change: give at least one option")
    emit_one(state, state.meter().update_metric(key, org_id, **changes), none=_NONE)


@metric.command()
@click.argument("key")
@click.option("--purge", is_flag=True, help="Also delete the metric's records and summaries.")
@org_option()
@pass_state
def delete(state: CliState, key: str, purge: bool, org_id: str | None) -> None:
    """Delete the metric KEY; its records stay unless --purge is given.

    \b
    Example:
        tsmeter metric delete old_metric --purge
    """
    purged = state.meter().delete_metric(key, org_id, purge=purge)
    text = f"Deleted metric {key!r}" + (f" and {purged} records." if purge else ".")
    emit_one(state, {"deleted": key, "orgId": org_id, "purgedRecords": purged}, text=text)


@metric.command()
@click.argument("key")
@org_option()
@pass_state
def get(state: CliState, key: str, org_id: str | None) -> None:
    """Show the metric KEY.

    \b
    Example:
        tsmeter --format json metric get api_calls
    """
    emit_one(state, state.meter().get_metric(key, org_id), none=_NONE)


@metric.command(name="list")
@org_option("List this organisation's metrics (default: global ones).")
@click.option("--all-orgs", is_flag=True, help="List the metrics of every scope.")
@pass_state
def list_(state: CliState, org_id: str | None, all_orgs: bool) -> None:
    """List metric definitions.

    \b
    Example:
        tsmeter metric list --all-orgs
    """
    if org_id is not None and all_orgs:
        raise usage_error("give --org-id or --all-orgs, not both")
    items = state.meter().list_metrics(org_id, all_orgs=all_orgs)
    emit_list(
        state, items, _COLUMNS, fields=json_fields(MetricDefinition), empty="No metrics defined."
    )
