"""``tsmeter reconcile``: the store's totals against PostHog's, per subject and UTC period.

Totals are compared exactly (Decimals at the metric's precision; PostHog sums integer
units), and shown digit for digit: in JSON and CSV as decimal strings.

Exit status: 0 when the copies agree (within the tolerance, zero unless given), 4 (drift) when
some subject-period differs beyond it (the table lists them), 5 when PostHog or the store
cannot be used (unreachable, refusing the key), 1 for other errors (an unknown metric, ...),
2 for bad usage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.exit_codes import ExitCode
from tsmeter.cli.output import Column, emit_list
from tsmeter.cli.params import calendar_date, org_option, subject_options
from tsmeter.domain import PeriodType
from tsmeter.domain.validation import parse_timestamp
from tsmeter.errors import ValidationError
from tsmeter.extras import needs

__all__ = ["DIFFERENCES_FOUND", "reconcile"]

#: The exit status when some subject-period differs beyond the tolerance.
DIFFERENCES_FOUND = ExitCode.DRIFT

_PERIOD_NAMES = {
    "hour": PeriodType.HOURLY, "day": PeriodType.DAILY, "week": PeriodType.WEEKLY,
    "month": PeriodType.MONTHLY, "year": PeriodType.YEARLY,
    **{p.value.lower(): p for p in PeriodType},
}  # fmt: skip

_COLUMNS = [
    Column("SUBJECT TYPE", "subjectType"),
    Column("SUBJECT ID", "subjectId"),
    Column("PERIOD START", "periodStart"),
    Column("STORE", "primary", right=True),
    Column("POSTHOG", "posthog", right=True),
    Column("DIFFERENCE", "difference", right=True),
    Column("RECORDS", "records", right=True),
    Column("KIND", "kind"),
]


def _utc_time(option: str, text: str) -> datetime:
    """An ISO-8601 time with an offset, or a date, month or year (its start in UTC: the
    periods compared are UTC ones)."""
    day = calendar_date(option, text)
    if day is None:
        return parse_timestamp(option, text)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@click.command()
@click.argument("metric_key", metavar="METRIC")
@click.option(
    "--from", "start", metavar="TIME", required=True,
    help="Start, inclusive (ISO-8601 with offset, or a date, month 2026-11 or year 2026: "
    "its start in UTC).",
)  # fmt: skip
@click.option(
    "--to", "end", metavar="TIME", required=True,
    help="End, exclusive (ISO-8601 with offset, or a date, month 2026-11 or year 2026: "
    "its start in UTC).",
)  # fmt: skip
@click.option(
    "--period",
    type=click.Choice(list(_PERIOD_NAMES), case_sensitive=False),
    default="day",
    show_default=True,
    help="UTC periods to compare (hour, day, week, month, year).",
)
@click.option(
    "--tolerance",
    metavar="X|P%",
    default="0",
    show_default=True,
    help="Largest accepted |PostHog - store| per subject and period: an amount, or a "
    "percentage of the store's total (default: none, totals must be equal).",
)
@subject_options
@org_option()
@pass_state
def reconcile(
    state: CliState,
    metric_key: str,
    start: str,
    end: str,
    period: str,
    tolerance: str,
    subject_type: str | None,
    subject_id: str | None,
    org_id: str | None,
) -> None:
    """Compare METRIC's totals per subject and UTC period between the store and PostHog.

    Every UTC period overlapping [--from, --to) is compared in full. Listed: subject-periods
    with fewer events in PostHog ("missing in PostHog"), more ("extra in PostHog") or the
    same number but other totals ("value drift"). Totals are exact decimals, compared
    exactly unless --tolerance is given, and shown digit for digit. PostHog's events are
    counted once per event uuid. Needs TSMETER_POSTHOG_PERSONAL_API_KEY (query:read),
    TSMETER_POSTHOG_PROJECT_ID and TSMETER_POSTHOG_HOST (unless PostHog Cloud US).

    Exit status: 0 the copies agree within the tolerance; 4 differences beyond it (listed);
    5 PostHog or the store cannot be used; 1 other errors; 2 bad usage.

    \b
    Example:
        tsmeter reconcile api_calls --from 2026-01-01 --to 2026-02-01 --period day
        tsmeter reconcile storage_gb --from 2026-01-01 --to 2026-01-08 --tolerance 0.5%
    """
    with needs("posthog"):
        from tsmeter.integrations.posthog.reader import PostHogReader
        from tsmeter.integrations.posthog.reconcile import Tolerance
        from tsmeter.integrations.posthog.reconcile import reconcile as compare
        from tsmeter.integrations.posthog.settings import PostHogSettings

    lo, hi = _utc_time("--from", start), _utc_time("--to", end)
    if hi <= lo:
        raise ValidationError("--to", "must be after --from")
    allowed = Tolerance.parse(tolerance)
    meter = state.meter(mirror=False)
    with PostHogReader(PostHogSettings.from_env()) as reader:
        result = compare(
            meter, reader, metric_key, _PERIOD_NAMES[period.lower()], start=lo, end=hi,
            subject_type=subject_type, subject_id=subject_id, org_id=org_id, tolerance=allowed,
        )  # fmt: skip
    rows: list[dict[str, Any]] = [
        {
            "subjectType": d.subject_type,
            "subjectId": d.subject_id,
            "periodStart": d.period_start,
            "periodEnd": d.period_end,
            "primary": str(d.primary),
            "posthog": str(d.posthog),
            "difference": str(d.difference),
            "primaryRecords": d.primary_records,
            "posthogRecords": d.posthog_records,
            "kind": d.kind.value,
            "beyondTolerance": d.beyond_tolerance,
        }
        for d in result.differences
    ]
    if state.fmt != "table":
        emit_list(state, rows, _COLUMNS)
    elif rows:
        for row in rows:
            if not row["difference"].startswith("-") and Decimal(row["difference"]):
                row["difference"] = "+" + row["difference"]
            row["records"] = f"{row['primaryRecords']}/{row['posthogRecords']}"
            if not row["beyondTolerance"]:
                row["kind"] += " (within tolerance)"
        emit_list(state, rows, _COLUMNS)
    beyond = sum(d.beyond_tolerance for d in result.differences)
    span = f"{result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC"
    click.echo(
        f"{result.metric_key}: compared {result.compared} subject-periods "
        f"({result.period_type.value.lower()}, {span}, {result.aggregation.value}): "
        + (
            f"{beyond} beyond tolerance {result.tolerance}"
            if beyond
            else f"the copies agree (tolerance {result.tolerance})"
        )
        + (f", {len(rows) - beyond} within it" if len(rows) > beyond else ""),
        err=True,
    )
    if not result.ok:
        click.get_current_context().exit(DIFFERENCES_FOUND)
