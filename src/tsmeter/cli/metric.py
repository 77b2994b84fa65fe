"""``tsmeter metric``: define, change, delete and show metric definitions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import Column, emit_list, emit_one, json_fields
from tsmeter.cli.params import AGGREGATIONS, RESET_PERIODS, ROUNDINGS, org_option, usage_error
from tsmeter.domain import Dimension, MetricDefinition
from tsmeter.domain.properties import MAX_DIMENSION_VALUES, TimeUnit
from tsmeter.domain.quantities import DEFAULT_PRECISION, MAX_PRECISION
from tsmeter.metering.properties import describe_dimensions

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
    Column("DIMENSIONS", "dimensions"),
    Column("UNIQUE", "unique_property"),
    Column("NAME", "name"),
]
TIME_UNITS = click.Choice([u.value.lower() for u in TimeUnit], case_sensitive=False)


def _fields(**options: Any) -> dict[str, Any]:
    """The options that were given, as Meter keyword arguments (enums upper-cased;
    ``--rounding refuse`` is ``rounding=None``: more decimal places are refused)."""
    fields = {k: v for k, v in options.items() if v is not None}
    for key in ("aggregation_type", "reset_period", "rounding", "time_unit"):
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
                help="How records combine per period: count, sum, avg, max, min, last;"
                " unique_count (distinct values of --unique-property); time_weighted_sum"
                " (each reading held until the next, in value x --time-unit) [define"
                " default: sum].",
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
            click.option(
                "--dimension",
                "dimensions",
                multiple=True,
                metavar="NAME[:MAX]",
                help="A record property (metadata key) usage can be grouped and filtered by,"
                " with at most MAX distinct values fleet-wide (default 100, at most"
                f" {MAX_DIMENSION_VALUES}; each is an InfluxDB tag value); repeat for"
                " more. Names are fixed once the metric is defined; update changes a bound.",
            ),
            click.option(
                "--dimension-values",
                "dimension_values",
                multiple=True,
                metavar="NAME=A,B,...",
                help="Close dimension NAME to these values (declaring it if --dimension"
                " does not); a record with another value is refused.",
            ),
            click.option(
                "--unique-property",
                default=None,
                metavar="NAME",
                help="For unique_count: the record property whose distinct values are"
                " counted (e.g. user_id); fixed once the metric is defined.",
            ),
            click.option(
                "--time-unit",
                type=TIME_UNITS,
                default=None,
                help="For time_weighted_sum: usage is value x this unit (hour: GB-hours)"
                " [define default: hour]; fixed once the metric is defined.",
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
        tsmeter metric define tokens --dimension model --dimension-values region=eu,us
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
    dimensions: tuple[str, ...],
    dimension_values: tuple[str, ...],
    unique_property: str | None,
    time_unit: str | None,
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
        tsmeter metric define tokens --dimension model:50 \\
            --dimension-values region=eu,us
        tsmeter metric define active_users -a unique_count --unique-property user_id
        tsmeter metric define storage_gb -a time_weighted_sum --time-unit day
    """
    fields = _fields(
        name=name,
        description=description,
        unit=unit,
        aggregation_type=aggregation_type,
        reset_period=reset_period,
        precision=precision,
        rounding=rounding,
        unique_property=unique_property,
        time_unit=time_unit,
    )
    declared = _dimensions((), dimensions, dimension_values)
    if declared:
        fields["dimensions"] = declared
    item = state.meter().define_metric(key, org_id=org_id, **fields)
    _emit(state, item)


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
    dimensions: tuple[str, ...],
    dimension_values: tuple[str, ...],
    unique_property: str | None,
    time_unit: str | None,
    org_id: str | None,
) -> None:
    """Change a metric's name, description, unit, aggregation type, reset period,
    rounding, or the bound or values of a dimension.

    Only the options given change. Summaries keep their components, so a new
    aggregation type applies to past periods as well. The precision is fixed
    once the metric is defined (its values are stored as integers of its
    places); a new rounding applies to values recorded from then on. So are
    the names of its dimensions, its unique property and time unit, and a
    unique_count or time_weighted_sum stays one; --dimension and
    --dimension-values change the dimensions they name, the others stay.

    \b
    Example:
        tsmeter metric update api_calls --unit requests --name "API requests"
        tsmeter metric update spend_usd --rounding refuse
        tsmeter metric update tokens --dimension model:500
    """
    changes = _fields(
        name=name,
        description=description,
        unit=unit,
        aggregation_type=aggregation_type,
        reset_period=reset_period,
        precision=precision,
        rounding=rounding,
        unique_property=unique_property,
        time_unit=time_unit,
    )
    meter = state.meter()
    if dimensions or dimension_values:
        current = meter.get_metric(key, org_id).dimensions
        changes["dimensions"] = _dimensions(current, dimensions, dimension_values)
    if not changes:
        raise usage_error("nothing to change: give at least one option")
    _emit(state, meter.update_metric(key, org_id, **changes))


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
    _emit(state, state.meter().get_metric(key, org_id))


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
    rows = [_table_row(m) for m in items] if state.fmt == "table" else items
    emit_list(
        state, rows, _COLUMNS, fields=json_fields(MetricDefinition), empty="No metrics defined."
    )


def _dimensions(
    current: Sequence[Dimension], named: Sequence[str], closed: Sequence[str]
) -> list[dict[str, Any]]:
    """The dimensions ``current`` becomes with ``--dimension NAME[:MAX]`` (``named``) and
    ``--dimension-values NAME=A,B`` (``closed``): a dimension they name is changed (or added),
    the others stay, in their order."""
    out: dict[str, dict[str, Any]] = {
        d.name: d.model_dump(exclude_none=True, by_alias=False) for d in current
    }
    for option in named:
        name, colon, bound = option.partition(":")
        entry = out.setdefault(name, {"name": name})
        if colon:
            if not bound.strip().isdigit():
                raise usage_error(
                    f"--dimension {option!r}: MAX must be a whole number (NAME or NAME:MAX)"
                )
            entry["max_values"] = int(bound)
    for option in closed:
        name, equals, values = option.partition("=")
        if not equals or not values:
            raise usage_error(f"--dimension-values {option!r}: give NAME=A,B,...")
        out.setdefault(name, {"name": name})["values"] = values.split(",")
    return list(out.values())


def _table_row(item: MetricDefinition) -> dict[str, Any]:
    """A metric as a table shows it: its dimensions in one line."""
    row = {name: getattr(item, name) for name in type(item).model_fields}
    row["dimensions"] = describe_dimensions(item.dimensions) if item.dimensions else None
    return row


def _emit(state: CliState, item: MetricDefinition) -> None:
    """Print one metric (in a table: field lines, its dimensions in one line)."""
    if state.fmt != "table":
        emit_one(state, item, none=_NONE)
        return
    row = _table_row(item)
    fields = type(item).model_fields
    emit_one(state, {fields[name].alias or name: row[name] for name in fields}, none=_NONE)
