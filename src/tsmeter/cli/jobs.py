"""``tsmeter scheduler`` and ``tsmeter jobs``: run the maintenance jobs on a schedule or once."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import Column, emit_list, emit_one
from tsmeter.errors import TsmeterError
from tsmeter.extras import needs
from tsmeter.integrations.notify import Notifier, NotifySettings
from tsmeter.integrations.posthog.job import mirror_job
from tsmeter.jobs.registry import JobRegistry, ScheduleSettings, default_jobs, format_run
from tsmeter.metering.meter import Meter

__all__ = ["duration_option", "jobs", "parse_duration", "scheduler"]

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")


def parse_duration(text: str) -> timedelta:
    """A duration such as ``30s``, ``5m``, ``1.5h``, ``1d``, ``250ms`` or ``90`` (seconds).

    >>> parse_duration("5m"), parse_duration("0.5")
    (datetime.timedelta(seconds=300), datetime.timedelta(microseconds=500000))
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {text!r}")
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNITS[unit or "s"])


def duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Click callback: parse an option's value with :func:`parse_duration`."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


_COLUMNS = [
    Column("NAME", "name"),
    Column("SCHEDULE", "schedule"),
    Column("NEXT RUN", "nextRun"),
    Column("DESCRIPTION", "description"),
]


def _schedule_options(fn: F) -> F:
    """``--lateness``, ``--aggregate-every`` and ``--evaluate-every``."""
    options = [
        click.option(
            "--lateness",
            metavar="DURATION",
            callback=duration_option,
            default="5m",
            show_default=True,
            help="How long after each period boundary aggregation runs, so that late "
            "records are in (hourly at :05 by default).",
        ),
        click.option(
            "--aggregate-every",
            metavar="DURATION",
            callback=duration_option,
            default=None,
            help="Aggregate every DURATION instead of after each period boundary.",
        ),
        click.option(
            "--evaluate-every",
            metavar="DURATION",
            callback=duration_option,
            default="60s",
            show_default=True,
            help="How often thresholds are evaluated.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _registry(
    lateness: timedelta,
    aggregate_every: timedelta | None,
    evaluate_every: timedelta,
    notifier: Notifier | None = None,
) -> JobRegistry:
    settings = ScheduleSettings(
        lateness=lateness,
        aggregation_interval=aggregate_every,
        evaluation_interval=evaluate_every,
    )
    return default_jobs(settings, notifier=notifier)


def _notifier(meter: Meter) -> Notifier | None:
    """The delivery worker on the meter's delivery queue (its state file, or the fleet's
    shared one), for the ``notifications`` job (the monitor queues an alert's deliveries as it
    opens the alert); None for a store without either. Settings come from the TSMETER_SMTP_* /
    TSMETER_WEBHOOK_* variables."""
    settings = NotifySettings.from_env()
    try:
        return Notifier.for_meter(meter, settings, worker=False, attach=False)
    except TsmeterError:
        return None


@click.group()
def scheduler() -> None:
    """Run the maintenance jobs on their schedules, in the foreground.

    \b
    Example:
        tsmeter --store usage.db --timezone Europe/Paris scheduler run
    """


@scheduler.command(name="run")
@click.option(
    "--job",
    "names",
    metavar="NAME",
    multiple=True,
    help="Run only this job; repeatable [default: every job, see 'tsmeter jobs list'].",
)
@_schedule_options
@click.option(
    "--stop-timeout",
    metavar="DURATION",
    callback=duration_option,
    default="30s",
    show_default=True,
    help="On SIGTERM/SIGINT, how long to wait for running jobs to finish.",
)
@click.option(
    "--lease-ttl",
    metavar="DURATION",
    callback=duration_option,
    default="30s",
    show_default=True,
    help="With a shared state store, how long the job lease lives without renewal: "
    "another scheduler takes a dead one's jobs over within DURATION + DURATION/3.",
)
@pass_state
def run_scheduler(
    state: CliState,
    names: tuple[str, ...],
    lateness: timedelta,
    aggregate_every: timedelta | None,
    evaluate_every: timedelta,
    stop_timeout: timedelta,
    lease_ttl: timedelta,
) -> None:
    """Run jobs on their schedules until SIGTERM or SIGINT (Ctrl-C).

    Aggregation runs after each period boundary in the configured time zone
    plus --lateness; threshold evaluation every --evaluate-every. A job never
    overlaps itself, runs missed while busy are made up once, and each run
    logs one line with its counts and duration on stderr. On SIGTERM or
    SIGINT no new run starts and running ones get --stop-timeout to finish;
    the exit status is 0, or 1 if a job was still running (a second signal
    stops the wait).

    Several schedulers sharing a state store that keeps job leases (a fleet
    on PostgreSQL) run each job once: one holds the lease and runs the
    jobs, the others take over within --lease-ttl plus a third of it when
    it dies; a clean stop hands the lease over at once.

    \b
    Example:
        tsmeter --store usage.db scheduler run
        tsmeter --store usage.db scheduler run --job evaluate-thresholds --evaluate-every 15s
        tsmeter --store usage.db scheduler run --aggregate-every 10m --lateness 0s
    """
    with needs("scheduler"):
        from tsmeter.jobs import scheduler as runner
    if lease_ttl <= timedelta(0):
        raise click.BadParameter("must be positive", param_hint="'--lease-ttl'")
    meter = state.meter()
    notifier = _notifier(meter)
    registry = _registry(lateness, aggregate_every, evaluate_every, notifier)
    if meter.mirror is not None:  # configured by $TSMETER_POSTHOG_API_KEY
        registry.add(mirror_job(meter.mirror))
    selected = registry.select(names)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    runner.quiet_apscheduler()
    finished = runner.run(
        meter,
        selected,
        stop_timeout=stop_timeout.total_seconds(),
        lease_ttl=lease_ttl.total_seconds(),
    )
    if finished and notifier is not None:
        notifier.close(timeout=stop_timeout.total_seconds())
    if not finished:
        # A job thread is still busy: exiting normally would wait for it without bound.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


@click.group()
def jobs() -> None:
    """List the maintenance jobs, or run one once (for cron and tests).

    \b
    Example:
        tsmeter jobs list
        tsmeter --store usage.db jobs run aggregate-hourly
    """


@jobs.command(name="list")
@_schedule_options
@pass_state
def list_(
    state: CliState,
    lateness: timedelta,
    aggregate_every: timedelta | None,
    evaluate_every: timedelta,
) -> None:
    """List the jobs with their schedules and next run times in the configured time zone.

    The options change the schedules shown the way they change 'scheduler run'.

    \b
    Example:
        tsmeter --timezone Europe/Paris jobs list --lateness 10m
    """
    calendar = state.meter().calendar
    now = datetime.now(UTC)
    rows = [
        {
            "name": job.name,
            "schedule": job.schedule.describe(),
            "nextRun": job.schedule.next_run(calendar, now),
            "description": job.description,
        }
        for job in _registry(lateness, aggregate_every, evaluate_every)
    ]
    emit_list(state, rows, _COLUMNS, empty="No jobs.")


@jobs.command(name="run")
@click.argument("name")
@pass_state
def run_once(state: CliState, name: str) -> None:
    """Run the job NAME once, now, and print its counts and duration.

    Aggregation is incremental, so a crontab can replace the scheduler:
    '5 * * * * tsmeter --store /srv/usage.db jobs run aggregate-hourly'.

    \b
    Example:
        tsmeter --store usage.db jobs run aggregate-hourly
        tsmeter --store usage.db --format json jobs run evaluate-thresholds
    """
    meter = state.meter()
    notifier = _notifier(meter)
    try:
        job = default_jobs(notifier=notifier).get(name)
        started = time.monotonic()
        counts = job.run(meter)
    finally:
        if notifier is not None:
            notifier.close(timeout=30)
    seconds = time.monotonic() - started
    doc: dict[str, Any] = {"job": name, "status": "ok", **counts, "duration": round(seconds, 3)}
    emit_one(state, doc, text=format_run(name, counts, seconds))
