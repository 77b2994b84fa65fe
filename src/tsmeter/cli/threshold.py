"""``tsmeter threshold``: limits on usage, with a warn level and notification targets."""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.exit_codes import ExitCode
from tsmeter.cli.output import Column, emit_list, emit_one, json_fields
from tsmeter.cli.params import (
    ACTIONS,
    NUMBER,
    PERIODS,
    org_option,
    parse_decimal_text,
    usage_error,
)
from tsmeter.domain import UsageThreshold
from tsmeter.domain.targets import mask_url

__all__ = ["shown", "threshold"]

_COLUMNS = [
    Column("ID", "id"),
    Column("METRIC", "metric_key"),
    Column("SUBJECT TYPE", "subject_type"),
    Column("SUBJECT ID", "subject_id"),
    Column("LIMIT", "threshold", right=True),
    Column("WARN AT", "warn_threshold", right=True),
    Column("PERIOD", "period_type"),
    Column("ACTION", "action"),
    Column("EMAILS", "notify_emails"),
    Column("WEBHOOK", "notify_webhook"),
]


# exact arithmetic for a percentage of a limit: an inexact result is an error, not rounded
_TRAPS = [decimal.Inexact, decimal.InvalidOperation, decimal.Overflow, decimal.Underflow]
_EXACT = decimal.Context(prec=100, Emax=999, Emin=-999, traps=_TRAPS)
_HUNDRED = Decimal(100)


def warn_level(text: str | None, limit: Decimal) -> Decimal | None:
    """``--warn-at``: an absolute value, or a percentage of ``limit`` such as ``90%``,
    computed exactly (the metric's precision and rounding then apply to it).

    >>> warn_level("90%", Decimal(1000)), warn_level("750.5", Decimal(1000))
    (Decimal('900'), Decimal('750.5'))
    >>> warn_level("90%", Decimal("1000.00")), warn_level("33.3%", Decimal("0.10"))
    (Decimal('900.00'), Decimal('0.0333'))
    """
    if text is None:
        return None
    value = text
    try:
        if value.endswith("%"):
            share = parse_decimal_text(value[:-1])
            return _EXACT.divide(_EXACT.multiply(limit, share), _HUNDRED)
        return parse_decimal_text(value)
    except (ValueError, decimal.DecimalException):
        raise usage_error(
            f"--warn-at: expected a number or a percentage such as 80%, got {text!r}"
        ) from None


def shown(item: UsageThreshold) -> UsageThreshold:
    """``item`` for display: its webhook URL without secrets (a password, query values,
    token-like path segments); the stored threshold keeps the full URL to deliver to."""
    if item.notify_webhook is None:
        return item
    return item.model_copy(update={"notify_webhook": mask_url(item.notify_webhook)})


def _common(fn: Any) -> Any:
    """Options shared by create and update."""
    for decorator in reversed(
        [
            click.option(
                "--warn-at",
                metavar="N|P%",
                default=None,
                help="Usage at which to warn: a value or a percentage of the limit [default: 80%].",
            ),
            click.option(
                "--period",
                type=PERIODS,
                default=None,
                help="Window the limit applies to [default: the metric's reset period].",
            ),
            click.option(
                "--action",
                type=ACTIONS,
                default=None,
                help="What crossing the limit does [create default: alert].",
            ),
            click.option(
                "--notify-email",
                "emails",
                metavar="EMAIL",
                multiple=True,
                help="Who to notify; repeatable (update: replaces the list).",
            ),
            click.option(
                "--notify-webhook",
                metavar="URL",
                default=None,
                help="http(s) URL to POST crossings to (shown with its password and query "
                "values masked; link-local and metadata addresses are refused).",
            ),
        ]
    ):
        fn = decorator(fn)
    return fn


def _changes(
    period: str | None, action: str | None, emails: tuple[str, ...], webhook: str | None
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if period is not None:
        fields["period_type"] = period.upper()
    if action is not None:
        fields["action"] = action.upper()
    if emails:
        fields["notify_emails"] = list(emails)
    if webhook is not None:
        fields["notify_webhook"] = webhook
    return fields


@click.group()
def threshold() -> None:
    """Set limits on usage: warn, alert or block when a subject crosses them.

    \b
    Example:
        tsmeter threshold create api_calls org 10000 --warn-at 90% --action block
        tsmeter threshold list
        tsmeter threshold check api_calls org org-1
    """


@threshold.command()
@click.argument("metric_key", metavar="METRIC")
@click.argument("subject_type")
@click.argument("limit", type=NUMBER)
@click.option(
    "--subject-id",
    metavar="ID|*",
    default="*",
    show_default=True,
    help="The subject the limit is for; * means every subject of SUBJECT_TYPE.",
)
@_common
@org_option("Organisation whose metric definition applies (default: the global one).")
@pass_state
def create(
    state: CliState,
    metric_key: str,
    subject_type: str,
    limit: Decimal,
    subject_id: str,
    warn_at: str | None,
    period: str | None,
    action: str | None,
    emails: tuple[str, ...],
    notify_webhook: str | None,
    org_id: str | None,
) -> None:
    """Create a LIMIT on METRIC for subjects of SUBJECT_TYPE (one, or all with *).

    LIMIT and --warn-at are exact decimals (a percentage of LIMIT is computed
    exactly, never through a float).

    \b
    Example:
        tsmeter threshold create api_calls org 10000 --subject-id org-1 \\
            --warn-at 90% --period monthly --action block --notify-email ops@example.com
    """
    fields = _changes(period, action, emails, notify_webhook)
    warn = warn_level(warn_at, limit)
    if warn is not None:
        fields["warn_threshold"] = warn
    if org_id is not None:
        fields["org_id"] = org_id
    item = state.meter().create_threshold(metric_key, subject_type, limit, subject_id, **fields)
    emit_one(state, shown(item))


@threshold.command()
@click.argument("threshold_id", metavar="ID")
@click.option("--limit", type=NUMBER, default=None, help="The new limit.")
@_common
@click.option("--clear-notify", is_flag=True, help="Remove every notification target.")
@pass_state
def update(
    state: CliState,
    threshold_id: str,
    limit: Decimal | None,
    warn_at: str | None,
    period: str | None,
    action: str | None,
    emails: tuple[str, ...],
    notify_webhook: str | None,
    clear_notify: bool,
) -> None:
    """Change the threshold ID; only the options given change.

    A new --limit without --warn-at resets the warn level to 80 % of it.

    \b
    Example:
        tsmeter threshold update 0190a1b2-... --limit 20000 --warn-at 95%
    """
    meter = state.meter()
    changes = _changes(period, action, emails, notify_webhook)
    if clear_notify:
        if emails or notify_webhook is not None:
            raise usage_error("give --clear-notify or new notification targets, not both")
        changes.update(notify_emails=[], notify_webhook=None)
    if limit is not None:
        changes["threshold"] = limit
    if warn_at is not None:
        base = limit if limit is not None else meter.get_threshold(threshold_id).threshold
        changes["warn_threshold"] = warn_level(warn_at, base)
    if not changes:
        raise usage_error("nothing to change: give at least one option")
    emit_one(state, shown(meter.update_threshold(threshold_id, **changes)))


@threshold.command()
@click.argument("threshold_id", metavar="ID")
@pass_state
def delete(state: CliState, threshold_id: str) -> None:
    """Delete the threshold ID.

    \b
    Example:
        tsmeter threshold delete 0190a1b2-...
    """
    state.meter().delete_threshold(threshold_id)
    emit_one(state, {"deleted": threshold_id}, text=f"Deleted threshold {threshold_id}.")


@threshold.command(name="list")
@click.argument("metric_key", metavar="[METRIC]", required=False)
@click.option("--subject-type", metavar="TYPE", default=None, help="Only this subject type.")
@click.option(
    "--subject-id",
    metavar="ID",
    default=None,
    help="Only thresholds that apply to this subject (its own and * ones).",
)
@pass_state
def list_(
    state: CliState, metric_key: str | None, subject_type: str | None, subject_id: str | None
) -> None:
    """List thresholds, optionally for one METRIC or subject.

    \b
    Example:
        tsmeter threshold list api_calls --subject-type org
    """
    items = [shown(t) for t in state.meter().list_thresholds(metric_key, subject_type, subject_id)]
    emit_list(state, items, _COLUMNS, fields=json_fields(UsageThreshold), empty="No thresholds.")


@threshold.command()
@click.argument("metric_key", metavar="METRIC")
@click.argument("subject_type")
@click.argument("subject_id")
@click.option(
    "--quantity",
    type=NUMBER,
    default="1",
    show_default=True,
    help="How much more to record (for a count metric: that many records).",
)
@org_option("Organisation whose metric definition applies (default: the global one).")
@pass_state
def check(
    state: CliState,
    metric_key: str,
    subject_type: str,
    subject_id: str,
    quantity: Decimal,
    org_id: str | None,
) -> None:
    """Would recording --quantity more METRIC for the subject stay within its BLOCK thresholds?

    Prints the decision: allowed, the limit that decides (the most restrictive
    BLOCK threshold; none if no BLOCK threshold applies), the usage in its
    current window, what remains and when the window ends. Nothing is recorded.

    Exit status: 0 if allowed, 3 if not; an "Error:" line and another status
    if the check itself failed (1 an unknown metric, 5 the store cannot be
    used, 2 bad usage).

    \b
    Example:
        tsmeter threshold check api_calls org org-1 --quantity 50
        tsmeter threshold check api_calls org org-1; [ $? -eq 3 ] && echo "over quota"
    """
    decision = state.meter().check(metric_key, subject_type, subject_id, quantity, org_id=org_id)
    doc = {
        "metricKey": metric_key,
        "subjectType": subject_type,
        "subjectId": subject_id,
        "quantity": quantity,
        "allowed": decision.allowed,
        "limit": decision.limit,
        "used": decision.used,
        "remaining": decision.remaining,
        "windowEnd": decision.window_end,
        "thresholdId": decision.threshold_id,
    }
    emit_one(state, doc)
    if not decision.allowed:
        click.get_current_context().exit(ExitCode.OVER_LIMIT)
