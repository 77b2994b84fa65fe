"""How the contract suite opens each store adapter, and the work a child process does.

To run the suite against another adapter, add its name to ``ADAPTERS`` and a branch to
:func:`open_store`; every contract test is then parametrized over it. An adapter in
``CATALOG_ONLY`` brings only a catalog (its usage store is another adapter's): it runs the
suites that exercise the catalog (``CATALOG_SUITES``), not the usage store's again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tsmeter.domain import RecordRow
from tsmeter.ports import Capabilities, Catalog, DeliveryQueue, UsageStore

ADAPTERS = ("sqlite", "influxdb", "influxdb2", "postgres")
#: adapters that are a catalog beside another adapter's usage store
CATALOG_ONLY = frozenset({"postgres"})
#: the test modules that exercise the catalog (the rest test the usage store)
CATALOG_SUITES = frozenset(
    {"test_catalog", "test_declared", "test_meter", "test_monitor", "test_monitor_bulk"}
)


def adapters_for(module: str) -> list[str]:
    """The adapters the test module named ``module`` (its last dotted part) runs against."""
    return [a for a in ADAPTERS if a not in CATALOG_ONLY or module in CATALOG_SUITES]


class Store(UsageStore, Catalog, Protocol):
    """A store adapter implementing both ports, as the contract suite expects."""

    def capabilities(self) -> Capabilities:
        """What the adapter offers beyond the ports, as bootstrap would wire it."""
        ...


class SQLiteStoreLike(Catalog, Protocol):
    """A catalog that can be closed."""

    def close(self) -> None:
        """Release it."""


def open_store(adapter: str, location: str) -> Store:
    """A new store object of ``adapter`` on the backing store at ``location`` (a directory for
    SQLite); two calls with the same arguments give two connections to the same data."""
    from tsmeter.adapters.sqlite import SQLiteStore

    if adapter == "sqlite":
        return SQLiteStore(str(Path(location) / "c.db"))
    if adapter == "influxdb":  # location: "<influxdb:// URL> <state directory>"
        from tsmeter.adapters.influxdb.store import InfluxStore

        url, state = location.split(" ", 1)
        path = str(Path(state) / "state.db")
        return Combined(InfluxStore.from_url(url, ledger=path), SQLiteStore(path))
    if adapter == "influxdb2":  # location: "<influxdb2:// URL> <state directory>"
        from tsmeter.adapters.influxdb.store import InfluxStore

        url, state = location.split(" ", 1)
        path = str(Path(state) / "state.db")
        return Combined(InfluxStore.from_url(url, ledger=path), SQLiteStore(path))
    if adapter == "postgres":  # location: "<postgresql:// URL> <usage directory>"
        return _postgres(*location.split(" ", 1))
    raise ValueError(f"no contract set-up for adapter {adapter!r}")


def _postgres(url: str, usage_dir: str) -> Store:
    """The embedded store for usage beside a PostgreSQL catalog and delivery queue on their
    own StateDatabase (as one host of a fleet would have)."""
    from tsmeter.adapters.postgres.catalog import PostgresCatalog
    from tsmeter.adapters.postgres.database import StateDatabase
    from tsmeter.adapters.postgres.deliveries import PostgresDeliveryLog
    from tsmeter.adapters.postgres.dimensions import PostgresDimensionValues
    from tsmeter.adapters.sqlite import SQLiteStore

    db = StateDatabase(url, max_size=4)
    usage = SQLiteStore(str(Path(usage_dir) / "usage.db"))
    deliveries = PostgresDeliveryLog(db)
    capabilities = Capabilities(state_path=usage.path, deliveries=deliveries,
                                dimension_values=PostgresDimensionValues(db))  # fmt: skip
    return Combined(usage, PostgresCatalog(db), capabilities=capabilities, after=db.close)


def open_deliveries(adapter: str, location: str) -> tuple[DeliveryQueue, Callable[[], None]]:
    """The delivery queue the catalog of ``adapter`` at ``location`` queues alerts'
    notifications in, and how to close it."""
    from tsmeter.integrations.notify.log import DeliveryLog

    if adapter == "postgres":
        from tsmeter.adapters.postgres.database import StateDatabase
        from tsmeter.adapters.postgres.deliveries import PostgresDeliveryLog

        db = StateDatabase(location.split(" ", 1)[0], max_size=2)
        return PostgresDeliveryLog(db), db.close
    name = "c.db" if adapter == "sqlite" else "state.db"
    log = DeliveryLog(str(Path(location.split(" ", 1)[-1]) / name))
    return log, log.close


class Combined:
    """A usage store and a catalog behind one object, as the suite expects (a server store
    keeps metric definitions in a local state store). ``capabilities``: what bootstrap would
    hand the Meter, where it is not the usage store's own; ``after``: called once both are
    closed (the shared state database)."""

    _CATALOG = frozenset(name for name in dir(Catalog) if not name.startswith("_"))

    def __init__(
        self,
        usage: UsageStore,
        catalog: SQLiteStoreLike,
        *,
        capabilities: Capabilities | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        self._usage = usage
        self._catalog = catalog
        self._capabilities = capabilities
        self._after = after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._catalog if name in self._CATALOG else self._usage, name)

    def capabilities(self) -> Capabilities:
        """The capabilities given, else the usage store's."""
        if self._capabilities is not None:
            return self._capabilities
        own: Callable[[], Capabilities] = self._usage.capabilities  # type: ignore[attr-defined]
        return own()

    def close(self) -> None:
        """Close both (and then what ``after`` closes)."""
        self._usage.close()
        self._catalog.close()
        if self._after is not None:
            self._after()


def append_ids(
    adapter: str, location: str, ids: list[int], seed: int, start: Any, results: Any
) -> None:
    """Append one row per id in small shuffled batches through a fresh store object, beginning
    when ``start`` (a barrier) lets every writer go; put how many the store reported as new on
    ``results`` (run in a child process by the concurrency test)."""
    order = list(ids)
    random.Random(seed).shuffle(order)
    store = open_store(adapter, location)
    new = 0
    try:
        start.wait(timeout=60)
        for i in range(0, len(order), 20):
            rows = [
                RecordRow(
                    f"id-{n:05d}",
                    "api_calls",
                    "org",
                    f"o{n % 7}",
                    None,
                    1,
                    1_767_225_600_000_000_000 + n * 1_000_000_000,
                    None,
                    None,
                )
                for n in order[i : i + 20]
            ]
            new += store.append(rows, 0)
            time.sleep(0.001)  # let the other writer in between transactions
    finally:
        store.close()
    results.put(new)


def append_until_killed(adapter: str, location: str, acked: Any) -> None:
    """Append batches of 100 rows forever, putting the number of rows acknowledged so far on
    ``acked`` after each ``append`` returns (run in a child process that the crash test kills)."""
    store = open_store(adapter, location)
    done = 0
    while True:
        rows = [
            RecordRow(f"crash-{n:07d}", "api_calls", "org", "o1", None, 1,
                      1_767_225_600_000_000_000 + n, None, None)
            for n in range(done, done + 100)
        ]  # fmt: skip
        store.append(rows, time.time_ns())
        done += 100
        acked.put(done)
