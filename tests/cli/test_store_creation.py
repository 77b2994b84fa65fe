"""A store named by --store or $TSMETER_STORE_URL must exist unless --create asks for a new one;
a file that is not a tsmeter store is refused and left as it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import tsmeter
from tests.cli.conftest import one_line_error
from tsmeter.cli.main import cli
from tsmeter.errors import StorageUnavailableError


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An environment naming no store, with the default store's directory in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return {"XDG_DATA_HOME": str(tmp_path / "xdg"), "TSMETER_STORE_URL": "",
            "TSMETER_POSTHOG_API_KEY": ""}  # fmt: skip


def test_a_missing_store_is_an_error_and_nothing_is_created(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The issue's case: a path in a directory that does not exist is exit 5 with one line,
    and neither the directory nor a file appears."""
    path = tmp_path / "nonexistent" / "dir" / "x.db"
    result = CliRunner().invoke(cli, ["--store", str(path), "metric", "list"], env=env)
    line = one_line_error(result)
    assert result.exit_code == 5
    assert line.startswith(f"Error: no store at {str(path)!r}") and "--create" in line
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("form", ["path", "url", "env"])
def test_create_makes_the_store_then_it_opens_without(
    tmp_path: Path, env: dict[str, str], form: str
) -> None:
    """--create creates the file (with its directories); later commands open it without the
    flag; the same rule holds for a sqlite:/// URL and for $TSMETER_STORE_URL."""
    path = tmp_path / "new" / "usage.db"
    url = f"sqlite:///{path}" if form != "path" else str(path)
    store = [] if form == "env" else ["--store", url]
    env = {**env, "TSMETER_STORE_URL": url} if form == "env" else env
    runner = CliRunner()
    refused = runner.invoke(cli, [*store, "metric", "list"], env=env)
    assert refused.exit_code == 5 and not path.exists(), refused.output
    created = runner.invoke(cli, [*store, "--create", "metric", "define", "calls"], env=env)
    assert created.exit_code == 0, created.output
    assert path.is_file()
    again = runner.invoke(cli, [*store, "--format", "json", "metric", "list"], env=env)
    assert again.exit_code == 0, again.output
    assert '"key": "calls"' in again.stdout


def test_the_default_store_is_created_on_first_use(tmp_path: Path, env: dict[str, str]) -> None:
    """Without --store or $TSMETER_STORE_URL the default file is created, no flag needed."""
    result = CliRunner().invoke(cli, ["metric", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "xdg" / "tsmeter" / "tsmeter.db").is_file()


def test_a_file_that_is_not_sqlite_is_refused_and_kept(tmp_path: Path, env: dict[str, str]) -> None:
    """A text file named as the store is refused, even with --create, and not modified."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"quarterly numbers\n")
    result = CliRunner().invoke(cli, ["--store", str(path), "--create", "metric", "list"], env=env)
    line = one_line_error(result)
    assert result.exit_code == 5
    assert line == f"Error: {str(path)!r} is not a tsmeter store: it is not a SQLite database"
    assert path.read_bytes() == b"quarterly numbers\n"


def test_another_sqlite_database_is_refused_and_kept(tmp_path: Path, env: dict[str, str]) -> None:
    """A SQLite database of something else gets no tsmeter tables: an error naming its tables."""
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.close()
    result = CliRunner().invoke(cli, ["--store", str(path), "--create", "metric", "list"], env=env)
    line = one_line_error(result)
    assert result.exit_code == 5
    assert "is not a tsmeter store" in line and "tables customers" in line
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["customers"]


def test_an_empty_file_is_a_new_store(tmp_path: Path, env: dict[str, str]) -> None:
    """An empty file (from mktemp or touch) exists, so it needs no --create: it becomes a store."""
    path = tmp_path / "empty.db"
    path.touch()
    result = CliRunner().invoke(cli, ["--store", str(path), "metric", "define", "calls"], env=env)
    assert result.exit_code == 0, result.output
    with tsmeter.connect(str(path), create=False, mirror=False) as meter:
        assert [m.key for m in meter.list_metrics()] == ["calls"]


def test_help_and_bad_usage_never_touch_the_store(tmp_path: Path, env: dict[str, str]) -> None:
    """Argument errors stay usage errors (2), before the store rule is applied."""
    path = tmp_path / "x.db"
    result = CliRunner().invoke(cli, ["--store", str(path), "metric", "get"], env=env)
    assert result.exit_code == 2
    assert not path.exists()


def test_connect_creates_by_default_and_refuses_when_asked(tmp_path: Path) -> None:
    """In Python, connect() keeps creating a missing file; create=False refuses it."""
    missing = tmp_path / "a" / "b.db"
    with pytest.raises(StorageUnavailableError, match="no store at"):
        tsmeter.connect(str(missing), create=False, mirror=False)
    assert not missing.parent.exists()
    with tsmeter.connect(str(missing), mirror=False) as meter:
        meter.define_metric("calls")
    with tsmeter.connect(f"sqlite:///{missing}", create=False, mirror=False) as meter:
        assert [m.key for m in meter.list_metrics()] == ["calls"]
