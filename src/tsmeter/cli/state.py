"""``tsmeter state``: the shared state store on PostgreSQL (fleet mode)."""

from __future__ import annotations

import click

from tsmeter.bootstrap import ENV_STATE_URL, migrate_state, resolve_state_url
from tsmeter.cli.context import CliState, pass_state
from tsmeter.errors import ValidationError

__all__ = ["state"]


@click.group("state")
def state() -> None:
    """The PostgreSQL state store a fleet of hosts shares (metrics, thresholds, alerts,
    notifications, job leases, the id ledger). Its URL comes from --url, else the store
    URL's state= parameter, else $TSMETER_STATE_URL.

    \b
    Example:
        tsmeter state migrate --url postgresql://meter:pw@127.0.0.1:5432/tsmeter
    """


def _url(cli_state: CliState, url: str | None) -> str:
    found = url or resolve_state_url(cli_state.store)
    if not found:
        raise ValidationError(
            "url", f"no PostgreSQL state store named (give --url, state= or ${ENV_STATE_URL})"
        )
    return found


@state.command()
@click.option("--url", help="The state store's postgresql:// URL.")
@click.option("--dry-run", is_flag=True, help="Show the pending migrations; apply nothing.")
@pass_state
def migrate(cli_state: CliState, url: str | None, dry_run: bool) -> None:
    """Apply the schema migrations this version has and the state store lacks, in order, in
    one transaction (safe while other hosts start: they wait for it, then find none left).

    \b
    Example:
        tsmeter state migrate --dry-run
    """
    done, before = migrate_state(_url(cli_state, url), dry_run=dry_run)
    verb = "would apply" if dry_run else "applied"
    for name in done:
        click.echo(f"{verb} {name}")
    if not done:
        click.echo(f"up to date ({len(before)} migrations applied before)")


@state.command()
@click.option("--url", help="The state store's postgresql:// URL.")
@pass_state
def status(cli_state: CliState, url: str | None) -> None:
    """Show the state store's schema: the migrations applied and those this version would
    apply (exit status 1 while any is pending).

    \b
    Example:
        tsmeter state status --url postgresql://meter:pw@127.0.0.1:5432/tsmeter
    """
    pending, before = migrate_state(_url(cli_state, url), dry_run=True)
    for name in before:
        click.echo(f"applied {name}")
    for name in pending:
        click.echo(f"pending {name}")
    if pending:
        raise SystemExit(1)
