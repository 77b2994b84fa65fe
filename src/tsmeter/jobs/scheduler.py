"""Running the jobs of :mod:`tsmeter.jobs.registry` on their schedules with APScheduler 3.x.

Needs the ``scheduler`` extra (``pip install 'tsmeter[scheduler]'``). Each job
runs at most once at a time (``max_instances=1``); runs that piled up while the
process was busy or paused are coalesced into one; every run logs one line on
the ``tsmeter.jobs.scheduler`` logger::

    job=aggregate-hourly ok summaries=12 recomputed=3 records=40 duration=0.21s
    job=evaluate-thresholds error duration=0.01s error=StorageUnavailableError: ...

A failing run is logged and the scheduler goes on. :func:`run` is the
foreground entry (``tsmeter scheduler run``): SIGTERM or SIGINT stop new runs,
wait (bounded) for the running ones, then return.

**Several schedulers** (a fleet, or several processes on one host) share the work when the
meter has job leases (``meter.capabilities.leases``, a :class:`tsmeter.ports.JobLeases`):
every scheduler keeps its triggers, but only the holder of the lease runs jobs. The holder
renews the lease every ``lease_ttl / 3`` (30 s / 3 by default) in a thread; the others try to
take it on the same cadence. A run of a period job (:class:`~tsmeter.jobs.registry.PeriodSchedule`,
e.g. hourly aggregation) first claims its (job, period), so a period that ran is never run
again by a new holder; an interval job (``Every``) runs on the holder only. On taking the
lease a scheduler runs at once each period job whose latest period has not run.

*Takeover bound*: when the holder dies (``kill -9``, a lost host), its lease expires at most
``lease_ttl`` after its last renewal and another scheduler takes it at its next try, so jobs
move within ``lease_ttl + lease_ttl / 3`` (40 s by default), plus one interval for ``Every``
jobs. A holder that cannot reach the lease store stops starting runs once ``lease_ttl`` has
passed since its last renewal. A period whose run was cut off by its holder's death may run
again on the new holder (the jobs are idempotent). A clean stop releases the lease at once.
Without leases each scheduler runs every job itself.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from tsmeter.domain.periods import Calendar
from tsmeter.domain.validation import from_ns
from tsmeter.errors import TsmeterError
from tsmeter.jobs.leases import DEFAULT_LEASE_TTL, LeaseKeeper
from tsmeter.jobs.registry import AfterEachPeriod, Counts, Job, PeriodSchedule, format_run
from tsmeter.metering.meter import Meter
from tsmeter.ports import JobLeases

__all__ = [
    "JobFailed",
    "JobScheduler",
    "PeriodTrigger",
    "RunOutcome",
    "Skipped",
    "quiet_apscheduler",
    "run",
]

logger = logging.getLogger("tsmeter.scheduler")

_ONE_US = timedelta(microseconds=1)


class PeriodTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 is untyped
    """An APScheduler trigger that fires ``lateness`` after each period boundary.

    Example: ``PeriodTrigger(AfterEachPeriod(PeriodType.HOURLY), Calendar("Europe/Paris"))``.
    """

    __slots__ = ("calendar", "schedule")

    def __init__(self, schedule: AfterEachPeriod, calendar: Calendar) -> None:
        self.schedule = schedule
        self.calendar = calendar

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The first fire time after ``previous_fire_time``, or at or after ``now``, in UTC.

        UTC because arithmetic and comparisons on two datetimes of one zone use the
        wall clock, which repeats an hour when DST ends.
        """
        if previous_fire_time is not None:
            after = previous_fire_time.astimezone(UTC) + _ONE_US
        else:
            after = now.astimezone(UTC)
        return self.schedule.next_run(self.calendar, after).astimezone(UTC)

    def __str__(self) -> str:
        return f"{self.schedule.describe()} ({self.calendar.timezone})"

    def __repr__(self) -> str:
        return f"<PeriodTrigger {self}>"


@dataclass(frozen=True)
class RunOutcome:
    """What a successful run returns to the listener: its counts and duration in seconds."""

    counts: Counts
    seconds: float


@dataclass(frozen=True)
class Skipped:
    """A run that did not happen because of the lease: this scheduler does not hold it
    (``quiet``: logged at debug level only, it happens at every tick), or the period ran."""

    reason: str
    quiet: bool = False


class JobFailed(Exception):
    """A run raised ``__cause__`` after ``seconds``; the listener logs it."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"job {name!r} failed after {seconds:.2f}s")
        self.name = name
        self.seconds = seconds


def _iso(ns: int) -> str:
    return from_ns(ns).isoformat()


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())


class JobScheduler:
    """A background APScheduler running ``jobs`` on ``meter``, one run per job at a time.

    Each job's ``misfire_grace_time`` comes from its schedule. With
    ``meter.capabilities.leases`` only the holder of the lease runs jobs (see the module's
    docstring); ``lease_ttl`` (s) is how long the lease lives without renewal, ``holder``
    this scheduler's name in the lease store (default: host, pid and a random tag).
    Example::

        scheduler = JobScheduler(meter, list(default_jobs()))
        scheduler.start()
        ...
        scheduler.stop(timeout=30)
    """

    def __init__(
        self,
        meter: Meter,
        jobs: Sequence[Job],
        *,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        holder: str | None = None,
    ) -> None:
        self.meter = meter
        self.jobs = list(jobs)
        self._cond = threading.Condition()
        self._running: dict[str, int] = {}
        self._stopping = False
        calendar = meter.calendar
        self.leases: JobLeases | None = meter.capabilities.leases
        #: keeps the lease when the meter has job leases; None otherwise
        self.keeper: LeaseKeeper | None = None
        if self.leases is not None:
            self.keeper = LeaseKeeper(
                self.leases, lease_ttl, holder=holder, on_acquired=self._catch_up
            )
        self.scheduler = BackgroundScheduler(
            timezone=calendar.zone,
            executors={"default": ThreadPoolExecutor(max_workers=max(1, len(self.jobs)))},
            job_defaults={"max_instances": 1, "coalesce": True},
        )
        for job in self.jobs:
            self.scheduler.add_job(
                self._call,
                trigger=job.schedule.trigger(calendar),
                args=(job,),
                id=job.name,
                name=job.name,
                misfire_grace_time=job.schedule.misfire_grace_time,
            )
        self.scheduler.add_listener(
            self._on_event,
            EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES,
        )

    # -- running ----------------------------------------------------------------------
    def _call(self, job: Job) -> RunOutcome | Skipped | None:
        """Run ``job`` (in an executor thread); None when the scheduler is stopping.

        The run counts as running until the listener has logged it (:meth:`_on_event`),
        so that :meth:`stop` returns only after the last line is written.
        """
        with self._cond:
            if self._stopping:
                return None
            self._running[job.name] = self._running.get(job.name, 0) + 1
        started = time.monotonic()
        if self.keeper is None or self.leases is None:
            return self._run(job, started)
        if not self.keeper.holds():
            return Skipped("another scheduler holds the lease", quiet=True)
        if not isinstance(job.schedule, PeriodSchedule):
            return self._run(job, started)
        period = job.schedule.period_of(self.meter.calendar, datetime.now(UTC))
        try:
            claimed = self.leases.claim_run(job.name, period, self.keeper.holder)
        except BaseException as exc:
            raise JobFailed(job.name, time.monotonic() - started) from exc
        if not claimed:
            return Skipped(f"the period from {_iso(period)} has run or is running elsewhere")
        ok = False
        try:
            outcome = self._run(job, started)
            ok = True
            return outcome
        finally:
            try:
                self.leases.finish_run(job.name, period, self.keeper.holder, ok=ok)
            except Exception as exc:  # the run's own outcome is what gets reported
                logger.warning(
                    "job=%s could not mark the period from %s finished: %s",
                    job.name,
                    _iso(period),
                    _error_text(exc),
                )

    def _run(self, job: Job, started: float) -> RunOutcome:
        try:
            counts = job.run(self.meter)
        except BaseException as exc:  # a worker thread: report everything, stop nothing
            raise JobFailed(job.name, time.monotonic() - started) from exc
        return RunOutcome(counts, time.monotonic() - started)

    def _catch_up(self) -> None:
        """On taking the lease: run each period job now; its claim skips a period that ran."""
        now = datetime.now(UTC)
        for job in self.jobs:
            if isinstance(job.schedule, PeriodSchedule):
                self.scheduler.modify_job(job.name, next_run_time=now)

    def _finished(self, name: str) -> None:
        with self._cond:
            left = self._running.get(name, 0) - 1
            if left > 0:
                self._running[name] = left
            else:
                self._running.pop(name, None)
            self._cond.notify_all()

    def _on_event(self, event: Any) -> None:
        """Log one line per run, missed run or skipped run."""
        name = str(event.job_id)
        if event.code == EVENT_JOB_EXECUTED:
            outcome = event.retval
            if isinstance(outcome, RunOutcome):
                try:
                    logger.info(format_run(name, outcome.counts, outcome.seconds))
                finally:
                    self._finished(name)
            elif isinstance(outcome, Skipped):
                try:
                    level = logging.DEBUG if outcome.quiet else logging.INFO
                    logger.log(level, "job=%s skipped: %s", name, outcome.reason)
                finally:
                    self._finished(name)
            else:
                logger.info("job=%s not started: the scheduler is stopping", name)
        elif event.code == EVENT_JOB_ERROR:
            try:
                self._log_failure(name, event.exception)
            finally:
                self._finished(name)
        elif event.code == EVENT_JOB_MISSED:
            logger.warning(
                "job=%s missed: the run due at %s started too late and was skipped",
                name,
                event.scheduled_run_time.isoformat(),
            )
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            logger.warning("job=%s skipped: the previous run is still going", name)

    @staticmethod
    def _log_failure(name: str, exc: BaseException) -> None:
        """One error line; the traceback too unless it is an error tsmeter reports."""
        seconds = exc.seconds if isinstance(exc, JobFailed) else 0.0
        cause = exc.__cause__ if isinstance(exc, JobFailed) and exc.__cause__ else exc
        line = f"job={name} error duration={seconds:.2f}s error={_error_text(cause)}"
        if isinstance(cause, TsmeterError):
            logger.error(line)
        else:
            logger.error(line, exc_info=(type(cause), cause, cause.__traceback__))

    def running(self) -> list[str]:
        """The names of the jobs running right now."""
        with self._cond:
            return sorted(self._running)

    def start(self, *, paused: bool = False) -> None:
        """Start scheduling in a background thread (``paused``: do not run jobs yet), and
        keeping or trying to take the lease when there are job leases."""
        self.scheduler.start(paused=paused)
        if self.keeper is not None:
            self.keeper.start()

    def stop(self, timeout: float = 30.0, *, give_up: Callable[[], bool] | None = None) -> bool:
        """Start no new run, wait up to ``timeout`` s for running ones; True if none is left.

        ``give_up()`` returning True ends the wait early (a second signal).
        """
        self.scheduler.pause()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            while self._running and not (give_up is not None and give_up()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            left_running = sorted(self._running)
        self.scheduler.shutdown(wait=False)
        if self.keeper is not None:
            # a run still going keeps the lease until it expires, so no one repeats it meanwhile
            self.keeper.stop(release=not left_running)
        if left_running:
            logger.warning(
                "scheduler stopped; still running after %gs: %s", timeout, ", ".join(left_running)
            )
            return False
        logger.info("scheduler stopped")
        return True


def quiet_apscheduler() -> None:
    """Leave run logging to tsmeter: APScheduler's own per-run lines would repeat ours."""
    logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)


def run(
    meter: Meter,
    jobs: Sequence[Job],
    *,
    stop_timeout: float = 30.0,
    lease_ttl: float = DEFAULT_LEASE_TTL,
) -> bool:
    """Run ``jobs`` in the foreground until SIGTERM or SIGINT; True if it stopped cleanly.

    On the first signal no new run starts and running ones get ``stop_timeout``
    seconds to finish; a second signal stops waiting. ``lease_ttl``: see
    :class:`JobScheduler`. Call it from the main thread.
    Example: ``run(meter, list(default_jobs()))``.
    """
    scheduler = JobScheduler(meter, jobs, lease_ttl=lease_ttl)
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # no locks in a signal handler

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        scheduler.start()
        logger.info(
            "scheduler started: %s (time zone %s)",
            ", ".join(f"{job.name} {job.schedule.describe()}" for job in jobs),
            meter.timezone,
        )
        if scheduler.keeper is not None:
            ttl = scheduler.keeper.ttl
            logger.info(
                "job lease: holder %s, ttl %gs (a dead holder's jobs move within %gs)",
                scheduler.keeper.holder,
                ttl,
                ttl + ttl / 3,
            )
        while not received:
            time.sleep(0.1)
        running = scheduler.running()
        logger.info(
            "received %s: stopping%s",
            signal.Signals(received[0]).name,
            f"; waiting up to {stop_timeout:g}s for {', '.join(running)}" if running else "",
        )
        return scheduler.stop(stop_timeout, give_up=lambda: len(received) > 1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
