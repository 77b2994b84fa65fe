"""Every file tsmeter creates is 0600 and every directory 0700, whatever the umask allows."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import tsmeter
from tests.influx_server import InfluxServer
from tsmeter.cli.main import cli
from tsmeter.files import open_private, private_dir, private_file
from tsmeter.integrations.notify.log import DeliveryLog
from tsmeter.integrations.posthog import Journal

WEBHOOK = "https://ops:s3cret@hooks.example.com/usage?token=t0ken"


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """Run each test under umask 022, the usual default that lets others read new files."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(top: Path) -> dict[str, int]:
    """The permission bits of everything under ``top``, by path relative to it."""
    found = {}
    for root, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            path = Path(root) / name
            found[str(path.relative_to(top))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(top: Path) -> dict[str, int]:
    """Every directory under ``top`` is 0700 and every file 0600; return what was found."""
    found = modes(top)
    wrong = {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o700 if (top / name).is_dir() else 0o600)
    }
    assert wrong == {}, wrong
    return found


def test_cli_run_creates_private_store_outbox_and_data_directory(tmp_path: Path) -> None:
    """The default data directory, the store and the outbox a CLI session creates are private."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "TSMETER_STORE_URL": ""}
    runner = CliRunner()
    outbox = ["--outbox", str(tmp_path / "queue" / "outbox.db")]
    for args in (
        ["metric", "define", "api_calls", "--aggregation-type", "count"],
        [*outbox, "usage", "record", "api_calls", "org", "org-1", "3"],
        ["threshold", "create", "api_calls", "org", "10", "--notify-webhook", WEBHOOK],
        ["alert", "evaluate"],
    ):
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 0, result.output
    found = assert_private(tmp_path)
    assert {"xdg", "xdg/tsmeter", "xdg/tsmeter/tsmeter.db", "queue/outbox.db"} <= set(found)


def test_demo_store_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tsmeter demo`` (store, thresholds, alerts) leaves only private files behind."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "demo" / "nested" / "demo.db"
    argv = ["--store", str(store), "--create", "demo", "--records", "100"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    assert "demo/nested/demo.db" in assert_private(tmp_path)


def test_open_files_and_their_wal_companions_are_private(tmp_path: Path) -> None:
    """With store, outbox, delivery log and journal open, they and their -wal/-shm are 0600."""
    state = tmp_path / "state" / "usage.db"
    with tsmeter.connect(str(state), outbox=str(tmp_path / "ob" / "outbox.db")) as meter:
        meter.define_metric("api_calls", aggregation_type="count")
        meter.record("api_calls", "org", "org-1", 1)
        meter.flush()
        log = DeliveryLog(str(tmp_path / "logs" / "notify.db"))
        journal = Journal(str(tmp_path / "logs" / "journal.db"))
        try:
            found = assert_private(tmp_path)
        finally:
            log.close()
            journal.close()
    names = set(found)
    for db in ("state/usage.db", "ob/outbox.db", "logs/notify.db", "logs/journal.db"):
        assert {db, f"{db}-wal", f"{db}-shm"} <= names, sorted(names)
    assert "ob/outbox.db.flush.lock" in names


def test_influx_state_ledger_and_lock_file_are_private(
    influx_db: tuple[InfluxServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a real influxd: the state file, the id ledger, the host lock file and the
    default outbox are 0600."""
    server, db = influx_db
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "tmp").mkdir(mode=0o700)
    url = f"influxdb://127.0.0.1:{server.port}/{db}?state={tmp_path / 'st' / 'state.db'}"
    with tsmeter.connect(url) as meter:
        meter.define_metric("api_calls", aggregation_type="count")
        meter.record("api_calls", "org", "org-1", 1)
        assert meter.flush(30)  # delivered: the store has written
        found = assert_private(tmp_path)
    assert {"st/state.db", "st/state.db-wal"} <= set(found)
    assert any(name.startswith("xdg/tsmeter/outbox/") for name in found), sorted(found)
    assert any(name.startswith("tmp/tsmeter-influx-") for name in found), sorted(found)


def test_existing_files_and_directories_keep_their_mode(tmp_path: Path) -> None:
    """A store file and directory the user made 0644/0755 are opened, never chmod-ed."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    store = shared / "usage.db"
    store.touch(mode=0o644)
    with tsmeter.connect(str(store)) as meter:
        meter.define_metric("api_calls", aggregation_type="count")
        assert stat.S_IMODE(Path(f"{store}-wal").stat().st_mode) == 0o644
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE(store.stat().st_mode) == 0o644


def test_helpers_create_missing_parents_privately(tmp_path: Path) -> None:
    """private_dir, private_file and open_private make every missing level private."""
    private_dir(tmp_path / "a" / "b")
    assert private_file(tmp_path / "c" / "d" / "f.db") is True
    assert private_file(tmp_path / "c" / "d" / "f.db") is False
    with open_private(tmp_path / "c" / "x.lock") as handle:
        handle.write("")
    assert_private(tmp_path)


def test_a_store_that_cannot_be_created_is_a_storage_error(tmp_path: Path) -> None:
    """A store path under a regular file gives StorageUnavailableError, not a raw OSError."""
    (tmp_path / "file").write_text("")
    with pytest.raises(tsmeter.StorageUnavailableError, match="cannot"):
        tsmeter.connect(str(tmp_path / "file" / "usage.db"))
