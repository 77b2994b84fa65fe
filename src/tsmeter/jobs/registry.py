"""Named jobs that keep a Meter's derived data current, and when each one runs.

A :class:`Job` is a function of the :class:`~tsmeter.metering.meter.Meter` that returns
counts (``{"summaries": 12, "recomputed": 3}``) plus a :class:`Schedule`. The
defaults (:func:`default_jobs`):

* ``aggregate-hourly`` … ``aggregate-yearly``: ``meter.aggregate(period)``,
  incrementally, after each period boundary in the meter's time zone plus a
  lateness offset for records that arrive late (hourly at :05 by default), or
  every N seconds instead;
* ``evaluate-thresholds``: ``meter.evaluate_thresholds()`` every N seconds;
* ``notifications``: only when a notifier is given.

Components configured later add their own job to the registry, e.g. a PostHog
mirror: ``registry.add(Job("mirror-flush", flush, Every(timedelta(seconds=10)), "..."))``.

Running a job once needs nothing else (``run_job``, ``tsmeter jobs run``);
scheduling them needs APScheduler (:mod:`tsmeter.jobs.scheduler`).

>>> registry = default_jobs()
>>> registry.get("aggregate-hourly").schedule.describe()
'after each hourly period + 5m'
>>> registry.get("evaluate-thresholds").schedule.describe()
'every 1m'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from tsmeter.domain import AggregationResult, PeriodType
from tsmeter.domain.periods import Calendar
from tsmeter.domain.validation import from_ns, to_ns
from tsmeter.errors import ConflictError, ValidationError

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

    from tsmeter.metering.meter import Meter

__all__ = [
    "AfterEachPeriod",
    "Counts",
    "Every",
    "Job",
    "JobRegistry",
    "Notifier",
    "PeriodSchedule",
    "Schedule",
    "ScheduleSettings",
    "as_counts",
    "default_jobs",
    "format_duration",
    "format_run",
    "run_job",
]

Counts = dict[str, int]


class Schedule(Protocol):
    """When a job runs: a description for people and an APScheduler trigger."""

    @property
    def misfire_grace_time(self) -> int | None:
        """Seconds a run may start late before it is skipped (None: however late, once)."""
        ...

    def describe(self) -> str:
        """One line for ``tsmeter jobs list``, e.g. ``after each hourly period + 5m``."""
        ...

    def next_run(self, calendar: Calendar, after: datetime) -> datetime | None:
        """The first run at or after ``after`` (None when it cannot be told in advance)."""
        ...

    def trigger(self, calendar: Calendar) -> BaseTrigger:
        """The APScheduler trigger (needs the ``scheduler`` extra)."""
        ...


@runtime_checkable
class PeriodSchedule(Schedule, Protocol):
    """A schedule whose every run is for one period (not an interval tick): with job leases a
    run first claims its period, so that a period runs once across a fleet, takeovers included.
    """

    def period_of(self, calendar: Calendar, at: datetime) -> int:
        """The start (ns) of the period that the latest run due at or before ``at`` is for."""
        ...


def format_duration(value: timedelta) -> str:
    """A duration in the shortest exact unit.

    >>> format_duration(timedelta(minutes=5)), format_duration(timedelta(seconds=1.5))
    ('5m', '1.5s')
    """
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class AfterEachPeriod:
    """Run ``lateness`` after every boundary of ``period`` in the meter's time zone.

    Boundaries are tsmeter's own periods (23- and 25-hour days across DST, hours
    at a quarter past in +05:45 zones). A run missed while the process was
    stopped or busy is made up once, however late (aggregation is incremental).

    >>> paris = Calendar("Europe/Paris")
    >>> schedule = AfterEachPeriod(PeriodType.DAILY, timedelta(minutes=5))
    >>> schedule.next_run(paris, datetime(2026, 3, 29, 12, tzinfo=UTC)).isoformat()
    '2026-03-30T00:05:00+02:00'
    """

    period: PeriodType
    lateness: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.lateness < timedelta(0):
            raise ValidationError("lateness", f"must not be negative, got {self.lateness}")

    @property
    def misfire_grace_time(self) -> int | None:
        """None: a missed run is made up once, however late."""
        return None

    def describe(self) -> str:
        """``after each hourly period + 5m``."""
        return f"after each {self.period.value.lower()} period + {format_duration(self.lateness)}"

    def next_run(self, calendar: Calendar, after: datetime) -> datetime:
        """The first boundary + lateness at or after ``after``, in the calendar's zone."""
        target = to_ns(after.astimezone(UTC) - self.lateness)
        start = calendar.start_of(self.period, target)
        if start < target:
            start = calendar.next_start(self.period, start)
        return (from_ns(start) + self.lateness).astimezone(calendar.zone)

    def period_of(self, calendar: Calendar, at: datetime) -> int:
        """The period that closed at the latest boundary at or before ``at - lateness``.

        >>> schedule = AfterEachPeriod(PeriodType.HOURLY, timedelta(minutes=5))
        >>> from_ns(schedule.period_of(Calendar(), datetime(2026, 3, 1, 10, 4, tzinfo=UTC)))
        datetime.datetime(2026, 3, 1, 8, 0, tzinfo=datetime.timezone.utc)
        """
        boundary = calendar.start_of(self.period, to_ns(at.astimezone(UTC) - self.lateness))
        return calendar.start_of(self.period, boundary - 1)

    def trigger(self, calendar: Calendar) -> BaseTrigger:
        """A :class:`tsmeter.jobs.scheduler.PeriodTrigger`."""
        from tsmeter.jobs.scheduler import PeriodTrigger

        return PeriodTrigger(self, calendar)


@dataclass(frozen=True)
class Every:
    """Run every ``interval``, the first time one interval after the scheduler starts.

    A run that could not start within one interval of its time is skipped; the
    next one comes at most an interval later.

    >>> Every(timedelta(seconds=30)).describe()
    'every 30s'
    """

    interval: timedelta

    def __post_init__(self) -> None:
        if self.interval <= timedelta(0):
            raise ValidationError("interval", f"must be positive, got {self.interval}")

    @property
    def misfire_grace_time(self) -> int | None:
        """One interval, in whole seconds (at least one)."""
        return max(math.ceil(self.interval.total_seconds()), 1)

    def describe(self) -> str:
        """``every 30s``."""
        return f"every {format_duration(self.interval)}"

    def next_run(self, calendar: Calendar, after: datetime) -> None:
        """None: interval runs are counted from the scheduler's start."""
        return None

    def trigger(self, calendar: Calendar) -> BaseTrigger:
        """An APScheduler ``IntervalTrigger`` in the calendar's zone."""
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=self.interval.total_seconds(), timezone=calendar.zone)


@dataclass(frozen=True)
class Job:
    """A named unit of work: ``run(meter)`` returns counts; ``schedule`` says when.

    Example: ``Job("evaluate-thresholds", evaluate, Every(timedelta(seconds=60)), "...")``.
    """

    name: str
    run: Callable[[Meter], Counts]
    schedule: Schedule
    description: str = ""


class Notifier(Protocol):
    """What the ``notifications`` job needs: deliver what is pending and return counts."""

    def deliver_pending(self) -> object:
        """Send pending notifications; counts as a dict or a pydantic model."""
        ...


@dataclass
class JobRegistry:
    """Jobs by name, in the order they were added.

    >>> registry = JobRegistry()
    >>> registry.add(Job("noop", lambda meter: {}, Every(timedelta(seconds=1))))
    >>> registry.names()
    ['noop']
    """

    _jobs: dict[str, Job] = field(default_factory=dict)

    def add(self, job: Job) -> None:
        """Register ``job``; ConflictError if its name is taken."""
        if job.name in self._jobs:
            raise ConflictError(f"job {job.name!r} is registered already")
        self._jobs[job.name] = job

    def get(self, name: str) -> Job:
        """The job called ``name``; ValidationError naming the known jobs otherwise."""
        try:
            return self._jobs[name]
        except KeyError:
            known = ", ".join(self._jobs) or "none"
            raise ValidationError("job", f"unknown job {name!r} (known jobs: {known})") from None

    def select(self, names: Sequence[str]) -> list[Job]:
        """The named jobs (every job when ``names`` is empty), without repeats."""
        if not names:
            return list(self._jobs.values())
        return [self.get(name) for name in dict.fromkeys(names)]

    def names(self) -> list[str]:
        """Every job name, in registration order."""
        return list(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)


@dataclass(frozen=True)
class ScheduleSettings:
    """The knobs of the default schedules.

    ``lateness``: how long after a period boundary aggregation runs;
    ``aggregation_interval``: run aggregation every so often instead;
    ``evaluation_interval`` and ``notification_interval``: how often those run.
    """

    lateness: timedelta = timedelta(minutes=5)
    aggregation_interval: timedelta | None = None
    evaluation_interval: timedelta = timedelta(seconds=60)
    notification_interval: timedelta = timedelta(seconds=30)


def as_counts(value: object) -> Counts:
    """The integer fields of a pydantic model or mapping, as a counts dict.

    >>> as_counts({"sent": 2, "failed": 0, "note": "x", "ok": True})
    {'sent': 2, 'failed': 0}
    """
    items: Mapping[Any, object]
    if isinstance(value, BaseModel):
        items = value.model_dump(by_alias=False)
    elif isinstance(value, Mapping):
        items = value
    else:
        raise TypeError(f"expected counts as a mapping or pydantic model, got {type(value)!r}")
    return {str(k): v for k, v in items.items() if isinstance(v, int) and not isinstance(v, bool)}


def _aggregation_counts(result: AggregationResult) -> Counts:
    return {
        "summaries": result.summaries_written,
        "recomputed": result.periods_recomputed,
        "records": result.records_seen,
    }


def _aggregate(period: PeriodType) -> Callable[[Meter], Counts]:
    def run(meter: Meter) -> Counts:
        return _aggregation_counts(meter.aggregate(period))

    return run


def _evaluate_thresholds(meter: Meter) -> Counts:
    return as_counts(meter.evaluate_thresholds())


def default_jobs(
    settings: ScheduleSettings | None = None, *, notifier: Notifier | None = None
) -> JobRegistry:
    """The standard jobs, scheduled by ``settings``; ``notifications`` only with a notifier.

    Example: ``default_jobs(ScheduleSettings(lateness=timedelta(minutes=10)))``.
    """
    cfg = settings or ScheduleSettings()
    registry = JobRegistry()
    for period in PeriodType:
        schedule: Schedule = (
            Every(cfg.aggregation_interval)
            if cfg.aggregation_interval is not None
            else AfterEachPeriod(period, cfg.lateness)
        )
        word = period.value.lower()
        registry.add(
            Job(
                f"aggregate-{word}",
                _aggregate(period),
                schedule,
                f"Roll new and late records up into {word} summaries.",
            )
        )
    registry.add(
        Job(
            "evaluate-thresholds",
            _evaluate_thresholds,
            Every(cfg.evaluation_interval),
            "Check current usage against thresholds; emit approaching/exceeded events.",
        )
    )
    if notifier is not None:
        deliver = notifier.deliver_pending
        registry.add(
            Job(
                "notifications",
                lambda meter: as_counts(deliver()),
                Every(cfg.notification_interval),
                "Deliver pending threshold notifications (email, webhook).",
            )
        )
    return registry


def run_job(meter: Meter, name: str, registry: JobRegistry | None = None) -> Counts:
    """Run the job ``name`` once, now; ValidationError for an unknown name.

    Example: ``run_job(meter, "aggregate-hourly")`` → ``{"summaries": 12, ...}``.
    """
    job = (registry if registry is not None else default_jobs()).get(name)
    return job.run(meter)


def format_run(name: str, counts: Mapping[str, int], seconds: float) -> str:
    """The one log line for a finished run.

    >>> format_run("aggregate-hourly", {"summaries": 12, "recomputed": 3}, 0.2071)
    'job=aggregate-hourly ok summaries=12 recomputed=3 duration=0.21s'
    """
    parts = [f"job={name}", "ok", *(f"{k}={v}" for k, v in counts.items())]
    return " ".join([*parts, f"duration={seconds:.2f}s"])
