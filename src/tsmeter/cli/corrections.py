"""``tsmeter usage cancel``, ``usage amend`` and ``usage corrections``: correct stored records
(each correction kept in an audit trail, with who and why) and read that trail."""

from __future__ import annotations

import getpass
from decimal import Decimal

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import Column, emit_list, emit_one, format_number, json_fields
from tsmeter.cli.params import NUMBER, org_option, range_options
from tsmeter.domain.corrections import Correction

__all__ = ["amend", "cancel", "corrections"]

_COLUMNS = [
    Column("CORRECTED AT", "corrected_at"),
    Column("KIND", "kind"),
    Column("RECORD ID", "record_id"),
    Column("METRIC", "metric_key"),
    Column("SUBJECT ID", "subject_id"),
    Column("BEFORE", "quantity_before", right=True),
    Column("AFTER", "quantity_after", right=True),
    Column("ACTOR", "actor"),
    Column("REASON", "reason"),
]


def _login() -> str:
    """Who runs the command, as the default actor."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def _reason_option(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option(
        "--correction-id",
        metavar="KEY",
        help="Idempotency key of this correction [default: derived from what it does, so "
        "running the same command again changes nothing].",
    )(fn)
    fn = click.option(
        "--actor",
        metavar="NAME",
        default=_login,
        show_default="your login name",
        help="Who makes the correction (kept in the audit trail).",
    )(fn)
    return click.option(
        "--reason",
        metavar="TEXT",
        required=True,
        help="Why the record is corrected (kept in the audit trail).",
    )(fn)


def _said(correction: Correction) -> str:
    """One sentence saying what a cancel or amend did."""
    before = format_number(correction.quantity_before)
    after = format_number(correction.quantity_after)
    what = (
        f"Cancelled record {correction.record_id} (quantity {before} no longer counts)"
        if correction.kind.value == "CANCEL"
        else f"Amended record {correction.record_id}: quantity {before} -> {after}"
    )
    if not correction.applied:
        what = f"Nothing changed: correction {correction.id} was made before. {what}"
    else:
        what += f"; correction {correction.id}"
    return (
        f"{what}. Metric {correction.metric_key}, subject {correction.subject_type}/"
        f"{correction.subject_id}; every read counts it from now on."
    )


@click.command()
@click.argument("record_id", metavar="RECORD_ID")
@_reason_option
@pass_state
def cancel(
    state: CliState, record_id: str, reason: str, actor: str, correction_id: str | None
) -> None:
    """Cancel the stored record RECORD_ID: it no longer counts in any usage.

    Its id stays known, so recording it again counts nothing. Accepted within the
    correction window after the record's time (90 days by default). Running the
    same command again changes nothing (it says so).

    \b
    Example:
        tsmeter usage cancel req-42 --reason "duplicate import, ticket 4411"
    """
    correction = state.meter().cancel_record(
        record_id, reason=reason, actor=actor, correction_id=correction_id
    )
    emit_one(state, correction, text=_said(correction))


@click.command()
@click.argument("record_id", metavar="RECORD_ID")
@click.argument("quantity", type=NUMBER)
@_reason_option
@pass_state
def amend(
    state: CliState,
    record_id: str,
    quantity: Decimal,
    reason: str,
    actor: str,
    correction_id: str | None,
) -> None:
    """Replace the quantity of the stored record RECORD_ID with QUANTITY.

    Only the quantity changes: a record of the wrong subject or time is
    cancelled and recorded anew. A cancelled record cannot be amended. Put --
    before a negative QUANTITY.

    \b
    Example:
        tsmeter usage amend req-42 12.5 --reason "meter read twice" --actor billing-ops
    """
    correction = state.meter().amend_record(
        record_id, quantity, reason=reason, actor=actor, correction_id=correction_id
    )
    emit_one(state, correction, text=_said(correction))


@click.command()
@click.argument("metric_key", metavar="[METRIC]", required=False)
@click.option("--record-id", metavar="ID", help="Only the corrections of this record.")
@range_options("of the corrected records' times; default: unbounded")
@org_option("The org's own METRIC, or without METRIC every metric of that org.")
@pass_state
def corrections(
    state: CliState,
    metric_key: str | None,
    record_id: str | None,
    start: str | None,
    end: str | None,
    org_id: str | None,
) -> None:
    """Show the audit trail of corrections, oldest first (of METRIC, or every metric).

    \b
    Example:
        tsmeter usage corrections tokens --from 2026-11 --to 2026-12
        tsmeter --format csv usage corrections --record-id req-42
    """
    found = state.meter().list_corrections(
        metric_key,
        org_id=org_id,
        record_id=record_id,
        start=state.when("--from", start),
        end=state.when("--to", end),
    )
    emit_list(state, found, _COLUMNS, fields=json_fields(Correction), empty="No corrections.")
