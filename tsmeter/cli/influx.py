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
