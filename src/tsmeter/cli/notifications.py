"""``tsmeter notifications``: the delivery log of threshold notifications, and retries."""

from __future__ import annotations

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import Column, emit_list, emit_one, json_fields
from tsmeter.cli.params import usage_error
from tsmeter.domain.targets import mask_target
from tsmeter.integrations.notify import (
    Delivery,
    DeliveryStatus,
    Notifier,
    NotifySettings,
)

__all__ = ["notifications", "shown"]

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
    """A Notifier without a worker on the store's delivery log (the fleet's shared queue
    where the state is on PostgreSQL)."""
    return Notifier.for_meter(state.meter(), settings, worker=False, attach=False)


@click.group()
def notifications() -> None:
    """Threshold notifications (email, webhook): the delivery log and retries.

    Settings come from TSMETER_SMTP_* and TSMETER_WEBHOOK_SECRET (see the README).
    Targets are shown without their secrets (passwords, query values, tokens).

    \b
    Example:
        tsmeter notifications deliver
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
        items = [shown(d) for d in notifier.deliveries(status, limit)]
    finally:
        notifier.close()
    emit_list(state, items, _COLUMNS, fields=json_fields(Delivery), empty="No deliveries.")


def shown(delivery: Delivery) -> Delivery:
    """``delivery`` for display: its target without secrets (a webhook's password, query
    values, token-like path segments; see :func:`tsmeter.domain.targets.mask_url`)."""
    return delivery.model_copy(update={"target": mask_target(delivery.target)})


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
    _pass(state, requeue, list(ids) or None)


@notifications.command()
@pass_state
def deliver(state: CliState) -> None:
    """Send every pending delivery that is due, once, and print what happened.

    The delivery worker's pass, for cron or after 'tsmeter alert evaluate': the
    monitor queues an alert's deliveries when it opens the alert, and this sends
    them (signed webhooks, SMTP; settings from TSMETER_SMTP_* and
    TSMETER_WEBHOOK_*). A failed attempt is retried on a later pass, with
    backoff, up to TSMETER_NOTIFY_RETRIES times; what was delivered is never
    sent again. One failing target never stops the others.

    \b
    Example:
        tsmeter --store usage.db alert evaluate
        tsmeter --store usage.db notifications deliver
    """
    _pass(state, False, None)


def _pass(state: CliState, requeue: bool, ids: list[str] | None) -> None:
    """One delivery pass (after re-queueing failed deliveries if asked); prints the counts."""
    notifier = _notifier(state, NotifySettings.from_env())
    try:
        requeued = notifier.retry_failed(ids) if requeue else 0
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
