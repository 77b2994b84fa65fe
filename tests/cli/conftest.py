"""Fixtures for the CLI tests: a runner bound to a fresh embedded store per test."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tsmeter import connect
from tsmeter.cli.main import cli


@dataclass
class Cli:
    """Runs ``tsmeter --store <temp store> ...`` in-process and checks the outcome."""

    runner: CliRunner
    store: str
    path: Path

    def __call__(self, *args: str, fmt: str | None = None, input: str | None = None) -> Result:
        """Run a command line and return click's result (nothing asserted)."""
        options = ["--store", self.store] + (["--format", fmt] if fmt else [])
        return self.runner.invoke(cli, [*options, *args], input=input)

    def ok(self, *args: str, fmt: str | None = None, input: str | None = None) -> Result:
        """Run a command line that must succeed."""
        result = self(*args, fmt=fmt, input=input)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str, input: str | None = None) -> Any:
        """Run a command line with ``--format json`` and parse its output."""
        return json.loads(self.ok(*args, fmt="json", input=input).stdout)

    def fails(self, *args: str, fmt: str | None = None, input: str | None = None) -> str:
        """Run a command line that must fail with one ``Error:`` line and no traceback."""
        result = self(*args, fmt=fmt, input=input)
        return one_line_error(result)


def one_line_error(result: Result) -> str:
    """Assert ``result`` is a user error shown as one line; return that line."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """A CLI on an empty store in a temporary directory (the working directory too); the
    store file exists, as a named store must without ``--create``."""
    monkeypatch.delenv("TSMETER_STORE_URL", raising=False)
    monkeypatch.delenv("TSMETER_TIMEZONE", raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "usage.db"
    connect(f"sqlite:///{path}", mirror=False).close()
    return Cli(CliRunner(), f"sqlite:///{path}", path)


@pytest.fixture
def metered(run: Cli) -> Cli:
    """A CLI whose store defines api_calls (COUNT) and storage_gb (MAX)."""
    run.ok("metric", "define", "api_calls", "--aggregation-type", "count", "--unit", "calls")
    run.ok("metric", "define", "storage_gb", "--aggregation-type", "max", "--unit", "GB")
    return run
