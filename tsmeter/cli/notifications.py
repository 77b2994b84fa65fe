"""``tsmeter notifications``: the delivery log of threshold notifications, and retries."""

from __future__ import annotations

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import Column, emit_list, emit_one, json_fields
from tsmeter.cli.params import usage_error
from tsmeter.notify import Delivery, DeliveryStatus, Notifier, NotifySettings, log_path_of

__all__ = ["notifications"]

_COLUMNS = [
    Column("ID", "id"),
    Column("EVENT", "event"),
    Column("CHANNEL", "channel"),
    Column("TARGET", "target"),
    Column("SUBJECT", "subject_id"),
    Column("STATUS", "status"),
    Column("ATTEMPTS", "attempts", right=True),
    Column("NEXT ATTEMPT", "next_attempt_at"),
    Column("LAST ERROR", "last_error"),
]
_STATUSES = click.Choice([s.value for s in DeliveryStatus], case_sensitive=False)


def _notifier(state: CliState, settings: NotifySettings) -> Notifier:
    """A Notifier without a worker on the store's delivery log."""
    return Notifier(settings, log_path_of(state.meter()), worker=False)


@click.group()
def notifications() -> None:
    """Threshold notifications (email, webhook): the delivery log and retries.

    Settings come from TSMETER_SMTP_* and TSMETER_WEBHOOK_SECRET (see the README).

    \b
    Example:
        tsmeter notifications list --status failed
        tsmeter notifications retry --failed
    """


@notifications.command(name="list")
@click.option("--status", type=_STATUSES, default=None, help="Only deliveries in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N deliveries.")
@pass_state
def list_(state: CliState, status: str | None, limit: int | None) -> None:
    """List notification deliveries, oldest first.

    \b
    Example:
        tsmeter notifications list --status pending
        tsmeter --format json notifications list --status failed
    """
    notifier = _notifier(state, NotifySettings())
    try:
        items = notifier.deliveries(status, limit)
    finally:
        notifier.close()
    emit_list(state, items, _COLUMNS, fields=json_fields(Delivery), empty="No deliveries.")


@notifications.command()
@click.option("--failed", "requeue", is_flag=True, help="Re-queue failed deliveries first.")
@click.option("--id", "ids", metavar="ID", multiple=True, help="With --failed: only this one.")
@pass_state
def retry(state: CliState, requeue: bool, ids: tuple[str, ...]) -> None:
    """Attempt every pending delivery that is due, once, and print what happened.

    The same pass a running notifier makes in the background. With --failed,
    deliveries that had given up are made pending again first (with a fresh
    attempt budget), e.g. after fixing the SMTP settings.

    \b
    Example:
        tsmeter notifications retry
        tsmeter notifications retry --failed --id 5f0c1f9e-...
    """
    if ids and not requeue:
        raise usage_error("--id needs --failed")
    notifier = _notifier(state, NotifySettings.from_env())
    try:
        requeued = notifier.retry_failed(list(ids) or None) if requeue else 0
        counts = notifier.deliver_pending()
    finally:
        notifier.close()
    row = {"requeued": requeued, **counts.to_json_dict()}
    parts = [f"Delivered {counts.delivered}", f"deferred {counts.deferred}"]
    parts.append(f"failed {counts.failed}")
    if requeue:
        parts.append(f"re-queued {requeued}")
    waiting = f"; {counts.skipped} emails wait for TSMETER_SMTP_HOST" if counts.skipped else ""
    text = ", ".join(parts) + waiting + "."
    emit_one(state, row, text=text)
