"""Where a test's notification delivery queue lives: the SQLite delivery log in a state file,
or the fleet's queue in a fresh PostgreSQL database. Tests that take the ``place`` fixture of
:func:`open_place` run once on each, so both implementations of
:class:`tsmeter.ports.DeliveryQueue` meet the same tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tsmeter.integrations.notify import Notifier, NotifySettings
from tsmeter.integrations.notify.log import DeliveryLog
from tsmeter.ports import DeliveryQueue

#: the implementations, as fixture params (the PostgreSQL one marked ``postgres``)
QUEUES = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


class QueuePlace:
    """One backing store of a delivery queue: opens queues and Notifiers on it, and closes
    every one of them (and the state database) at the end of the test."""

    def __init__(self, kind: str, tmp_path: Path, pg_url: str | None = None) -> None:
        self.kind = kind
        self.path = str(tmp_path / "state.db")
        self._opened: list[DeliveryQueue] = []
        self._notifiers: list[Notifier] = []
        self._db: Any = None
        if kind == "postgres":
            from tsmeter.adapters.postgres.database import StateDatabase

            assert pg_url is not None
            self._db = StateDatabase(pg_url, max_size=4)

    @property
    def db(self) -> Any:
        """The StateDatabase (PostgreSQL only)."""
        assert self._db is not None, "not a PostgreSQL place"
        return self._db

    def queue(self) -> DeliveryQueue:
        """Another queue object on this place (another connection for SQLite)."""
        queue: DeliveryQueue
        if self.kind == "postgres":
            from tsmeter.adapters.postgres.deliveries import PostgresDeliveryLog

            queue = PostgresDeliveryLog(self.db)
        else:
            queue = DeliveryLog(self.path)
        self._opened.append(queue)
        return queue

    def notifier(self, settings: NotifySettings, *, worker: bool = False) -> Notifier:
        """A Notifier on this place: on the file for SQLite (it opens and closes its own log),
        on a queue handed in for PostgreSQL (as ``Notifier.for_meter`` does in a fleet)."""
        if self.kind == "postgres":
            notifier = Notifier(settings, worker=worker, queue=self.queue())
        else:
            notifier = Notifier(settings, self.path, worker=worker)
        self._notifiers.append(notifier)
        return notifier

    def close(self) -> None:
        """Close every Notifier and queue opened here, then the state database."""
        for notifier in self._notifiers:
            notifier.close(timeout=5)
        for queue in self._opened:
            queue.close()
        if self._db is not None:
            self._db.close()


def open_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueuePlace]:
    """The body of a ``place`` fixture parametrized with :data:`QUEUES`."""
    kind: str = request.param
    url = request.getfixturevalue("pg_url") if kind == "postgres" else None
    place = QueuePlace(kind, tmp_path, url)
    try:
        yield place
    finally:
        place.close()
