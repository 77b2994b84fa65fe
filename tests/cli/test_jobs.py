"""``tsmeter jobs`` and ``tsmeter scheduler``: in-process through click, and as a real process
stopped by SIGTERM. Every wait is bounded."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import tsmeter
from tests.cli.conftest import Cli
from tsmeter.cli.main import cli

RUN_LINE = re.compile(r"job=(?P<job>[a-z-]+) ok (?P<counts>(?:[a-z_]+=\d+ )*)duration=\d+\.\d\ds")


def test_the_root_command_has_scheduler_and_jobs() -> None:
    """``tsmeter scheduler run``, ``jobs run`` and ``jobs list`` are registered."""
    assert "scheduler" in cli.commands, "register tsmeter.cli.jobs.scheduler in cli/main.py"
    assert "jobs" in cli.commands, "register tsmeter.cli.jobs.jobs in cli/main.py"


def test_module_and_public_functions_are_documented() -> None:
    """The CLI module and what it exports carry docstrings; every command has an example."""
    module = importlib.import_module("tsmeter.cli.jobs")
    assert module.__doc__
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj):
            assert obj.__doc__, name
    for group in (module.scheduler, module.jobs):
        assert "Example" in (group.help or "")
        for command in group.commands.values():
            assert "Example" in (command.help or ""), command.name


def stored_summaries(path: Path) -> int:
    """How many summary rows the embedded store file holds."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM summaries").fetchone()
    return int(count)


def test_jobs_run_aggregate_hourly_writes_summaries(metered: Cli) -> None:
    """``jobs run aggregate-hourly`` rolls the records up once; a second run has nothing new."""
    for hour in ("08", "08", "09"):
        metered.ok(
            "usage", "record", "api_calls", "org", "o1", "--timestamp", f"2026-03-29T{hour}:10Z"
        )
    assert stored_summaries(metered.path) == 0
    first = metered.ok("jobs", "run", "aggregate-hourly").stdout.strip()
    assert RUN_LINE.fullmatch(first), first
    assert first.startswith("job=aggregate-hourly ok summaries=2 recomputed=2 records=3 ")
    doc = metered.json("jobs", "run", "aggregate-hourly")
    assert {k: doc[k] for k in ("job", "status", "summaries", "records")} == {
        "job": "aggregate-hourly",
        "status": "ok",
        "summaries": 0,
        "records": 0,
    }
    assert stored_summaries(metered.path) == 2
    with tsmeter.connect(metered.store) as meter:
        summaries = meter.get_usage_summaries(
            "api_calls",
            "HOURLY",
            start=datetime(2026, 3, 29, tzinfo=UTC),
            end=datetime(2026, 3, 30, tzinfo=UTC),
        )
    assert [s.total_quantity for s in summaries] == [2, 1]


def test_jobs_run_unknown_name_is_one_line(run: Cli) -> None:
    """An unknown job name is a one-line error that lists the known jobs (exit status 1)."""
    result = run("jobs", "run", "aggregate-hour")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.startswith(
        "Error: job: unknown job 'aggregate-hour' (known jobs: aggregate-hourly,"
    )
    assert "evaluate-thresholds" in line
    assert "Traceback" not in result.output


def test_jobs_run_evaluate_thresholds(metered: Cli) -> None:
    """``jobs run evaluate-thresholds`` prints the evaluation's counts (needs the monitor)."""
    metered.ok("threshold", "create", "api_calls", "org", "1000")
    line = metered.ok("jobs", "run", "evaluate-thresholds").stdout.strip()
    assert RUN_LINE.fullmatch(line), line
    assert line.startswith("job=evaluate-thresholds ok thresholds=1 subjects=")


def test_jobs_list_shows_schedules_in_the_zone(run: Cli) -> None:
    """``jobs list`` shows each job's schedule and next run; options change the schedules."""
    rows = run.json("--timezone", "Europe/Paris", "jobs", "list", "--lateness", "10m")
    by_name = {row["name"]: row for row in rows}
    assert by_name["aggregate-daily"]["schedule"] == "after each daily period + 10m"
    next_daily = datetime.fromisoformat(by_name["aggregate-daily"]["nextRun"])
    local = next_daily.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (0, 10)
    assert by_name["evaluate-thresholds"]["schedule"] == "every 1m"
    every = run.json("jobs", "list", "--aggregate-every", "90s", "--evaluate-every", "15s")
    assert {row["schedule"] for row in every} == {"every 90s", "every 15s"}
    table = run.ok("jobs", "list").stdout
    assert table.splitlines()[0].split() == ["NAME", "SCHEDULE", "NEXT", "RUN", "DESCRIPTION"]


def test_bad_duration_is_a_usage_error(run: Cli) -> None:
    """A duration that cannot be parsed is reported against its option."""
    line = run.fails("scheduler", "run", "--evaluate-every", "soon")
    assert "Invalid value for '--evaluate-every'" in line
    assert "expected a duration such as 30s, 5m or 1h, got 'soon'" in line


def test_scheduler_run_rejects_unknown_jobs_before_starting(run: Cli) -> None:
    """``scheduler run --job nope`` fails at once with the known job names."""
    line = run.fails("scheduler", "run", "--job", "nope")
    assert line.startswith("Error: job: unknown job 'nope' (known jobs: ")


# -- a real process ------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def run_scheduler_until(
    tmp_path: Path,
    store: str,
    job: str,
    runs: int,
    *options: str,
    sig: signal.Signals = signal.SIGTERM,
) -> tuple[int, float, list[str]]:
    """Start ``python -m tsmeter scheduler run`` for ``job``, wait for ``runs`` run lines, send
    ``sig``; return the exit status, seconds from the signal to exit, and the log lines."""
    log = tmp_path / "scheduler.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    command = [sys.executable, "-m", "tsmeter", "--store", store, "scheduler", "run"]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*command, "--job", job, *options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )

    def lines() -> list[str]:
        return log.read_text(encoding="utf-8", errors="replace").splitlines()

    try:
        started = wait_until(lambda: sum(f"job={job} " in x for x in lines()) >= runs, 30)
        assert started, "\n".join(lines())
        sent = time.monotonic()
        proc.send_signal(sig)
        status = proc.wait(timeout=10)
        return status, time.monotonic() - sent, lines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def check_log(lines: list[str], job: str, sig: str = "SIGTERM") -> list[str]:
    """The log is the start line, one line per run of ``job`` (plus a warning for each run
    skipped because the previous one was still going), the signal line and the stop line;
    return the run lines' messages."""
    messages = [re.sub(r"^\S+ \S+ [A-Z]+ ", "", line) for line in lines]
    messages = [m for m in messages if m != f"job={job} skipped: the previous run is still going"]
    assert messages[0].startswith(f"scheduler started: {job} every ")
    assert messages[-1] == "scheduler stopped"
    (received,) = [i for i, m in enumerate(messages) if m.startswith("received ")]
    assert messages[received].startswith(f"received {sig}: stopping")
    runs = messages[1:received] + messages[received + 1 : -1]
    assert all(RUN_LINE.fullmatch(m) and m.startswith(f"job={job} ok ") for m in runs), runs
    return runs


def test_scheduler_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """A real ``tsmeter scheduler run`` aggregates on schedule, logs one line per run and
    exits 0 within a few seconds of SIGTERM."""
    store = f"sqlite:///{tmp_path / 'usage.db'}"
    with tsmeter.connect(store) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        for hour in range(4):
            meter.record("api_calls", "org", "o1", timestamp=datetime(2026, 1, 5, hour, tzinfo=UTC))
    status, seconds, lines = run_scheduler_until(
        tmp_path, store, "aggregate-hourly", 2, "--aggregate-every", "0.3s"
    )
    assert status == 0, lines
    assert seconds < 5
    runs = check_log(lines, "aggregate-hourly")
    assert len(runs) >= 2
    assert runs[0].startswith("job=aggregate-hourly ok summaries=4 recomputed=4 records=4 ")
    assert all(r.startswith("job=aggregate-hourly ok summaries=0 ") for r in runs[1:])


def test_scheduler_process_evaluates_thresholds(tmp_path: Path) -> None:
    """With a short --evaluate-every the real process evaluates thresholds repeatedly (needs
    the threshold monitor)."""
    store = f"sqlite:///{tmp_path / 'usage.db'}"
    with tsmeter.connect(store) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.create_threshold("api_calls", "org", 5, "*")
        meter.record("api_calls", "org", "o1")
    status, seconds, lines = run_scheduler_until(
        tmp_path, store, "evaluate-thresholds", 2, "--evaluate-every", "0.3s"
    )
    assert status == 0, lines
    assert seconds < 5
    runs = check_log(lines, "evaluate-thresholds")
    assert len(runs) >= 2
    assert all(r.startswith("job=evaluate-thresholds ok thresholds=1 ") for r in runs)


def test_scheduler_process_stops_on_sigint_too(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops it the same way: exit status 0, no traceback."""
    store = f"sqlite:///{tmp_path / 'usage.db'}"
    tsmeter.connect(store).close()  # a store named by --store must exist
    status, seconds, lines = run_scheduler_until(
        tmp_path, store, "aggregate-daily", 1, "--aggregate-every", "0.2s", sig=signal.SIGINT
    )
    assert status == 0, lines
    assert seconds < 5
    check_log(lines, "aggregate-daily", "SIGINT")


def test_cron_jobs_evaluate_then_notify(metered: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """``jobs run evaluate-thresholds`` queues the notifications of the alerts it opens (SMTP
    settings from the environment); ``jobs run notifications`` sends them, once."""
    from tests.notify_servers import smtp_server

    with smtp_server() as smtp:
        for name, value in {"HOST": "127.0.0.1", "PORT": str(smtp.port), "SECURITY": "none",
                            "FROM": "alerts@tsmeter.test"}.items():  # fmt: skip
            monkeypatch.setenv(f"TSMETER_SMTP_{name}", value)
        metered.ok("threshold", "create", "api_calls", "org", "2", "--subject-id", "o1",
                   "--notify-email", "ops@o1.test")  # fmt: skip
        for _ in range(2):
            metered.ok("usage", "record", "api_calls", "org", "o1")
        assert metered.json("jobs", "run", "evaluate-thresholds")["exceeded"] == 1
        assert smtp.received == []  # queued, not sent: delivery is the notifications job
        assert metered.json("jobs", "run", "notifications")["delivered"] == 1
        assert metered.json("jobs", "run", "notifications")["delivered"] == 0
        assert metered.json("jobs", "run", "evaluate-thresholds")["exceeded"] == 0
        (mail,) = smtp.wait_for(1)
    assert mail.rcpt_tos == ["ops@o1.test"]
    assert "api_calls exceeded for org o1" in mail.message["Subject"]
