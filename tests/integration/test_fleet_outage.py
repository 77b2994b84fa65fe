"""When the shared PostgreSQL state store goes away: one clear error naming its URL without
the password, and nothing recorded is lost — the host's outbox holds the records until the
state store is back, then delivers each once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tsmeter
from tests.influx_server import InfluxServer
from tests.pg_server import PostgresServer
from tsmeter.errors import StorageUnavailableError

DAY = datetime(2026, 11, 10, tzinfo=UTC)


@pytest.fixture
def own_postgres(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, since it is stopped and started again (the session's
    server is asked for first, so that CI fails rather than skips where none can start)."""
    with PostgresServer() as server:
        yield server.start()


@pytest.fixture(autouse=True)
def _own_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("TSMETER_STATE_URL", "TSMETER_OUTBOX", "TSMETER_POSTHOG_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def batch(start: int, n: int) -> list[dict[str, object]]:
    return [{"id": f"o-{i}", "metricKey": "api_calls", "subjectType": "org", "subjectId": "o1",
             "quantity": 1.5, "timestamp": DAY + timedelta(seconds=i)}
            for i in range(start, start + n)]  # fmt: skip


def test_records_wait_in_the_outbox_while_postgresql_is_down(
    influx_db: tuple[InfluxServer, str], own_postgres: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server, db = influx_db
    state = own_postgres.create_database("fleet")
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=h1&state={state}"
    with tsmeter.connect(url, mirror=False) as meter:
        meter.define_metric("api_calls", aggregation_type="SUM")
        meter.record_batch(batch(0, 100))
        assert meter.flush(30)
        own_postgres.halt()
        with caplog.at_level(logging.WARNING):
            meter.record_batch(batch(100, 100))  # accepted: the outbox holds them
            assert not meter.flush(3)  # the ledger cannot be written: nothing is sent
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert own_postgres.password not in logged
        own_postgres.resume()
        assert meter.flush(60)
        meter.record_batch(batch(150, 100))  # 50 retried ids, 50 new
        assert meter.flush(30)
    points = server.series('SELECT count("units"), sum("units") FROM "usage"', db)[0]
    assert (points["count"], points["sum"]) == (250, 375 * 10**6)  # 1.5 at precision 6, exact


def test_connect_names_the_state_url_without_its_password(
    influx_db: tuple[InfluxServer, str], own_postgres: PostgresServer
) -> None:
    server, db = influx_db
    wrong = own_postgres.url("postgres", password="not-the-password")
    with pytest.raises(StorageUnavailableError) as caught:
        tsmeter.connect(f"influxdb://127.0.0.1:{server.port}/{db}?state={wrong}", mirror=False)
    assert "not-the-password" not in str(caught.value)
    assert f"tsmeter:***@127.0.0.1:{own_postgres.port}" in str(caught.value)
    assert "password authentication failed" in str(caught.value)
    own_postgres.halt()
    down = own_postgres.url("postgres")
    with pytest.raises(StorageUnavailableError) as caught:
        tsmeter.connect(f"influxdb://127.0.0.1:{server.port}/{db}?state={down}", mirror=False)
    assert own_postgres.password not in str(caught.value)
    assert "refused" in str(caught.value)
