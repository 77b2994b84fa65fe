"""``tsmeter posthog``: the PostHog mirror's configuration and journal, a test event,
backfills and re-sends.

A mirror runs inside the process that records (or the scheduler); its counts reach this
command through the journal in the store's state file (``TSMETER_POSTHOG_STATE`` to put it
elsewhere), which every running mirror updates about once a second.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import emit_one, isatty, progress, table_lines, time_text
from tsmeter.cli.params import TIME_FORMS, org_option, usage_error
from tsmeter.errors import StorageUnavailableError, ValidationError
from tsmeter.extras import needs
from tsmeter.integrations.posthog import (
    Journal,
    PostHogMirror,
    PostHogSettings,
    journal_path_of,
    ping,
)
from tsmeter.integrations.posthog.backfill import backfill as run_backfill
from tsmeter.integrations.posthog.journal import MirrorRun, now_ns
from tsmeter.integrations.posthog.settings import ENV

__all__ = ["posthog"]

_STALE = timedelta(seconds=30)


def _settings(*, required: bool) -> PostHogSettings:
    settings = PostHogSettings.from_env()
    if required and not settings.enabled:
        raise ValidationError(ENV["api_key"], "not set: PostHog is not configured")
    return settings


def _journal_path(state: CliState, settings: PostHogSettings) -> str | None:
    return settings.state_path or journal_path_of(state.meter(mirror=False))


def _run_state(run: MirrorRun, now: datetime) -> str:
    if run.stopped_at is not None:
        return "stopped"
    if now - run.updated_at > _STALE:
        return "silent"  # the process ended without shutdown(), or hangs
    return "running"


class _PostHogGroup(click.Group):
    """The ``posthog`` group: a package of the posthog extra missing while a command runs is
    an error naming that extra."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the chosen command inside :func:`tsmeter.extras.needs`."""
        with needs("posthog"):
            return super().invoke(ctx)


@click.group(cls=_PostHogGroup)
def posthog() -> None:
    """Mirror usage to PostHog: configuration, a test event, backfills, re-sends.

    Settings come from TSMETER_POSTHOG_* (see the README); without
    TSMETER_POSTHOG_API_KEY the mirror is off.

    \b
    Example:
        tsmeter posthog status
        tsmeter posthog ping
        tsmeter posthog backfill api_calls --from 2026-01-01 --to 2026-02-01
    """


@posthog.command()
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Show the N latest mirror runs.",
)
@pass_state
def status(state: CliState, runs: int) -> None:
    """Show the configuration and what the journal knows: the latest mirror runs with their
    counts, events not sent, and records dropped for lack of room (with the backfill to run).

    A run is "running" while it updates the journal, "stopped" after shutdown(), and
    "silent" when it stopped updating without shutting down (its process died or hangs):
    its pending events were not saved.

    \b
    Example:
        tsmeter posthog status
        tsmeter --format json posthog status
    """
    settings = _settings(required=False)
    path = _journal_path(state, settings)
    doc: dict[str, Any] = {
        "enabled": settings.enabled,
        "settings": settings.describe(),
        "journal": path,
        "runs": [],
        "unsent": {},
        "dropped": [],
    }
    now = datetime.now(UTC)
    if path is not None:
        journal = Journal(path)
        try:
            found = journal.runs(runs)
            # times stay datetimes: every format shows them in the configured zone
            doc["runs"] = [{**r.model_dump(), "state": _run_state(r, now)} for r in found]
            doc["unsent"] = journal.unsent_counts()
            doc["dropped"] = [d.model_dump() for d in journal.dropped()]
        finally:
            journal.close()
    if state.fmt != "table":
        emit_one(state, doc)
        return
    _print_status(settings, doc, state.zone())


def _print_status(settings: PostHogSettings, doc: dict[str, Any], zone: tzinfo) -> None:
    shown = settings.describe()
    mode = f"on (project key {shown['api_key']})" if settings.enabled else "off (no API key)"
    click.echo(f"PostHog mirror: {mode}")
    click.echo(f"Host: {settings.host}   events: {settings.event_prefix}.*")
    groups = ", ".join(f"{k} -> {v}" for k, v in settings.groups.items()) or "none"
    click.echo(f"Groups: {groups}")
    click.echo(f"Journal: {doc['journal'] or 'none (this store keeps no state file)'}")
    if doc["runs"]:
        headers = [
            "STARTED",
            "PID",
            "HOST",
            "STATE",
            "UPDATED",
            "MIRRORED",
            "RETRIED",
            "FAILED",
            "DROPPED",
            "PENDING",
            "LAST ERROR",
        ]
        rows = [
            [
                time_text(r["startedAt"], zone),
                str(r["pid"]),
                r["hostname"],
                r["state"],
                time_text(r["updatedAt"], zone),
                *(f"{r[k]:,}" for k in ("mirrored", "retried", "failed", "dropped", "pending")),
                (r["lastError"] or "-")[:60],
            ]
            for r in doc["runs"]
        ]
        click.echo("")
        for line in table_lines(headers, rows, {5, 6, 7, 8, 9}):
            click.echo(line)
    elif doc["journal"]:
        click.echo("No mirror has run on this journal yet.")
    unsent = doc["unsent"]
    if unsent:
        click.echo("")
        click.echo(
            f"Not sent: {unsent['pending']} pending (the next mirror sends them),"
            f" {unsent['failed']} failed (tsmeter posthog retry --failed)"
        )
    for d in doc["dropped"]:
        start = d["first"].astimezone(zone)
        end = d["last"].astimezone(zone) + timedelta(microseconds=1)
        org = f" --org-id {d['orgId']}" if d["orgId"] else ""
        click.echo(
            f"Dropped (buffer full): {d['records']:,} records of"
            f" {d['metricKey']}{org} from {start.isoformat()} to {end.isoformat()}; send them"
            f" with: tsmeter posthog backfill {d['metricKey']}{org}"
            f" --from {start.isoformat()} --to {end.isoformat()}"
        )


@posthog.command(name="ping")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for PostHog's answer.",
)
@pass_state
def ping_(state: CliState, timeout: float) -> None:
    """Send one test event ({prefix}.ping, distinct id tsmeter:ping) and report whether
    PostHog accepted it. The event is real: it shows up in the project.

    \b
    Example:
        tsmeter posthog ping
        tsmeter --format json posthog ping --timeout 5
    """
    settings = _settings(required=True)
    result = ping(settings, timeout)
    if not result.ok:
        raise StorageUnavailableError(
            f"PostHog at {settings.host} did not accept the test event: {result.error}"
        )
    text = f"PostHog at {settings.host} accepted a test event in {result.seconds:.2f} s."
    emit_one(state, {"host": settings.host, **result.to_json_dict()}, text=text)


@posthog.command()
@click.argument("metric_key", metavar="METRIC")
@click.option(
    "--from",
    "start",
    metavar="TIME",
    required=True,
    help=f"Start of the range, inclusive ({TIME_FORMS}: its start in the time zone).",
)
@click.option(
    "--to",
    "end",
    metavar="TIME",
    required=True,
    help=f"End of the range, exclusive ({TIME_FORMS}: its start in the time zone).",
)
@org_option("The organisation whose own metric this is (default: the global metric).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds each chunk of events may take to be confirmed.",
)
@pass_state
def backfill(
    state: CliState, metric_key: str, start: str, end: str, org_id: str | None, timeout: float
) -> None:
    """Send a metric's records of [--from, --to) to PostHog as historical events (PostHog's
    historical-migration path). Records mirrored before are the same events (same uuid).

    On a terminal a progress bar counts the records sent. Exits 5 if some events
    were not accepted; they are kept in the journal for `tsmeter posthog retry
    --failed`.

    \b
    Example:
        tsmeter posthog backfill api_calls --from 2026-01-01 --to 2026-02-01
        tsmeter posthog backfill storage_gb --org-id acme --from 2026-03-01T00:00:00Z \\
            --to 2026-03-02T00:00:00Z
    """
    settings = _settings(required=True)
    # opened before --from/--to are read (which open the Meter), so no live mirror (a
    # second PostHog client) is attached beside the backfill's own
    meter = state.meter(mirror=False)
    lo, hi = state.when("--from", start), state.when("--to", end)
    assert lo is not None and hi is not None
    if hi <= lo:
        raise usage_error("--to must be after --from")
    path = _journal_path(state, settings)
    journal = Journal(path) if path is not None else None
    # a bar against the store's count, asked for only on a terminal
    total = meter.count_usage(metric_key, start=lo, end=hi, org_id=org_id) if isatty() else None
    try:
        with progress(total, "Sending") as (advance, _say):
            result = run_backfill(
                settings, meter, metric_key, lo, hi, org_id=org_id, timeout=timeout,
                journal=journal, progress=advance,
            )  # fmt: skip
    finally:
        if journal is not None:
            journal.close()
    text = (
        f"Sent {result.sent:,} of {result.records:,} records of"
        f" {result.metric_key} to PostHog as historical events in {result.seconds:.1f} s."
    )
    emit_one(state, result, text=text)
    if result.failed:
        raise StorageUnavailableError(
            f"{result.failed} events were not accepted ({result.last_error}); they are kept"
            " in the journal: tsmeter posthog retry --failed"
        )


@posthog.command()
@click.option("--failed", "requeue", is_flag=True, help="Re-queue failed events first.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the events to be confirmed.",
)
@pass_state
def retry(state: CliState, requeue: bool, timeout: float) -> None:
    """Send the events the journal holds as pending (left by a mirror that stopped before
    sending them), and with --failed also those given up on; print what happened.

    \b
    Example:
        tsmeter posthog retry
        tsmeter posthog retry --failed --timeout 120
    """
    settings = _settings(required=True)
    path = _journal_path(state, settings)
    if path is None:
        raise ValidationError(ENV["state_path"], "this store keeps no state file; set it")
    requeued = 0
    if requeue:
        journal = Journal(path)
        try:
            requeued = journal.requeue_failed(None, now_ns())
        finally:
            journal.close()
    started = time.monotonic()
    mirror = PostHogMirror(settings, journal=path)  # takes the pending events at start
    mirror.flush(timeout)
    mirror.shutdown(max(timeout - (time.monotonic() - started), 1.0))
    status = mirror.status()
    row = {
        "requeued": requeued,
        "sent": status.mirrored,
        "failed": status.failed,
        "pending": status.pending,
        "lastError": status.last_error,
    }
    text = (
        f"Sent {status.mirrored} events; {status.failed} failed, {status.pending} still"
        " pending" + (f" (re-queued {requeued})" if requeue else "") + "."
    )
    emit_one(state, row, text=text)
    if status.failed or status.pending:
        raise StorageUnavailableError(
            f"not every event was sent ({status.last_error}); see tsmeter posthog status"
        )
