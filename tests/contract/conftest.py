"""Fixtures of the store contract suite: every test runs once per adapter in ``ADAPTERS``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.contract.stores import CATALOG_ONLY, Store, adapters_for, open_store
from tsmeter.metering.meter import Meter


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses ``adapter`` once per adapter its module is meant for."""
    if "adapter" in metafunc.fixturenames:
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        metafunc.parametrize("adapter", adapters_for(module), indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark with ``postgres`` the cases that keep the catalog on a real PostgreSQL."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("adapter") in CATALOG_ONLY:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def adapter(request: pytest.FixtureRequest) -> str:
    """The name of the adapter under test."""
    name: str = request.param
    return name


@pytest.fixture
def location(adapter: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where this test's backing store lives (for InfluxDB: a fresh database, or 2.x bucket,
    on the session's server, plus a directory for the local state store; for PostgreSQL: a
    fresh database for the catalog, plus a directory for the embedded usage store)."""
    if adapter == "influxdb":
        server, db = request.getfixturevalue("influx_db")
        return f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1 {tmp_path}"
    if adapter == "influxdb2":
        server2, bucket = request.getfixturevalue("influx2_bucket")
        return f"{server2.store_url(bucket, writer='w1')} {tmp_path}"
    if adapter == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return f"{url} {tmp_path}"
    return str(tmp_path)


@pytest.fixture
def open_same(adapter: str, location: str) -> Iterator[Callable[[], Store]]:
    """Open another store object (another connection) on this test's backing store."""
    opened: list[Store] = []

    def open_one() -> Store:
        store = open_store(adapter, location)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(open_same: Callable[[], Store]) -> Store:
    """The store under test, implementing both UsageStore and Catalog."""
    return open_same()


@pytest.fixture
def meter(store: Store) -> Iterator[Meter]:
    """A Meter on the store under test, computing periods in Europe/Paris."""
    with Meter(store, store, timezone="Europe/Paris", capabilities=store.capabilities()) as meter:
        yield meter
