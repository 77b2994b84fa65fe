"""Long commands draw progress on a terminal and print nothing extra without one: aggregate
and posthog backfill, run as real processes with stderr on a pseudo-terminal (the only way to
give a child a real terminal here) or on a pipe."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tsmeter
from tests.posthog_capture import CaptureServer, capture_server

TSMETER = [sys.executable, "-m", "tsmeter"]


def run_with_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``args`` with stderr on a pseudo-terminal and stdout on a pipe; return the exit
    status, stdout, and what was written to the terminal."""
    main, secondary = pty.openpty()
    child = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary, env=env
    )
    os.close(secondary)
    seen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert child.stdout is not None
    out = child.stdout.read().decode()
    return child.wait(timeout=60), out, seen.decode(errors="replace")


def environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
    return {**clean, "XDG_DATA_HOME": str(tmp_path / "xdg"), "COLUMNS": "100", **extra}


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store with 3,000 records over two days."""
    path = str(tmp_path / "usage.db")
    with tsmeter.connect(path, mirror=False) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.record_batch([{"metricKey": "api_calls", "subjectType": "org",
                             "subjectId": f"o{i % 7}", "id": f"r{i}",
                             "timestamp": f"2026-01-0{5 + i % 2}T10:{i % 60:02d}:00Z"}
                            for i in range(3000)])  # fmt: skip
    return path


def test_aggregate_draws_a_bar_on_a_terminal_only(store: str, tmp_path: Path) -> None:
    """On a terminal stderr shows the bar, complete; on a pipe stderr stays empty; stdout is
    the same table either way."""
    args = [
        *TSMETER,
        "--store",
        store,
        "aggregate",
        "--all",
        "--from",
        "2026-01",
        "--to",
        "2026-02",
    ]
    status, out, terminal = run_with_terminal(args, environ(tmp_path))
    assert status == 0, terminal
    assert "Aggregating" in terminal and "100%" in terminal
    again = [*TSMETER, "--store", store, "aggregate", "--all", "--from", "2026-01", "--to",
             "2026-02"]  # fmt: skip
    piped = subprocess.run(again, capture_output=True, text=True, env=environ(tmp_path))
    assert piped.returncode == 0 and piped.stderr == ""
    assert piped.stdout.splitlines()[0].split() == out.splitlines()[0].split()
    assert len(piped.stdout.splitlines()) == len(out.splitlines()) == 2 + 5  # five periods


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with capture_server() as srv:
        yield srv


def test_backfill_draws_a_bar_on_a_terminal_only(
    store: str, tmp_path: Path, server: CaptureServer
) -> None:
    """backfill counts the records first on a terminal and fills the bar to them; on a pipe
    only its result line is printed."""
    env = environ(tmp_path, TSMETER_POSTHOG_API_KEY="phc_cli_test",
                  TSMETER_POSTHOG_HOST=server.host, TSMETER_POSTHOG_FLUSH_INTERVAL="0.05",
                  TSMETER_POSTHOG_BATCH_SIZE="500")  # fmt: skip
    args = [*TSMETER, "--store", store, "posthog", "backfill", "api_calls", "--from", "2026-01",
            "--to", "2026-02"]  # fmt: skip
    status, out, terminal = run_with_terminal(args, env)
    assert status == 0, terminal
    assert "Sending" in terminal and "100%" in terminal
    assert "Sent 3,000 of 3,000 records" in out
    piped = subprocess.run(args, capture_output=True, text=True, env=env)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and "Sent 3,000 of 3,000 records" in piped.stdout
