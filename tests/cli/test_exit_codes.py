"""Exit statuses: distinct per outcome, defined once (ExitCode), and documented from it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tests.cli.conftest import Cli, one_line_error
from tools.cli_reference import render
from tsmeter.cli.exit_codes import ExitCode
from tsmeter.cli.main import cli, exit_code
from tsmeter.cli.reconcile import DIFFERENCES_FOUND
from tsmeter.errors import (
    ConflictError,
    MissingExtraError,
    NotFoundError,
    QuotaExceededError,
    RejectedError,
    StorageUnavailableError,
    ValidationError,
)


def test_the_statuses_are_distinct_and_as_documented() -> None:
    """The numbers scripts rely on: each outcome its own status."""
    assert {c.name: c.value for c in ExitCode} == {
        "OK": 0, "ERROR": 1, "USAGE": 2, "OVER_LIMIT": 3, "DRIFT": 4, "STORE": 5, "NOT_FOUND": 6,
    }  # fmt: skip
    assert DIFFERENCES_FOUND == 4


def test_each_error_class_maps_to_its_status() -> None:
    """tsmeter's error tree maps onto the statuses (subclasses follow their branch)."""
    cases = {
        NotFoundError("metric 'x' not found"): 6,
        StorageUnavailableError("down"): 5,
        RejectedError("refused"): 5,
        QuotaExceededError("over", None): 3,
        ValidationError("f", "bad"): 1,
        ConflictError("exists"): 1,
        MissingExtraError("report", "matplotlib", "tsmeter report"): 1,
    }
    assert {type(e).__name__: int(exit_code(e)) for e in cases} == {
        type(e).__name__: status for e, status in cases.items()
    }


def test_threshold_check_tells_blocked_from_an_unknown_metric(metered: Cli) -> None:
    """Blocked is 3, an unknown metric 1 with an Error line, allowed 0: three outcomes."""
    metered.ok("threshold", "create", "api_calls", "org", "2", "--action", "block")
    metered.ok("usage", "record", "api_calls", "org", "org-1")
    assert metered("threshold", "check", "api_calls", "org", "org-1").exit_code == 0
    blocked = metered("threshold", "check", "api_calls", "org", "org-1", "--quantity", "2")
    assert blocked.exit_code == 3 and '"allowed"' not in blocked.stdout
    assert re.search(r"^allowed +no$", blocked.stdout, re.MULTILINE), blocked.stdout
    unknown = metered("threshold", "check", "nope", "org", "org-1")
    assert "unknown metric 'nope'" in one_line_error(unknown)
    assert unknown.exit_code == 1


def test_not_found_store_and_usage_statuses(metered: Cli, tmp_path: Path) -> None:
    """A missing metric 6, a missing store 5, bad usage 2."""
    assert metered("metric", "get", "nope").exit_code == 6
    assert metered("threshold", "delete", "no-such-id").exit_code == 6
    gone = CliRunner().invoke(cli, ["--store", str(tmp_path / "gone.db"), "metric", "list"])
    assert gone.exit_code == 5
    assert metered("metric", "define").exit_code == 2
    assert metered("no-such-command").exit_code == 2


def test_a_real_process_exits_with_the_status(tmp_path: Path) -> None:
    """The status reaches the shell (an IntEnum is a valid exit status of a process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
    done = subprocess.run(
        [sys.executable, "-m", "tsmeter", "--store", str(tmp_path / "x.db"), "metric", "list"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert done.stderr.startswith("Error: no store at ")


def test_help_and_the_reference_list_every_status() -> None:
    """The root --help ends with every status, and the CLI reference has the table, both
    printed from ExitCode."""
    text = CliRunner().invoke(cli, ["--help"], terminal_width=200).stdout
    summary = " ".join(text.split())
    for code in ExitCode:
        assert f"{code.value} {code.label}" in summary
    reference = render()
    assert "## Exit status" in reference and "- [Exit status](#exit-status)" in reference
    for code in ExitCode:
        assert f"| {code.value} | `{code.name}` | {code.meaning} |" in reference
