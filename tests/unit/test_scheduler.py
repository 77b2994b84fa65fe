"""The APScheduler runner: no overlapping runs, coalesced misfires, one log line per run, and a
bounded, graceful stop. Every wait here is bounded."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.base import BaseTrigger

from tsmeter import Meter, StorageUnavailableError
from tsmeter.domain.periods import Calendar
from tsmeter.jobs.registry import Counts, Every, Job, default_jobs
from tsmeter.jobs.scheduler import JobScheduler


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@dataclass
class Probe:
    """A job body that counts its calls and how many of them ran at once."""

    sleep: float = 0.0
    calls: int = 0
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, meter: Meter) -> Counts:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.sleep)
        with self.lock:
            self.active -= 1
        return {"calls": self.calls}


class FixedTimes(BaseTrigger):
    """Fires at the given instants, in order, then never again."""

    def __init__(self, times: list[datetime]) -> None:
        self.times = times

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        later = [t for t in self.times if previous is None or t > previous]
        return later[0] if later else None


@dataclass(frozen=True)
class FixedSchedule:
    """A test schedule: fixed instants with a given misfire grace time."""

    times: tuple[datetime, ...]
    misfire_grace_time: int | None = 30

    def describe(self) -> str:
        return "at fixed times"

    def next_run(self, calendar: Calendar, after: datetime) -> datetime | None:
        return None

    def trigger(self, calendar: Calendar) -> BaseTrigger:
        return FixedTimes(list(self.times))


@pytest.fixture
def started() -> Iterator[list[JobScheduler]]:
    """Schedulers a test starts; each is stopped afterwards if the test did not."""
    schedulers: list[JobScheduler] = []
    yield schedulers
    for scheduler in schedulers:
        if scheduler.scheduler.running:
            scheduler.stop(timeout=5)


def start(started: list[JobScheduler], meter: Meter, *jobs: Job) -> JobScheduler:
    """Start a JobScheduler for ``jobs`` and remember it for clean-up."""
    scheduler = JobScheduler(meter, list(jobs))
    started.append(scheduler)
    scheduler.start()
    return scheduler


def job_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    """The scheduler's log lines about the job ``name`` (runs, skips, misses)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tsmeter.scheduler" and r.getMessage().startswith(f"job={name} ")
    ]


def run_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    """The log lines of runs of the job ``name`` that happened (ok or error)."""
    return [
        line
        for line in job_lines(caplog, name)
        if line.startswith((f"job={name} ok ", f"job={name} error "))
    ]


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tsmeter.scheduler")


def test_a_slow_job_never_overlaps_itself(
    meter: Meter, started: list[JobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """A job that takes longer than its interval runs one instance at a time; the runs due
    meanwhile are skipped with a warning line, and each real run logs exactly one line."""
    probe = Probe(sleep=0.35)
    scheduler = start(started, meter, Job("slow", probe, Every(timedelta(seconds=0.1))))
    assert wait_until(lambda: probe.calls >= 3, timeout=10)
    assert scheduler.stop(timeout=5)
    assert probe.max_active == 1
    ok = run_lines(caplog, "slow")
    assert len(ok) == probe.calls
    assert all(re.fullmatch(r"job=slow ok calls=\d+ duration=\d+\.\d\ds", line) for line in ok)
    assert any("skipped: the previous run is still going" in line for line in caplog.messages)


def test_runs_that_piled_up_are_coalesced(
    meter: Meter, started: list[JobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """Three fire times already past when the scheduler starts give one run, not three."""
    now = datetime.now(UTC)
    past = tuple(now - timedelta(seconds=s) for s in (3, 2, 1))
    probe = Probe()
    schedule = FixedSchedule((*past, now + timedelta(hours=1)))
    start(started, meter, Job("late", probe, schedule))
    assert wait_until(lambda: probe.calls >= 1, timeout=5)
    time.sleep(0.3)
    assert probe.calls == 1
    assert len(run_lines(caplog, "late")) == 1


def test_a_run_later_than_its_grace_time_is_skipped(
    meter: Meter, started: list[JobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """A fire time older than misfire_grace_time is logged as missed and not run."""
    probe = Probe()
    long_ago = datetime.now(UTC) - timedelta(seconds=30)
    start(started, meter, Job("stale", probe, FixedSchedule((long_ago,), misfire_grace_time=1)))
    assert wait_until(lambda: bool(job_lines(caplog, "stale")), timeout=5)
    assert probe.calls == 0
    (line,) = job_lines(caplog, "stale")
    assert line.startswith("job=stale missed:")


def test_period_jobs_make_up_a_missed_run_however_late() -> None:
    """Aggregation schedules have no grace limit: a missed run still happens, once."""
    registry = default_jobs()
    assert registry.get("aggregate-yearly").schedule.misfire_grace_time is None
    assert registry.get("evaluate-thresholds").schedule.misfire_grace_time == 60


def test_failures_are_logged_and_the_scheduler_goes_on(
    meter: Meter, started: list[JobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """A tsmeter error is one line; another exception adds its traceback; later runs go on."""
    calls: list[int] = []

    def flaky(meter: Meter) -> Counts:
        calls.append(1)
        if len(calls) == 1:
            raise StorageUnavailableError("store is down")
        if len(calls) == 2:
            raise RuntimeError("bug\nwith two lines")
        return {"n": len(calls)}

    scheduler = start(started, meter, Job("flaky", flaky, Every(timedelta(seconds=0.1))))
    assert wait_until(lambda: len(calls) >= 3, timeout=10)
    assert scheduler.stop(timeout=5)
    lines = run_lines(caplog, "flaky")
    assert re.fullmatch(
        r"job=flaky error duration=\d\.\d\ds error=StorageUnavailableError: store is down",
        lines[0],
    )
    assert lines[1].endswith("error=RuntimeError: bug with two lines")
    assert lines[2].startswith("job=flaky ok n=3 ")
    records = [r for r in caplog.records if r.getMessage() in lines[:2]]
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR]
    assert records[0].exc_info is None
    assert records[1].exc_info is not None


def test_stop_lets_the_running_job_finish_and_starts_no_new_run(
    meter: Meter, started: list[JobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """stop() waits for the run in progress, which logs its line; nothing runs afterwards."""
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def gated(meter: Meter) -> Counts:
        calls.append(1)
        entered.set()
        release.wait(5)
        return {"n": 1}

    scheduler = start(started, meter, Job("gated", gated, Every(timedelta(seconds=0.1))))
    assert entered.wait(5)
    threading.Timer(0.3, release.set).start()
    t0 = time.monotonic()
    assert scheduler.stop(timeout=5)
    assert 0.2 < time.monotonic() - t0 < 3
    assert scheduler.running() == []
    last_run = run_lines(caplog, "gated")[-1]
    assert last_run.startswith("job=gated ok n=1 ")
    assert caplog.messages.index(last_run) < caplog.messages.index("scheduler stopped")
    count = len(calls)
    time.sleep(0.4)
    assert len(calls) == count


def test_stop_is_bounded(
    meter: Meter, started: list[JobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """A run that outlasts the stop timeout makes stop() return False on time, naming it."""
    entered, release = threading.Event(), threading.Event()

    def stuck(meter: Meter) -> Counts:
        entered.set()
        release.wait(10)
        return {}

    scheduler = start(started, meter, Job("stuck", stuck, Every(timedelta(seconds=0.1))))
    try:
        assert entered.wait(5)
        t0 = time.monotonic()
        assert scheduler.stop(timeout=0.3) is False
        assert time.monotonic() - t0 < 2
        assert scheduler.running() == ["stuck"]
        assert "scheduler stopped; still running after 0.3s: stuck" in caplog.messages
    finally:
        release.set()
    assert wait_until(lambda: scheduler.running() == [], timeout=5)


def test_stop_gives_up_when_asked(meter: Meter, started: list[JobScheduler]) -> None:
    """``give_up`` (a second signal) ends the wait before the timeout."""
    entered, release = threading.Event(), threading.Event()

    def stuck(meter: Meter) -> Counts:
        entered.set()
        release.wait(10)
        return {}

    scheduler = start(started, meter, Job("stuck", stuck, Every(timedelta(seconds=0.1))))
    try:
        assert entered.wait(5)
        t0 = time.monotonic()
        assert scheduler.stop(timeout=30, give_up=lambda: time.monotonic() - t0 > 0.2) is False
        assert time.monotonic() - t0 < 2
    finally:
        release.set()
    assert wait_until(lambda: scheduler.running() == [], timeout=5)


def test_default_jobs_are_scheduled_by_their_triggers(meter: Meter) -> None:
    """Each default job is an APScheduler job with max_instances=1, coalescing, and the next
    run time its schedule gives, in the meter's time zone."""
    scheduler = JobScheduler(meter, list(default_jobs()))
    before = datetime.now(UTC)
    scheduler.start(paused=True)
    try:
        jobs = {job.id: job for job in scheduler.scheduler.get_jobs()}
        assert set(jobs) == set(default_jobs().names())
        for job in jobs.values():
            assert (job.max_instances, job.coalesce) == (1, True)
        for name in ("aggregate-hourly", "aggregate-monthly"):
            schedule = default_jobs().get(name).schedule
            assert jobs[name].next_run_time == schedule.next_run(meter.calendar, before)
            assert jobs[name].misfire_grace_time is None
        assert jobs["evaluate-thresholds"].misfire_grace_time == 60
    finally:
        scheduler.stop(timeout=1)


def test_scheduled_aggregation_writes_summaries(
    meter: Meter, started: list[JobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """With an aggregation interval, the real aggregation job runs and logs its counts."""
    for hour in (1, 2, 3):
        meter.record("api_calls", "org", "o1", timestamp=datetime(2026, 1, 5, hour, tzinfo=UTC))
    (job,) = default_jobs().select(["aggregate-hourly"])
    every = Job(job.name, job.run, Every(timedelta(seconds=0.1)), job.description)
    scheduler = start(started, meter, every)

    assert wait_until(lambda: len(run_lines(caplog, "aggregate-hourly")) >= 2, timeout=10)
    assert scheduler.stop(timeout=5)
    first, second = run_lines(caplog, "aggregate-hourly")[:2]
    assert first.startswith("job=aggregate-hourly ok summaries=3 recomputed=3 records=3 ")
    assert second.startswith("job=aggregate-hourly ok summaries=0 recomputed=0 records=0 ")
