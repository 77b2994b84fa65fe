"""``tsmeter health`` against real servers: the session's influxd, a private influxd with
authentication (stopped halfway), a port nobody listens on, a socket that never answers,
PostgreSQL as the state store, and the embedded store."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result

from tests import influx_server
from tests.conftest import in_ci
from tests.influx_server import InfluxServer, find_influxd, free_port
from tsmeter import connect
from tsmeter.cli.exit_codes import ExitCode
from tsmeter.cli.main import cli


def _health(store: str, *args: str, fmt: str | None = None) -> Result:
    options = ["--store", store] + (["--format", fmt] if fmt else [])
    return CliRunner().invoke(cli, [*options, "health", *args])


def _healthy(store: str) -> dict[str, object]:
    result = _health(store, fmt="json")
    assert result.exit_code == 0, result.output
    doc: dict[str, object] = json.loads(result.stdout)
    assert doc["healthy"] is True
    return doc


def _unhealthy(store: str, *args: str) -> str:
    """Run health that must fail with the store status and one Error line; return it."""
    result = _health(store, *args)
    assert result.exit_code == ExitCode.STORE, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: unhealthy: "), result.stderr
    return lines[0]


def test_embedded_store_is_healthy(tmp_path: Path) -> None:
    """An existing embedded store: its catalog and its records are read."""
    path = tmp_path / "usage.db"
    with connect(str(path)) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
    doc = _healthy(str(path))
    checks = {c["check"]: c["detail"] for c in doc["checks"]}  # type: ignore[attr-defined]
    assert checks == {"catalog": "1 metric definitions read", "store": "answers a read"}
    text = _health(str(path)).stdout
    assert text.startswith(f"healthy: {path}\n")


def test_a_missing_embedded_store_is_unhealthy_and_not_created(tmp_path: Path) -> None:
    """A store file that is not there is a failure, and the check does not create it."""
    path = tmp_path / "nowhere" / "usage.db"
    line = _unhealthy(str(path))
    assert "no store at" in line
    assert not path.exists() and not path.parent.exists()


def test_influxdb_up_is_healthy(influx_db: tuple[InfluxServer, str], tmp_path: Path) -> None:
    """A reachable influxd with the database: ping and read pass; nothing is written."""
    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?state={tmp_path / 'state.db'}"
    doc = _healthy(url)
    assert [c["check"] for c in doc["checks"]] == ["catalog", "store"]  # type: ignore[attr-defined]
    assert doc["checks"][1]["detail"] == "answers a ping and a read"  # type: ignore[index]
    assert server.query("SHOW MEASUREMENTS", db)["results"][0].get("series") is None
    assert not list(tmp_path.glob("*outbox*"))


def test_influxdb_without_the_database_is_unhealthy(influxd: InfluxServer, tmp_path: Path) -> None:
    """The server answers a ping but the database is missing: the read fails, naming it."""
    url = f"influxdb://127.0.0.1:{influxd.port}/no_such_db?state={tmp_path / 's.db'}"
    line = _unhealthy(url)
    assert "reading the store" in line and "database not found: no_such_db" in line


def test_nobody_listening_is_unhealthy_fast(tmp_path: Path) -> None:
    """A port nobody listens on (connection refused) fails at the ping, quickly."""
    url = f"influxdb://127.0.0.1:{free_port()}/metering?state={tmp_path / 's.db'}"
    started = time.monotonic()
    line = _unhealthy(url)
    assert "pinging the store" in line and "does not answer a ping" in line
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_server_that_never_answers_is_unhealthy_within_the_timeout(
    silent_port: int, tmp_path: Path
) -> None:
    """--timeout bounds the whole check: a server that takes connections but never answers
    fails by the deadline, naming the step it hung in."""
    url = f"influxdb://127.0.0.1:{silent_port}/metering?state={tmp_path / 's.db'}"
    started = time.monotonic()
    line = _unhealthy(url, "--timeout", "0.5")
    assert time.monotonic() - started < 3
    assert "no answer within 0.5 s while pinging the store" in line
    line = _unhealthy(url, "--timeout", "5")  # the ping's own 1 s limit comes first
    assert "does not answer a ping" in line


@pytest.fixture
def auth_influxd(monkeypatch: pytest.MonkeyPatch) -> Iterator[InfluxServer]:
    """A private influxd 1.x with authentication on, an admin user and a database."""
    if find_influxd() is None:
        if in_ci():
            pytest.fail("CI needs a real influxd (make test installs it)", pytrace=False)
        pytest.skip("influxd not found")
    http = "  log-enabled = false\n"
    config = influx_server._CONFIG.replace(http, http + "  auth-enabled = true\n")
    assert config != influx_server._CONFIG
    monkeypatch.setattr(influx_server, "_CONFIG", config)
    server = InfluxServer().start()
    try:
        # with auth on and no user yet, 1.x accepts exactly this one statement unauthenticated
        server.query("CREATE USER admin WITH PASSWORD 's3cret-pw' WITH ALL PRIVILEGES")
        answer = requests.post(f"{server.url}/query", data={"q": "CREATE DATABASE metering"},
                               auth=("admin", "s3cret-pw"), timeout=10)  # fmt: skip
        assert answer.status_code == 200 and "error" not in answer.text, answer.text
        refused = requests.post(f"{server.url}/query", data={"q": "SHOW DATABASES"}, timeout=10)
        assert refused.status_code == 401  # the server really enforces authentication
        yield server
    finally:
        server.stop()


def test_influxdb_credentials_and_outage(auth_influxd: InfluxServer, tmp_path: Path) -> None:
    """Right password: healthy. Wrong password: the ping passes (1.x's /ping needs no
    credentials) but the read is refused, so unhealthy, without showing the password.
    Server stopped: unhealthy."""
    port = auth_influxd.port
    state = f"state={tmp_path / 'state.db'}"
    _healthy(f"influxdb://admin:s3cret-pw@127.0.0.1:{port}/metering?{state}")
    line = _unhealthy(f"influxdb://admin:wrong-pw@127.0.0.1:{port}/metering?{state}")
    assert "reading the store" in line and "401" in line
    assert "wrong-pw" not in line and "admin:***@" in line
    auth_influxd.halt()
    line = _unhealthy(f"influxdb://admin:s3cret-pw@127.0.0.1:{port}/metering?{state}")
    assert "does not answer a ping" in line and "s3cret-pw" not in line


def test_postgresql_state_store_up_and_down(
    influx_db: tuple[InfluxServer, str], pg_url: str
) -> None:
    """An InfluxDB store whose catalog lives in PostgreSQL: healthy while both answer;
    unhealthy, naming the state store, when PostgreSQL does not (InfluxDB still up)."""
    server, db = influx_db
    base = f"influxdb://127.0.0.1:{server.port}/{db}"
    doc = _healthy(f"{base}?state={pg_url}")
    assert [c["check"] for c in doc["checks"]] == ["catalog", "store"]  # type: ignore[attr-defined]
    down = f"postgresql://tsmeter:pw@127.0.0.1:{free_port()}/tsmeter"
    line = _unhealthy(f"{base}?state={down}")
    assert "opening the store" in line and "state store" in line
    assert ":pw@" not in line


def test_influxdb2_unreachable_is_unhealthy(tmp_path: Path) -> None:
    """The compose stack's kind of store (InfluxDB 2.x's own API, no ping there): the read
    through influxdb-client fails on a port nobody listens on. (No 2.x server runs here; the
    1.x tests above check credentials.)"""
    url = f"influxdb2://127.0.0.1:{free_port()}/metering?org=o&token=t0k&state={tmp_path / 's.db'}"
    line = _unhealthy(url)
    assert "reading the store" in line and "Connection refused" in line
    assert "t0k" not in line
