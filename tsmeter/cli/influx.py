"""``tsmeter influx``: administer an InfluxDB store."""

from __future__ import annotations

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.errors import ValidationError

__all__ = ["influx"]


@click.group()
def influx() -> None:
    """Administer the InfluxDB store named by --store (influxdb://HOST:PORT/DATABASE).

    \b
    Example:
        tsmeter --store influxdb://127.0.0.1:8086/metering influx init
    """


@influx.command()
@pass_state
def init(state: CliState) -> None:
    """Create the database of the store if it does not exist (safe to run again).

    \b
    Example:
        tsmeter --store "influxdb://127.0.0.1:8086/metering?state=state.db" influx init
    """
    store = state.meter().store
    create = getattr(store, "init", None)
    if create is None:
        raise ValidationError("store", "is not an InfluxDB store (give --store influxdb://...)")
    create()
    click.echo(f"Database {store.config.database!r} is ready.")  # type: ignore[attr-defined]


@influx.command("install-rollups")
@click.option("--every", default="1m", show_default=True, help="How often the queries run.")
@click.option(
    "--lateness",
    default="3h",
    show_default=True,
    help="How far back hourly summaries are recomputed (daily: 2d, weekly: 8d).",
)
@pass_state
def install_rollups(state: CliState, every: str, lateness: str) -> None:
    """Create continuous queries that keep hourly, daily and weekly summaries up to date
    inside InfluxDB 1.x, in --timezone (monthly and yearly stay with `tsmeter aggregate`).

    \b
    Example:
        tsmeter --store influxdb://127.0.0.1:8086/metering --timezone Europe/Paris \\
            influx install-rollups --every 1m --lateness 6h
    """
    from tsmeter.adapters.influxdb.cq import install
    from tsmeter.domain import PeriodType

    meter = state.meter()
    client = getattr(meter.store, "client", None)
    if client is None:
        raise ValidationError("store", "is not an InfluxDB store (give --store influxdb://...)")
    lateness_by_period = {
        PeriodType.HOURLY: lateness, PeriodType.DAILY: "2d", PeriodType.WEEKLY: "8d"
    }  # fmt: skip
    for name in install(client, meter.timezone, every=every, lateness=lateness_by_period):
        click.echo(f"continuous query {name} installed")
