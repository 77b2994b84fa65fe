"""``tsmeter influx``: administer an InfluxDB store."""

from __future__ import annotations

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.errors import ValidationError

__all__ = ["influx"]

_NOT_INFLUX = "is not an InfluxDB store (give --store influxdb://... or influxdb2://...)"


@click.group()
def influx() -> None:
    """Administer the InfluxDB store named by --store (influxdb://HOST:PORT/DATABASE for the
    v1 API, influxdb2://HOST:PORT/BUCKET?org=ORG for InfluxDB 2.x).

    \b
    Example:
        tsmeter --store influxdb://127.0.0.1:8086/metering influx init
    """


@influx.command()
@pass_state
def init(state: CliState) -> None:
    """Create the database (2.x: the bucket) of the store if it does not exist (safe to run
    again).

    \b
    Example:
        tsmeter --store "influxdb://127.0.0.1:8086/metering?state=state.db" influx init
        tsmeter --store "influxdb2://127.0.0.1:8086/metering?org=acme" influx init
    """
    admin = state.meter().capabilities.admin
    if admin is None:
        raise ValidationError("store", _NOT_INFLUX)
    click.echo(f"{admin.init()} is ready.")


@influx.command("install-rollups")
@click.option("--every", default="1m", show_default=True, help="How often the queries run.")
@click.option(
    "--lateness",
    default="3h",
    show_default=True,
    help="How far back hourly summaries are recomputed (daily: 2d, weekly: 8d).",
)
@click.option(
    "--offset",
    default="1m",
    show_default=True,
    help="InfluxDB 2.x: how long each task run waits for data still being written.",
)
@pass_state
def install_rollups(state: CliState, every: str, lateness: str, offset: str) -> None:
    """Keep summaries up to date inside InfluxDB, in --timezone. On 1.x: continuous queries
    for hourly, daily and weekly summaries (monthly and yearly stay with `tsmeter
    aggregate`). On 2.x: one Flux task per period type (hourly, daily, and each period a
    metric resets on), created or updated by name; weekly and monthly tasks run hourly,
    yearly ones daily, and look back 8d, 32d and 367d.

    \b
    Example:
        tsmeter --store influxdb://127.0.0.1:8086/metering --timezone Europe/Paris \\
            influx install-rollups --every 1m --lateness 6h
    """
    meter = state.meter()
    admin = meter.capabilities.admin
    if admin is None:
        raise ValidationError("store", _NOT_INFLUX)
    metrics = meter.list_metrics(all_orgs=True)
    for line in admin.install_rollups(meter.timezone, metrics, every=every, lateness=lateness,
                                      offset=offset):  # fmt: skip
        click.echo(line)


@influx.command()
@pass_state
def convert(state: CliState) -> None:
    """Give the usage points written by earlier versions (a float `quantity`) the integer
    `units` this version stores and sums, at the precision of each metric in the catalog
    (rounded half to even from the float's shortest form; a metric not in the catalog gets
    precision 6), then recompute the stored summaries over the converted range. Until it
    has run on a database holding such points, roll-ups and summaries refuse to run. The
    points keep their time, tags and float; safe to run again. (InfluxDB 1.x and the v1
    API.)

    \b
    Example:
        tsmeter --store "influxdb://127.0.0.1:8086/metering?state=state.db" influx convert
    """
    meter = state.meter()
    admin = meter.capabilities.admin
    if admin is None:
        raise ValidationError("store", _NOT_INFLUX)
    for line in admin.convert(meter.list_metrics(all_orgs=True)):
        click.echo(line)
