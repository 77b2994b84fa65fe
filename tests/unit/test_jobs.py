"""The job registry, the default schedules and their APScheduler triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tsmeter import Meter
from tsmeter.domain import PeriodType
from tsmeter.domain.periods import Calendar
from tsmeter.errors import ConflictError, ValidationError
from tsmeter.jobs.registry import (
    AfterEachPeriod,
    Every,
    Job,
    JobRegistry,
    ScheduleSettings,
    as_counts,
    default_jobs,
    format_run,
    run_job,
)
from tsmeter.jobs.scheduler import PeriodTrigger

PARIS = ZoneInfo("Europe/Paris")
AGGREGATION_JOBS = [
    "aggregate-hourly",
    "aggregate-daily",
    "aggregate-weekly",
    "aggregate-monthly",
    "aggregate-yearly",
]


def utc(*args: int) -> datetime:
    """An aware UTC datetime."""
    return datetime(*args, tzinfo=UTC)


def fire_times(trigger: PeriodTrigger, now: datetime, n: int) -> list[datetime]:
    """The next ``n`` fire times, chained the way APScheduler asks for them."""
    times: list[datetime] = []
    previous = None
    for _ in range(n):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        times.append(fire)
        previous = fire
    return times


def paris_trigger(period: PeriodType, lateness: timedelta = timedelta(minutes=5)) -> PeriodTrigger:
    """The trigger of an AfterEachPeriod schedule in Europe/Paris."""
    trigger = AfterEachPeriod(period, lateness).trigger(Calendar("Europe/Paris"))
    assert isinstance(trigger, PeriodTrigger)
    return trigger


def test_default_jobs_and_schedules() -> None:
    """Five aggregation jobs after each period + 5 min, evaluation every 60 s, in that order."""
    registry = default_jobs()
    assert registry.names() == [*AGGREGATION_JOBS, "evaluate-thresholds"]
    assert [job.schedule.describe() for job in registry] == [
        "after each hourly period + 5m",
        "after each daily period + 5m",
        "after each weekly period + 5m",
        "after each monthly period + 5m",
        "after each yearly period + 5m",
        "every 1m",
    ]
    assert all(job.description for job in registry)


def test_settings_change_the_schedules() -> None:
    """Lateness, an aggregation interval and the evaluation interval are configurable."""
    late = default_jobs(ScheduleSettings(lateness=timedelta(minutes=10)))
    assert late.get("aggregate-daily").schedule == AfterEachPeriod(
        PeriodType.DAILY, timedelta(minutes=10)
    )
    every = default_jobs(
        ScheduleSettings(
            aggregation_interval=timedelta(minutes=15), evaluation_interval=timedelta(seconds=5)
        )
    )
    assert {every.get(name).schedule for name in AGGREGATION_JOBS} == {Every(timedelta(minutes=15))}
    assert every.get("evaluate-thresholds").schedule == Every(timedelta(seconds=5))


def test_notifications_job_only_with_a_notifier() -> None:
    """A ``notifications`` job exists only when a notifier is configured, and runs it."""
    assert "notifications" not in default_jobs().names()

    class FakeNotifier:
        def __init__(self) -> None:
            self.calls = 0

        def deliver_pending(self) -> dict[str, int]:
            self.calls += 1
            return {"sent": 2, "failed": 1}

    notifier = FakeNotifier()
    registry = default_jobs(notifier=notifier)
    assert registry.names()[-1] == "notifications"
    assert registry.get("notifications").schedule == Every(timedelta(seconds=30))
    counts = run_job(None, "notifications", registry)  # type: ignore[arg-type]
    assert counts == {"sent": 2, "failed": 1}
    assert notifier.calls == 1


def test_registry_rejects_duplicates_and_names_the_known_jobs() -> None:
    """A taken name is a ConflictError; an unknown one a ValidationError listing known ones."""
    registry = JobRegistry()
    registry.add(Job("mirror-flush", lambda meter: {"sent": 0}, Every(timedelta(seconds=10))))
    with pytest.raises(ConflictError, match="mirror-flush"):
        registry.add(Job("mirror-flush", lambda meter: {}, Every(timedelta(seconds=1))))
    with pytest.raises(ValidationError) as info:
        registry.get("mirror")
    assert info.value.field == "job"
    assert str(info.value) == "job: unknown job 'mirror' (known jobs: mirror-flush)"
    assert registry.select([]) == list(registry)
    assert [job.name for job in registry.select(["mirror-flush", "mirror-flush"])] == [
        "mirror-flush"
    ]


def test_run_job_unknown_name(meter: Meter) -> None:
    """run_job with an unknown name raises ValidationError naming every default job."""
    with pytest.raises(ValidationError) as info:
        run_job(meter, "aggregate-hourlyy")
    message = str(info.value)
    assert message.startswith("job: unknown job 'aggregate-hourlyy' (known jobs: ")
    for name in [*AGGREGATION_JOBS, "evaluate-thresholds"]:
        assert name in message


def test_run_job_aggregates_incrementally(meter: Meter) -> None:
    """aggregate-hourly writes the touched hours once; a second run finds nothing new."""
    for hour in (8, 8, 9):
        meter.record("api_calls", "org", "o1", timestamp=utc(2026, 3, 29, hour, 10))
    assert run_job(meter, "aggregate-hourly") == {"summaries": 2, "recomputed": 2, "records": 3}
    assert run_job(meter, "aggregate-hourly") == {"summaries": 0, "recomputed": 0, "records": 0}
    assert run_job(meter, "aggregate-monthly")["summaries"] == 1
    march = meter.get_usage_summary("api_calls", "org", "o1", "MONTHLY", at=utc(2026, 3, 29))
    assert march.total_quantity == 3


def test_run_job_evaluates_thresholds(meter: Meter) -> None:
    """evaluate-thresholds returns the evaluation's counts (needs Meter.evaluate_thresholds)."""
    meter.create_threshold("api_calls", "org", 1000, "*")
    meter.record("api_calls", "org", "o1")
    counts = run_job(meter, "evaluate-thresholds")
    assert set(counts) == {
        "thresholds",
        "subjects",
        "approaching",
        "exceeded",
        "resolved",
        "failed",
    }
    assert counts["thresholds"] == 1


def test_schedules_reject_bad_durations() -> None:
    """Lateness must not be negative and an interval must be positive."""
    with pytest.raises(ValidationError, match="lateness"):
        AfterEachPeriod(PeriodType.HOURLY, timedelta(minutes=-1))
    with pytest.raises(ValidationError, match="interval"):
        Every(timedelta(0))


def test_hourly_trigger_across_spring_forward() -> None:
    """Hourly at :05 in Paris on 2026-03-29: every UTC hour, local 01:05 then 03:05 CEST."""
    times = fire_times(paris_trigger(PeriodType.HOURLY), utc(2026, 3, 28, 23, 30), 3)
    assert times == [utc(2026, 3, 29, 0, 5), utc(2026, 3, 29, 1, 5), utc(2026, 3, 29, 2, 5)]
    assert [t.astimezone(PARIS).strftime("%H:%M%z") for t in times] == [
        "01:05+0100",
        "03:05+0200",
        "04:05+0200",
    ]


def test_hourly_trigger_across_fall_back() -> None:
    """On 2026-10-25 the repeated local hour 02:00 gets its own run (02:05 CEST and CET)."""
    times = fire_times(paris_trigger(PeriodType.HOURLY), utc(2026, 10, 24, 23, 30), 3)
    assert times == [utc(2026, 10, 25, 0, 5), utc(2026, 10, 25, 1, 5), utc(2026, 10, 25, 2, 5)]
    assert [t.astimezone(PARIS).strftime("%H:%M%z") for t in times] == [
        "02:05+0200",
        "02:05+0100",
        "03:05+0100",
    ]


@pytest.mark.parametrize(
    ("start", "first", "gap_hours"),
    [
        (utc(2026, 3, 28, 12), datetime(2026, 3, 29, 0, 5, tzinfo=PARIS), 23),
        (utc(2026, 10, 24, 12), datetime(2026, 10, 25, 0, 5, tzinfo=PARIS), 25),
        (utc(2026, 6, 1, 12), datetime(2026, 6, 2, 0, 5, tzinfo=PARIS), 24),
    ],
)
def test_daily_trigger_is_five_past_local_midnight(
    start: datetime, first: datetime, gap_hours: int
) -> None:
    """Daily runs at 00:05 local; across a DST change the gap is 23 or 25 hours."""
    a, b = fire_times(paris_trigger(PeriodType.DAILY), start, 2)
    assert a == first
    assert b.astimezone(UTC) - a.astimezone(UTC) == timedelta(hours=gap_hours)
    assert b.astimezone(PARIS).strftime("%H:%M") == "00:05"


def test_weekly_monthly_yearly_triggers() -> None:
    """Weekly on Monday, monthly on the 1st, yearly on 1 January, each at 00:05 local."""
    now = utc(2026, 3, 25, 12)  # a Wednesday
    assert fire_times(paris_trigger(PeriodType.WEEKLY), now, 2) == [
        datetime(2026, 3, 30, 0, 5, tzinfo=PARIS),
        datetime(2026, 4, 6, 0, 5, tzinfo=PARIS),
    ]
    assert fire_times(paris_trigger(PeriodType.MONTHLY), now, 2) == [
        datetime(2026, 4, 1, 0, 5, tzinfo=PARIS),
        datetime(2026, 5, 1, 0, 5, tzinfo=PARIS),
    ]
    assert fire_times(paris_trigger(PeriodType.YEARLY), now, 1) == [
        datetime(2027, 1, 1, 0, 5, tzinfo=PARIS)
    ]


def test_lateness_offset() -> None:
    """The lateness is added to each boundary; a time exactly on a fire time is included."""
    assert fire_times(paris_trigger(PeriodType.HOURLY, timedelta(0)), utc(2026, 6, 1, 10), 2) == [
        utc(2026, 6, 1, 10),
        utc(2026, 6, 1, 11),
    ]
    late = paris_trigger(PeriodType.HOURLY, timedelta(minutes=90))
    assert fire_times(late, utc(2026, 6, 1, 10, 31), 2) == [
        utc(2026, 6, 1, 11, 30),
        utc(2026, 6, 1, 12, 30),
    ]
    daily = paris_trigger(PeriodType.DAILY, timedelta(hours=2))
    # 02:00 local does not exist on 2026-03-29: the run is 2 h after midnight, at 03:00 CEST
    assert fire_times(daily, utc(2026, 3, 28, 22), 1) == [utc(2026, 3, 29, 1)]


def test_hourly_trigger_in_a_quarter_hour_zone() -> None:
    """In Asia/Kathmandu (+05:45) hours start at a quarter past UTC: runs at :20 UTC."""
    trigger = AfterEachPeriod(PeriodType.HOURLY).trigger(Calendar("Asia/Kathmandu"))
    assert fire_times(trigger, utc(2026, 1, 1, 10), 2) == [
        utc(2026, 1, 1, 10, 20),
        utc(2026, 1, 1, 11, 20),
    ]


def test_missed_fire_times_are_listed_from_the_previous_one() -> None:
    """Given a previous fire time long ago, the next one follows it, not ``now`` (so the
    scheduler can see the runs it missed and coalesce them)."""
    trigger = paris_trigger(PeriodType.HOURLY)
    assert trigger.get_next_fire_time(utc(2026, 6, 1, 10, 5), utc(2026, 6, 1, 15)) == utc(
        2026, 6, 1, 11, 5
    )


def test_trigger_describes_itself() -> None:
    """The trigger's text names its schedule and zone (APScheduler shows it in job lists)."""
    assert str(paris_trigger(PeriodType.DAILY)) == "after each daily period + 5m (Europe/Paris)"


def test_as_counts_and_format_run() -> None:
    """Counts keep integer fields; the run line lists them in order with the duration."""
    from tsmeter.domain import AggregationResult

    result = AggregationResult(
        period_type=PeriodType.HOURLY, summaries_written=3, periods_recomputed=2, records_seen=9
    )
    assert as_counts(result) == {"summaries_written": 3, "periods_recomputed": 2, "records_seen": 9}
    with pytest.raises(TypeError):
        as_counts(5)
    assert format_run("x", {"a": 1}, 1.0) == "job=x ok a=1 duration=1.00s"
