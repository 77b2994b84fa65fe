"""``tsmeter apikey``: the HTTP API's keys (see ``docs/access.md``)."""

from __future__ import annotations

import click

from tsmeter.access import ApiKey, ApiKeys, Scope
from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import Column, emit_list, emit_one, json_fields

__all__ = ["apikey"]

SCOPES = click.Choice([s.value for s in Scope], case_sensitive=False)
ONCE = (
    "Warning: this is the only time the key is shown; tsmeter keeps only its hash. Store it "
    "in a secret manager now (a lost key cannot be recovered: create a new one and revoke "
    "this one)."
)

_COLUMNS = [
    Column("ID", "id"),
    Column("NAME", "name"),
    Column("SCOPES", "scopes"),
    Column("CREATED", "created_at"),
    Column("REVOKED", "revoked_at"),
]
#: (attribute, JSON name) of the listed key's fields, which create prints before the key
_FIELDS = [(name, info.alias or name) for name, info in ApiKey.model_fields.items()]


def _keys(state: CliState) -> ApiKeys:
    keys = state.meter(mirror=False).api_keys
    if keys is None:  # connect() always wires one; a Meter built by hand may not
        raise click.ClickException("this store keeps no API keys")
    return keys


@click.group()
def apikey() -> None:
    """Manage the keys of the HTTP API (tsmeter serve).

    A key grants scopes: ingest (record usage), read (read metrics, usage,
    summaries, thresholds and alerts) and admin (everything, including defining
    metrics and thresholds). Keys live hashed in the state store, so every server
    of a fleet accepts the same keys. Rotate a key by creating a new one, moving
    its users over, then revoking the old one.

    \b
    Example:
        tsmeter apikey create billing-service --scope ingest
        tsmeter apikey list
        tsmeter apikey revoke 5e7dba39ab947f8f
    """


@apikey.command()
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    type=SCOPES,
    multiple=True,
    required=True,
    help="A scope the key grants (repeat for several): ingest, read or admin (admin "
    "implies the others).",
)
@pass_state
def create(state: CliState, name: str, scopes: tuple[str, ...]) -> None:
    """Create a key named NAME and print it, once: only its hash is stored.

    NAME is for people (any text up to 256 characters); the key's ID, shown by
    "apikey list", is what "apikey revoke" takes.

    \b
    Example:
        tsmeter apikey create billing-service --scope ingest --scope read
        tsmeter --format json apikey create dashboards --scope read
    """
    issued = _keys(state).create(name, scopes)
    made = issued.api_key
    row = {**{f: getattr(made, n) for n, f in _FIELDS}, "key": issued.key}
    text = (
        f"Created API key {made.id} ({made.name}) with scopes "
        f"{', '.join(s.value for s in made.scopes)}.\n{issued.key}"
    )
    emit_one(state, row, text=text)
    click.echo(ONCE, err=True)


@apikey.command(name="list")
@pass_state
def list_(state: CliState) -> None:
    """List the keys, revoked ones too, oldest first (never the keys themselves).

    \b
    Example:
        tsmeter apikey list
    """
    emit_list(state, _keys(state).list(), _COLUMNS, fields=json_fields(ApiKey),
              empty="No API keys.")  # fmt: skip


@apikey.command()
@click.argument("key_id", metavar="ID")
@pass_state
def revoke(state: CliState, key_id: str) -> None:
    """Revoke the key ID: servers refuse it from now on (those already running within
    a few seconds, as they cache checked keys). Revoking it again changes nothing.

    \b
    Example:
        tsmeter apikey revoke 5e7dba39ab947f8f
    """
    keys = _keys(state)
    revoked = keys.revoke(key_id)
    emit_one(state, revoked, text=f"Revoked API key {revoked.id} ({revoked.name}).")
