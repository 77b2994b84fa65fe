"""Session-wide fixtures: one real influxd for every test that needs InfluxDB, and one real
PostgreSQL for every test that needs the shared state store.

Without a usable ``influxd`` or PostgreSQL the tests that need it skip with a one-line reason,
except in CI (``CI=true`` or ``CI=1``), where they fail: there the server tests must run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.influx2_server import Influx2Server, Unavailable, influxdb2_server
from tests.influx_server import InfluxServer, InfluxServerError, find_influxd
from tests.pg_server import PostgresServer, PostgresServerError, find_pg_bin

_SERVER_FIXTURES = {"influxd", "influx_db", "influxdb2", "influx2_bucket"}
_SERVER_ADAPTERS = {"influxdb", "influxdb2"}
_db_numbers = itertools.count(1)


def in_ci() -> bool:
    """Whether the environment variable CI says this is a CI run."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def _unavailable(reason: str, log_tail: str = "", server: str = "influxd") -> None:
    if in_ci():
        detail = f"\n--- {server} log (tail) ---\n{log_tail}" if log_tail else ""
        pytest.fail(f"CI needs a real {server}: {reason}{detail}", pytrace=False)
    pytest.skip(reason=reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark with ``influxdb`` every test that uses a real InfluxDB server: through the fixtures
    below, or as an InfluxDB case of the store contract suite."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        uses_server = _SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        adapter = callspec.params.get("adapter") if callspec is not None else None
        if uses_server or adapter in _SERVER_ADAPTERS:
            item.add_marker(pytest.mark.influxdb)
        if {"postgres", "pg_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session", autouse=True)
def _data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """$XDG_DATA_HOME in a temporary directory for the session: default files (an InfluxDB
    store's outbox and state) never land in the real home, nor meet a past run's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg")))
        yield


@pytest.fixture(scope="session")
def influxd() -> Iterator[InfluxServer]:
    """One influxd 1.x on 127.0.0.1 for the whole session (skips, or fails in CI, if absent)."""
    binary = find_influxd()
    if binary is None:
        _unavailable(
            "influxd not found (Debian: apt-get install influxdb, or run `make test` as root;"
            " or set TSMETER_INFLUXD)"
        )
    server = InfluxServer(binary)
    failure: tuple[str, str] | None = None
    try:
        server.start()
    except InfluxServerError as exc:
        failure = (exc.reason, exc.log_tail)
    except OSError as exc:
        failure = (str(exc), "")
    if failure is not None:
        server.stop()
        _unavailable(f"influxd did not start: {failure[0]}", failure[1])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influx_db(influxd: InfluxServer) -> Iterator[tuple[InfluxServer, str]]:
    """A fresh, uniquely named database on the session's influxd, dropped afterwards."""
    name = f"t{os.getpid()}_{next(_db_numbers)}"
    influxd.create_database(name)
    try:
        yield influxd, name
    finally:
        influxd.drop_database(name)


@pytest.fixture(scope="session")
def influxdb2() -> Iterator[Influx2Server]:
    """One InfluxDB 2.x for the whole session: ``$TSMETER_TEST_INFLUXDB2_URL`` or a container
    (skips with a reason where neither exists, in CI too: only 1.x must run there)."""
    try:
        with influxdb2_server() as server:
            yield server
    except Unavailable as exc:
        pytest.skip(reason=str(exc))


@pytest.fixture
def influx2_bucket(influxdb2: Influx2Server) -> Iterator[tuple[Influx2Server, str]]:
    """A fresh, uniquely named bucket on the session's InfluxDB 2.x, deleted afterwards (with
    the tasks named after it)."""
    name = f"t{os.getpid()}_{next(_db_numbers)}"
    influxdb2.create_bucket(name)
    try:
        yield influxdb2, name
    finally:
        influxdb2.drop_bucket(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL on 127.0.0.1 for the whole session (skips, or fails in CI, if absent)."""
    if find_pg_bin() is None:
        _unavailable(
            "PostgreSQL's initdb not found (Debian: apt-get install postgresql, or run"
            " `make test` as root; or set TSMETER_PG_BIN)",
            server="PostgreSQL",
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'tsmeter[postgres]')",
                     server="PostgreSQL")  # fmt: skip
    server = PostgresServer()
    failure: tuple[str, str] | None = None
    try:
        server.start()
    except PostgresServerError as exc:
        failure = (exc.reason, exc.log_tail)
    except OSError as exc:
        failure = (str(exc), "")
    if failure is not None:
        server.stop()
        _unavailable(f"PostgreSQL did not start: {failure[0]}", failure[1], server="PostgreSQL")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's PostgreSQL, dropped afterwards."""
    name = f"t{os.getpid()}_{next(_db_numbers)}"
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)
