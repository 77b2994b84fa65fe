"""How the contract suite opens each store adapter, and the work a child process does.

To run the suite against another adapter, add its name to ``ADAPTERS`` and a branch to
:func:`open_store`; every contract test is then parametrized over it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Protocol

from tsmeter.domain import RecordRow
from tsmeter.ports import Catalog, UsageStore

ADAPTERS = ("sqlite",)


class Store(UsageStore, Catalog, Protocol):
    """A store adapter implementing both ports, as the contract suite expects."""


def open_store(adapter: str, location: str) -> Store:
    """A new store object of ``adapter`` on the backing store at ``location`` (a directory for
    SQLite); two calls with the same arguments give two connections to the same data."""
    if adapter == "sqlite":
        from tsmeter.adapters.embedded import SQLiteStore

        return SQLiteStore(str(Path(location) / "c.db"))
    raise ValueError(f"no contract set-up for adapter {adapter!r}")


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
                    1.0,
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
            RecordRow(f"crash-{n:07d}", "api_calls", "org", "o1", None, 1.0,
                      1_767_225_600_000_000_000 + n, None, None)
            for n in range(done, done + 100)
        ]  # fmt: skip
        store.append(rows, time.time_ns())
        done += 100
        acked.put(done)
