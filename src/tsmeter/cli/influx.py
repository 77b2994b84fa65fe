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
    store = state.meter().store
    create = getattr(store, "init", None)
    if create is None:
        raise ValidationError("store", _NOT_INFLUX)
    create()
    kind = "Bucket" if getattr(store, "api", None) is not None else "Database"  # 2.x: a bucket
    click.echo(f"{kind} {store.config.database!r} is ready.")  # type: ignore[attr-defined]


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
    from tsmeter.domain import PeriodType

    meter = state.meter()
    api = getattr(meter.store, "api", None)  # the InfluxDB 2.x store's influxdb-client
    if api is not None:
        from tsmeter.adapters.influxdb.tasks import install as install_tasks
        from tsmeter.adapters.influxdb.tasks import periods_for

        periods = periods_for(meter.list_metrics(all_orgs=True))
        for name in install_tasks(api, meter.timezone, periods, every=every, offset=offset,
                                  lateness=lateness):  # fmt: skip
            click.echo(f"task {name!r} installed")
        return
    from tsmeter.adapters.influxdb.cq import install

    client = getattr(meter.store, "client", None)
    if client is None:
        raise ValidationError("store", _NOT_INFLUX)
    lateness_by_period = {
        PeriodType.HOURLY: lateness, PeriodType.DAILY: "2d", PeriodType.WEEKLY: "8d"
    }  # fmt: skip
    for name in install(client, meter.timezone, every=every, lateness=lateness_by_period):
        click.echo(f"continuous query {name} installed")
