"""The scheduler with job leases (SQLite state file, several schedulers in one process): only
the holder runs jobs, a clean stop hands over at once, a holder cut off from the lease store
stops starting runs before another takes over, and a period that ran is not run again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tsmeter
from tsmeter import Meter
from tsmeter.adapters.sqlite.leases import SQLiteLeases
from tsmeter.domain import PeriodType
from tsmeter.domain.validation import from_ns
from tsmeter.errors import ValidationError
from tsmeter.jobs.registry import AfterEachPeriod, Counts, Every, Job
from tsmeter.jobs.scheduler import JobScheduler
from tsmeter.ports import Capabilities

TTL = 0.6


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@dataclass
class Runs:
    """Every run of a job: (scheduler name, monotonic time)."""

    items: list[tuple[str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def job(self, who: str) -> Callable[[Meter], Counts]:
        def run(meter: Meter) -> Counts:
            with self.lock:
                self.items.append((who, time.monotonic()))
            return {"runs": 1}

        return run

    def by(self, who: str) -> list[float]:
        with self.lock:
            return [at for name, at in self.items if name == who]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "usage.db"
    with tsmeter.connect(f"sqlite:///{path}"):
        pass
    yield path


@pytest.fixture
def meters(state: Path) -> Iterator[Callable[[], Meter]]:
    """Meters on one state file, each with its own SQLiteLeases connection (as separate
    processes would have)."""
    opened: list[tuple[Meter, SQLiteLeases]] = []

    def make() -> Meter:
        base = tsmeter.connect(f"sqlite:///{state}")
        leases = SQLiteLeases(str(state))
        opened.append((base, leases))
        return Meter(base.store, base.catalog, capabilities=Capabilities(leases=leases))

    yield make
    for base, leases in opened:
        leases.close()
        base.close()


@pytest.fixture
def started() -> Iterator[list[JobScheduler]]:
    schedulers: list[JobScheduler] = []
    yield schedulers
    for scheduler in schedulers:
        if scheduler.scheduler.running:
            scheduler.stop(timeout=5)


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tsmeter.scheduler")


def start(started: list[JobScheduler], meter: Meter, holder: str, *jobs: Job) -> JobScheduler:
    scheduler = JobScheduler(meter, list(jobs), lease_ttl=TTL, holder=holder)
    started.append(scheduler)
    scheduler.start()
    return scheduler


def test_only_the_holder_runs_and_a_clean_stop_hands_over_at_once(
    meters: Callable[[], Meter], started: list[JobScheduler]
) -> None:
    runs = Runs()
    tick = Every(timedelta(seconds=0.05))
    a = start(started, meters(), "a", Job("tick", runs.job("a"), tick))
    b = start(started, meters(), "b", Job("tick", runs.job("b"), tick))
    assert a.keeper is not None and b.keeper is not None
    assert a.keeper.holds() and not b.keeper.holds()
    time.sleep(1.5)  # several renewals (every ttl/3 = 0.2 s)
    assert len(runs.by("a")) >= 10
    assert runs.by("b") == []
    assert a.stop(timeout=5)
    stopped = time.monotonic()
    assert wait_until(lambda: bool(runs.by("b")), timeout=5)
    # released: b takes it at its next try (ttl/3) and runs at its next tick
    assert runs.by("b")[0] - stopped < TTL / 3 + 0.05 + 0.3
    assert max(runs.by("a")) < min(runs.by("b"))


def test_a_holder_cut_off_from_the_lease_store_stops_before_another_starts(
    meters: Callable[[], Meter], started: list[JobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """a's lease file connection breaks: a keeps running only until ttl after its last
    renewal, b takes over once the lease expired, and their runs never overlap in time."""
    runs = Runs()
    tick = Every(timedelta(seconds=0.05))
    meter_a = meters()
    a = start(started, meter_a, "a", Job("tick", runs.job("a"), tick))
    start(started, meters(), "b", Job("tick", runs.job("b"), tick))
    assert wait_until(lambda: len(runs.by("a")) >= 3)
    leases_a = meter_a.capabilities.leases
    assert isinstance(leases_a, SQLiteLeases)
    leases_a.close()  # every later call of a's raises StorageUnavailableError
    cut = time.monotonic()
    assert wait_until(lambda: bool(runs.by("b")), timeout=5)
    last_a, first_b = max(runs.by("a")), min(runs.by("b"))
    assert last_a < first_b
    assert last_a - cut < TTL + 0.1  # a stopped within ttl of its last renewal
    assert first_b - cut < TTL + TTL / 3 + 0.4  # the documented bound, plus a tick and slack
    assert any("lease: cannot renew or acquire" in m for m in caplog.messages)
    assert any("lease lost: a stops starting runs" in m for m in caplog.messages)
    assert a.keeper is not None and not a.keeper.holds()


def test_a_period_that_ran_is_not_run_again_by_the_next_holder(
    meters: Callable[[], Meter], started: list[JobScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    """Taking the lease runs each period job at once for its latest period (the catch-up);
    the next holder's catch-up finds that period finished and skips it."""
    runs = Runs()
    hourly = AfterEachPeriod(PeriodType.HOURLY, timedelta(0))
    a = start(started, meters(), "a", Job("agg", runs.job("a"), hourly))
    assert wait_until(lambda: len(runs.by("a")) == 1)
    assert a.stop(timeout=5)
    b = start(started, meters(), "b", Job("agg", runs.job("b"), hourly))
    assert b.keeper is not None and b.keeper.holds()
    latest = hourly.period_of(b.meter.calendar, datetime.now(UTC))
    skipped = f"job=agg skipped: the period from {from_ns(latest).isoformat()} has run"
    assert wait_until(lambda: any(m.startswith(skipped) for m in caplog.messages))
    time.sleep(0.2)
    assert runs.by("b") == []
    assert len(runs.by("a")) == 1


def test_without_leases_every_scheduler_runs_every_job(
    meters: Callable[[], Meter], started: list[JobScheduler], state: Path
) -> None:
    runs = Runs()
    tick = Every(timedelta(seconds=0.05))
    with tsmeter.connect(f"sqlite:///{state}") as plain:
        assert plain.capabilities.leases is None
        for who in ("a", "b"):
            scheduler = JobScheduler(plain, [Job("tick", runs.job(who), tick)])
            started.append(scheduler)
            assert scheduler.keeper is None
            scheduler.start()
        assert wait_until(lambda: len(runs.by("a")) >= 3 and len(runs.by("b")) >= 3)
        for scheduler in started:
            scheduler.stop(timeout=5)


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), float("inf")])
def test_a_bad_lease_ttl_is_refused(meters: Callable[[], Meter], ttl: float) -> None:
    with pytest.raises(ValidationError) as caught:
        JobScheduler(meters(), [], lease_ttl=ttl)
    assert caught.value.field == "lease_ttl"


def test_the_cli_refuses_a_lease_ttl_that_is_not_positive(state: Path) -> None:
    from click.testing import CliRunner

    from tsmeter.cli.main import cli

    result = CliRunner().invoke(
        cli, ["--store", f"sqlite:///{state}", "scheduler", "run", "--lease-ttl", "0s"]
    )
    assert result.exit_code == 2
    assert "Invalid value for '--lease-ttl': must be positive" in result.output
