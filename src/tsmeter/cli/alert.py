"""``tsmeter alert``: the alerts the threshold monitor raises, and running the monitor."""

from __future__ import annotations

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.exit_codes import ExitCode
from tsmeter.cli.output import Column, emit_list, emit_one, json_fields, visible
from tsmeter.cli.params import TIME_FORMS, subject_options
from tsmeter.domain import AlertStatus, UsageAlert

__all__ = ["alert"]

STATUSES = click.Choice([s.value.lower() for s in AlertStatus], case_sensitive=False)

_COLUMNS = [
    Column("ID", "id"),
    Column("STATUS", "status"),
    Column("LEVEL", "level"),
    Column("METRIC", "metric_key"),
    Column("SUBJECT TYPE", "subject_type"),
    Column("SUBJECT ID", "subject_id"),
    Column("USAGE", "actual_value", right=True),
    Column("LIMIT", "threshold_value", right=True),
    Column("%", "percentage", right=True),
    Column("PERIOD START", "period_start"),
    Column("CREATED", "created_at"),
]


@click.group()
def alert() -> None:
    """See and handle alerts: a subject's usage reached a threshold's warn level
    (approaching) or the threshold itself (exceeded) in the threshold's window.

    "alert evaluate" runs the monitor once; each crossing opens one alert per
    subject, window and level, which stays pending until acknowledged or resolved.

    \b
    Example:
        tsmeter alert evaluate
        tsmeter alert list --status pending
        tsmeter alert ack 0190a1b2-...
    """


@alert.command(name="list")
@click.option("--status", type=STATUSES, default=None, help="Only alerts with this status.")
@click.option("--metric", "metric_key", metavar="METRIC", default=None, help="Only this metric.")
@subject_options
@pass_state
def list_(
    state: CliState,
    status: str | None,
    metric_key: str | None,
    subject_type: str | None,
    subject_id: str | None,
) -> None:
    """List alerts, newest first, optionally filtered.

    USAGE is the subject's usage when the alert opened, LIMIT the threshold
    and % the usage as a percentage of it.

    \b
    Example:
        tsmeter alert list --status pending --metric api_calls --subject-id org-1
    """
    items = state.meter().list_alerts(
        status.upper() if status is not None else None,
        metric_key=metric_key,
        subject_type=subject_type,
        subject_id=subject_id,
    )
    emit_list(state, items, _COLUMNS, fields=json_fields(UsageAlert), empty="No alerts.")


@alert.command()
@click.argument("alert_id", metavar="ALERT_ID")
@pass_state
def ack(state: CliState, alert_id: str) -> None:
    """Acknowledge the alert ALERT_ID: mark it as seen (it stays open).

    A resolved alert cannot be acknowledged.

    \b
    Example:
        tsmeter alert ack 0190a1b2-...
    """
    emit_one(state, state.meter().acknowledge_alert(alert_id))


@alert.command()
@click.argument("alert_id", metavar="ALERT_ID")
@pass_state
def resolve(state: CliState, alert_id: str) -> None:
    """Resolve the alert ALERT_ID by hand: its level does not fire again in its window.

    Resolving a resolved alert changes nothing.

    \b
    Example:
        tsmeter alert resolve 0190a1b2-...
    """
    emit_one(state, state.meter().resolve_alert(alert_id))


@alert.command()
@click.option(
    "--at",
    metavar="TIME",
    default=None,
    help=f"Evaluate as of TIME ({TIME_FORMS}: its start in the time zone): the windows that "
    "contain it [default: now].",
)
@pass_state
def evaluate(state: CliState, at: str | None) -> None:
    """Run the threshold monitor once: compare every threshold with its subjects' usage in
    the current window, open alerts for new crossings and resolve those usage fell back under.

    Running it again opens nothing new until usage changes.

    \b
    Example:
        tsmeter alert evaluate
        tsmeter alert evaluate --at 2026-03-31
    """
    result = state.meter().evaluate_thresholds(state.when("--at", at))
    text = (
        f"Evaluated {_count(result.thresholds, 'threshold')} for "
        f"{_count(result.subjects, 'subject')}: opened {result.exceeded} exceeded and "
        f"{result.approaching} approaching alerts, resolved {result.resolved}."
    )
    emit_one(state, result, text=text)
    if result.errors:  # every other series was evaluated; say which were not, and fail
        for error in result.errors:
            click.echo(f"Error: {visible(error, backslash=False)}", err=True)
        raise SystemExit(ExitCode.ERROR)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
