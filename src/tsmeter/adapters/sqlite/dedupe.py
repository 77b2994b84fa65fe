"""SQLiteDedupe: the dedupe port on a SQLite file, for the processes of one host.

The first implementation of :class:`~tsmeter.ports.Dedupe`: the id ledger
(:class:`~tsmeter.adapters.influxdb.ledger.IdLedger`, which keeps one target's ids in the
state file, shared by the host's processes) behind the port. A fleet of hosts shares
:class:`~tsmeter.adapters.postgres.dedupe.PostgresDedupe` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tsmeter.adapters.influxdb.ledger import IdLedger
from tsmeter.domain import RecordRow

__all__ = ["SQLiteDedupe"]


class SQLiteDedupe:
    """Record ids sent to ``target`` (a base URL and database), kept in the SQLite file
    ``path`` (``:memory:``: this object only).

    >>> d = SQLiteDedupe(":memory:", "http://127.0.0.1:8086/metering")
    >>> d.add([RecordRow("r1", "api_calls", "org", "o1", None, 1, 5, None, None)])
    >>> d.known(["r1", "r2"])["r1"].ts
    5
    >>> d.close()
    """

    #: one host: the store's file lock serialises its writers around lookups and entries
    shared = False

    def __init__(self, path: str, target: str) -> None:
        self.ledger = IdLedger(path, target)

    def known(self, ids: Iterable[str]) -> dict[str, RecordRow]:
        """Where each known id was sent (see the port)."""
        return self.ledger.known(ids)

    def claim(self, rows: Sequence[RecordRow], writer: str) -> dict[str, RecordRow]:
        """Enter every id (see the port): the host's one store claims only ids its lookup did
        not find, both under the write lock that serialises the host's processes, so no
        other writer can have entered one in between; checking again would double the cost
        of an entry."""
        if len({row.id for row in rows}) < len(rows):  # an id twice: its first row counts
            rows = list({row.id: row for row in reversed(rows)}.values())
        self.ledger.add(rows)
        return {}

    def take_over(
        self, rows: Sequence[RecordRow], writer: str, after_s: float
    ) -> dict[str, RecordRow]:
        """Move every id (see the port): the one host's writes are serialised, so none of
        them is on its way while another is entered."""
        self.ledger.add(rows)
        return {}

    def add(self, rows: Sequence[RecordRow]) -> None:
        """Remember that ``rows`` are being sent (see the port)."""
        self.ledger.add(rows)

    def forget_series(self, metric_key: str, org_id: str | None) -> None:
        """Forget the ids of a purged metric (see the port)."""
        self.ledger.forget_series(metric_key, org_id)

    def close(self) -> None:
        """Close the file."""
        self.ledger.close()
