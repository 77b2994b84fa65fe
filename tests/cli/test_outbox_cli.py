"""``tsmeter outbox``: status, list-quarantined, purge and retry on a real outbox file."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.cli.conftest import Cli, one_line_error
from tsmeter.cli.main import cli
from tsmeter.cli.outbox import outbox
from tsmeter.domain import RecordRow
from tsmeter.errors import RejectedError, StorageUnavailableError
from tsmeter.outbox.durable import Outbox

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


ONE = 1_000_000  # a quantity of 1 in units of api_calls (precision 6)


def rows(prefix: str, n: int) -> list[RecordRow]:
    """``n`` api_calls rows with ids ``prefix-i``, each of quantity 1."""
    return [RecordRow(f"{prefix}-{i}", "api_calls", "org", "o1", None, ONE, T0 + i, None, None)
            for i in range(n)]  # fmt: skip


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The group on the root command (as tsmeter/cli/main.py registers it), without
    $TSMETER_OUTBOX from the environment."""
    if "outbox" not in cli.commands:
        monkeypatch.setitem(cli.commands, "outbox", outbox)
    monkeypatch.delenv("TSMETER_OUTBOX", raising=False)


@pytest.fixture
def box_path(tmp_path: Path) -> Iterator[str]:
    """An outbox file left with 5 records deferred after a failure ("server down") and 2
    quarantined (q-3 and q-7, rejected with "HTTP 400: bad point ...")."""
    path = str(tmp_path / "outbox.db")
    state = {"down": False}

    def deliver(batch: list[RecordRow]) -> None:
        if state["down"]:
            raise StorageUnavailableError("server down")
        bad = [r.id for r in batch if r.id in ("q-3", "q-7")]
        if bad:
            raise RejectedError(f"HTTP 400: bad point {bad[0]}")

    box = Outbox(path, deliver, backoff_base=600, backoff_max=600)
    box.put(rows("q", 10))
    assert box.drain(10)
    state["down"] = True
    box.put(rows("d", 5))
    deadline = time.monotonic() + 10
    while box.status().deferred == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert box.close(timeout=0.1).pending == 5
    yield path


def test_status_shows_pending_deferred_and_quarantined(metered: Cli, box_path: str) -> None:
    """status reports the counts, the last error and the oldest batch's age, and leaves the
    retry schedule as it was."""
    doc = metered.json("outbox", "--outbox", box_path, "status")
    assert {k: doc[k] for k in ("pending", "batches", "deferred", "deferredRecords")} == {
        "pending": 5, "batches": 1, "deferred": 1, "deferredRecords": 5
    }  # fmt: skip
    assert (doc["quarantined"], doc["lastError"], doc["attempts"]) == (2, "server down", 1)
    assert doc["nextAttempt"] > doc["oldest"] and 0 <= doc["oldestAgeSeconds"] < 60
    table = metered.ok("outbox", "--outbox", box_path, "status").stdout
    assert "pending" in table and "server down" in table
    again = metered.json("outbox", "--outbox", box_path, "status")
    assert again["deferred"] == 1 and again["nextAttempt"] == doc["nextAttempt"]


def test_the_outbox_path_comes_from_the_option_else_the_environment(
    metered: Cli, box_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--outbox on the group wins over $TSMETER_OUTBOX; without either, a usage error."""
    error = metered.fails("outbox", "status")
    assert "no outbox: give --outbox PATH (or set TSMETER_OUTBOX)" in error
    monkeypatch.setenv("TSMETER_OUTBOX", box_path)
    assert metered.json("outbox", "status")["pending"] == 5
    other = str(tmp_path / "missing.db")
    assert metered.fails("outbox", "--outbox", other, "status") == (
        f"Error: no outbox file at {other!r}"
    )


def test_a_file_that_is_not_an_outbox_is_one_line(metered: Cli, tmp_path: Path) -> None:
    """The store's own file, or a file that is not SQLite, is refused in one line."""
    assert "is not a tsmeter outbox" in metered.fails("outbox", "--outbox", str(metered.path),
                                                       "status")  # fmt: skip
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert "is not a tsmeter outbox" in metered.fails("outbox", "--outbox", str(junk), "status")


def test_list_quarantined_shows_ids_and_the_servers_message(metered: Cli, box_path: str) -> None:
    """Each quarantined record with its id and the store's message, oldest first."""
    items = metered.json("outbox", "--outbox", box_path, "list-quarantined")
    assert [(i["recordId"], i["error"]) for i in items] == [
        ("q-3", "HTTP 400: bad point q-3"),
        ("q-7", "HTTP 400: bad point q-7"),
    ]
    assert items[0]["quarantinedAt"].endswith("+00:00")
    table = metered.ok("outbox", "--outbox", box_path, "list-quarantined", "--limit", "1").stdout
    assert "q-3" in table and "bad point q-3" in table and "q-7" not in table


def test_purge_asks_first_and_touches_only_the_quarantine(metered: Cli, box_path: str) -> None:
    """Without --yes purge asks (no: nothing changes); yes deletes the quarantined records and
    leaves the pending ones."""
    refused = metered("outbox", "--outbox", box_path, "purge", input="n\n")
    assert refused.exit_code == 1 and "Delete 2 quarantined record(s)" in refused.output
    assert metered.json("outbox", "--outbox", box_path, "status")["quarantined"] == 2
    done = metered.ok("outbox", "--outbox", box_path, "purge", input="y\n")
    assert f"Purged 2 quarantined record(s) from {box_path}." in done.stdout
    status = metered.json("outbox", "--outbox", box_path, "status")
    assert (status["quarantined"], status["pending"]) == (0, 5)
    doc = json.loads(metered.ok("--format", "json", "outbox", "--outbox", box_path, "purge",
                                "--yes").stdout)  # fmt: skip
    assert doc == {"path": box_path, "purged": 0}


def test_retry_needs_a_store_then_delivers_everything(
    metered: Cli, box_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retry refuses to guess the store; given one, it makes the deferred batch due, sends the
    quarantined records again and delivers them all."""
    no_store = metered.runner.invoke(cli, ["outbox", "--outbox", box_path, "retry"])
    assert no_store.exit_code == 2
    assert "give --store URL (or set TSMETER_STORE_URL)" in one_line_error(no_store)
    doc = metered.json("outbox", "--outbox", box_path, "retry", "--timeout", "30")
    assert {k: doc[k] for k in ("madeDue", "requeued", "delivered", "pending", "quarantined")} == {
        "madeDue": 5, "requeued": 2, "delivered": 7, "pending": 0, "quarantined": 0
    }  # fmt: skip
    assert doc["done"] is True and doc["deliveredBy"] == "this command"
    got = metered.json("usage", "get", "api_calls")
    assert sorted(r["id"] for r in got) == ["d-0", "d-1", "d-2", "d-3", "d-4", "q-3", "q-7"]
    assert {r["quantity"] for r in got} == {"1.000000"}
    status = metered.json("outbox", "--outbox", box_path, "status")
    assert (status["pending"], status["quarantined"]) == (0, 0)
    monkeypatch.setenv("TSMETER_OUTBOX", box_path)
    text = metered.ok("outbox", "retry").stdout
    assert "made due 0 deferred record(s), re-queued 0 quarantined; delivered 0" in text


def test_retry_to_a_store_that_does_not_exist_creates_nothing(
    box_path: str, tmp_path: Path
) -> None:
    """retry names its store like every command: a missing store file is an error (status 5)
    unless --create, and nothing is created; the records stay in the outbox."""
    missing = tmp_path / "nowhere" / "store.db"
    result = CliRunner().invoke(
        cli, ["--store", str(missing), "outbox", "--outbox", box_path, "retry", "--timeout", "5"]
    )
    assert result.exit_code == 5, result.output
    assert str(missing) in one_line_error(result)
    assert not missing.exists() and not missing.parent.exists()
    status = CliRunner().invoke(cli, ["--format", "json", "outbox", "--outbox", box_path, "status"])
    assert json.loads(status.stdout)["pending"] == 5


def test_the_schema_the_commands_read_is_the_outboxs(tmp_path: Path) -> None:
    """The columns status reads exist in a file the outbox itself created (a guard against
    the two drifting apart)."""
    path = str(tmp_path / "o.db")
    Outbox(path, lambda batch: None).close()
    conn = sqlite3.connect(path)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox_batches)")}
    quarantine = {row[1] for row in conn.execute("PRAGMA table_info(outbox_quarantine)")}
    conn.close()
    assert columns >= {"seq", "n", "created_at", "attempts", "next_attempt_at", "last_error"}
    assert quarantine >= {"seq", "record_id", "error", "quarantined_at"}


def test_every_outbox_command_has_an_example() -> None:
    """The group and each command document an example in their help."""
    commands: list[click.Command] = [outbox, *outbox.commands.values()]
    assert sorted(outbox.commands) == ["list-quarantined", "purge", "retry", "status"]
    assert all("Example" in (c.help or "") for c in commands)


def test_the_module_and_its_public_names_are_documented() -> None:
    """tsmeter.cli.outbox and what it exports carry docstrings."""
    import tsmeter.cli.outbox as module

    assert module.__doc__
    assert all(getattr(module, name).__doc__ for name in module.__all__)
