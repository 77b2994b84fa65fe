"""MemoryDedupe: the dedupe port in a dict, for tests (and a reference for new adapters)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from tsmeter.domain import RecordRow

__all__ = ["MemoryDedupe"]


class MemoryDedupe:
    """Record ids and where they were sent, in ``entries`` (pass the same dict to two
    instances for two processes sharing one place).

    >>> d = MemoryDedupe()
    >>> d.add([RecordRow("r1", "m", "org", "o1", None, 1.0, 5, None, None)])
    >>> d.known(["r1", "r2"])["r1"].ts
    5
    """

    def __init__(self, entries: dict[str, RecordRow] | None = None) -> None:
        self.entries = {} if entries is None else entries
        self._lock = threading.Lock()

    def known(self, ids: Iterable[str]) -> dict[str, RecordRow]:
        """Where each known id was sent (quantity, metadata and source not kept)."""
        with self._lock:
            return {rid: self.entries[rid] for rid in ids if rid in self.entries}

    def add(self, rows: Sequence[RecordRow]) -> None:
        """Remember each row's id at its series and time (replacing an older location)."""
        with self._lock:
            for row in rows:
                self.entries[row.id] = RecordRow(
                    row.id, row.metric_key, row.subject_type, row.subject_id, row.org_id,
                    0.0, row.ts, None, None,
                )  # fmt: skip

    def forget_series(self, metric_key: str, org_id: str | None) -> None:
        """Forget the ids of one metric in one org scope."""
        with self._lock:
            gone = [
                rid for rid, row in self.entries.items()
                if row.metric_key == metric_key and row.org_id == org_id
            ]  # fmt: skip
            for rid in gone:
                del self.entries[rid]

    def close(self) -> None:
        """Nothing to release: the entries stay for the next instance on the same dict."""
