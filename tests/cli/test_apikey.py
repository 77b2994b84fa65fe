"""``tsmeter apikey`` (create, list, revoke) on the embedded store, on InfluxDB with a local
state file, and on a fleet's PostgreSQL state (real servers started by the tests)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.cli.conftest import Cli, one_line_error
from tests.hostile import NASTY_NAMES
from tsmeter import connect
from tsmeter.access import ApiKey
from tsmeter.cli.apikey import ONCE
from tsmeter.cli.output import cell_text
from tsmeter.metering.export import neutralise_cell

FIELDS = ["id", "name", "scopes", "createdAt", "revokedAt"]


def check(store: str, key: str) -> ApiKey | None:
    """What the store's keys grant ``key``, read by another process's Meter."""
    with connect(store, create=False, mirror=False) as meter:
        assert meter.api_keys is not None
        return meter.api_keys.authenticate(key)


def test_create_prints_the_key_once_with_a_warning(run: Cli) -> None:
    result = run.ok("apikey", "create", "billing service", "--scope", "ingest", "--scope", "READ")
    first, key = result.stdout.splitlines()
    assert first.startswith("Created API key ") and first.endswith(
        " (billing service) with scopes ingest, read."
    )
    key_id = first.split()[3]
    assert key.startswith(f"tsm_{key_id}_")
    assert result.stderr.strip() == ONCE
    granted = check(run.store, key)
    assert granted is not None and granted.allows("ingest") and granted.allows("read")
    assert not granted.allows("admin")
    listed = run.ok("apikey", "list").stdout
    assert key_id in listed and key.split("_", 2)[2] not in listed
    assert key.split("_", 2)[2].encode() not in run.path.read_bytes()


def test_create_in_json_and_csv(run: Cli) -> None:
    made = run.json("apikey", "create", "svc", "--scope", "admin")
    assert list(made) == [*FIELDS, "key"]
    assert (made["name"], made["scopes"], made["revokedAt"]) == ("svc", ["admin"], None)
    assert made["createdAt"].endswith("+00:00")
    assert check(run.store, made["key"]) is not None
    result = run.ok("apikey", "create", "svc2", "--scope", "read", fmt="csv")
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert list(row) == [*FIELDS, "key"]
    assert row["scopes"] == '["read"]' and row["key"].startswith(f"tsm_{row['id']}_")
    assert result.stderr.strip() == ONCE


def test_list_and_revoke_in_every_format(run: Cli) -> None:
    assert run.json("apikey", "list") == []
    assert run.ok("apikey", "list").stderr.strip() == "No API keys."
    first = run.json("apikey", "create", "a", "--scope", "ingest")
    second = run.json("apikey", "create", "b", "--scope", "read", "--scope", "ingest")
    listed = run.json("apikey", "list")
    assert [k["id"] for k in listed] == [first["id"], second["id"]]
    assert all(list(k) == FIELDS for k in listed)
    assert listed[1]["scopes"] == ["ingest", "read"]
    table = run.ok("apikey", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "SCOPES", "CREATED", "REVOKED"]
    revoked = run.ok("apikey", "revoke", first["id"])
    assert revoked.stdout.strip() == f"Revoked API key {first['id']} (a)."
    assert check(run.store, first["key"]) is None
    assert check(run.store, second["key"]) is not None
    again = run.json("apikey", "revoke", first["id"])
    rows = list(csv.DictReader(io.StringIO(run.ok("apikey", "list", fmt="csv").stdout)))
    assert rows[0]["revokedAt"] == again["revokedAt"] != ""
    assert rows[1]["revokedAt"] == ""
    assert "key" not in again and "key" not in rows[0]


def test_errors_name_what_is_wrong(run: Cli) -> None:
    unknown = run("apikey", "revoke", "0123456789abcdef")
    assert unknown.exit_code == 6
    assert "'0123456789abcdef' not found" in one_line_error(unknown)
    assert run("apikey", "create", "svc").exit_code == 2  # --scope is required
    bad_scope = run("apikey", "create", "svc", "--scope", "write")
    assert bad_scope.exit_code == 2 and "'write' is not one of" in bad_scope.stderr
    long_name = run("apikey", "create", "x" * 257, "--scope", "read")
    assert "name" in one_line_error(long_name)
    assert run.json("apikey", "list") == []


@pytest.mark.parametrize("name", [*NASTY_NAMES, '=HYPERLINK("x")', "\u202eevil", "+1"])
def test_hostile_names_are_data(run: Cli, name: str) -> None:
    made = run.json("apikey", "create", name, "--scope", "read")
    assert made["name"] == name
    assert run.json("apikey", "list")[0]["name"] == name
    table = run.ok("apikey", "list").stdout
    assert cell_text(name) in table
    rows = list(csv.DictReader(io.StringIO(run.ok("apikey", "list", fmt="csv").stdout)))
    assert rows[0]["name"] == neutralise_cell(name)  # a spreadsheet shows it as text


def _fleet_cli(url: str, tmp_path: Path) -> Cli:
    return Cli(CliRunner(), url, tmp_path / "unused")


def test_keys_live_in_the_state_file_of_an_influxdb_store(
    influx_db: tuple[Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server, db = influx_db
    state = tmp_path / "state.db"
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={state}"
    made = _fleet_cli(url, tmp_path).json("apikey", "create", "svc", "--scope", "ingest")
    assert state.exists() and made["key"].split("_", 2)[2].encode() not in state.read_bytes()
    assert check(url, made["key"]) is not None


def test_a_fleet_shares_its_keys_in_postgresql(
    influx_db: tuple[Any, str], pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key made through one host's store URL is accepted by another host's, and its
    revocation reaches both: the keys are in the fleet's PostgreSQL, not a local file."""
    monkeypatch.chdir(tmp_path)
    server, db = influx_db
    here = _fleet_cli(f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={pg_url}",
                      tmp_path / "a")  # fmt: skip
    there_url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=w2&state={pg_url}"
    made = here.json("apikey", "create", "fleet", "--scope", "admin")
    assert [k["id"] for k in _fleet_cli(there_url, tmp_path / "b").json("apikey", "list")] == [
        made["id"]
    ]
    assert check(there_url, made["key"]) is not None
    _fleet_cli(there_url, tmp_path / "b").ok("apikey", "revoke", made["id"])
    assert check(there_url, made["key"]) is None
    assert json.loads(here.ok("apikey", "list", fmt="json").stdout)[0]["revokedAt"]
