"""MemoryDedupe: the dedupe port in a dict, for tests (and a reference for new adapters)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from tsmeter.domain import RecordRow

__all__ = ["MemoryDedupe", "Place"]


class Place:
    """Where MemoryDedupe instances keep their entries: id -> (where it was sent, writer,
    when it was entered); instances on one place stand for hosts sharing a ledger."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[RecordRow, str, float]] = {}
        self.lock = threading.Lock()


class MemoryDedupe:
    """Record ids and where they were sent, in a ``Place`` (pass the same one to two
    instances for two hosts sharing one ledger).

    >>> d = MemoryDedupe()
    >>> d.add([RecordRow("r1", "m", "org", "o1", None, 1, 5, None, None)])
    >>> d.known(["r1", "r2"])["r1"].ts
    5
    """

    shared = False  # the store's file lock serialises the writers that use one

    def __init__(self, place: Place | None = None) -> None:
        self.place = Place() if place is None else place

    def known(self, ids: Iterable[str]) -> dict[str, RecordRow]:
        """Where each known id was sent (quantity, metadata and source not kept)."""
        entries = self.place.entries
        with self.place.lock:
            return {rid: entries[rid][0] for rid in ids if rid in entries}

    def claim(self, rows: Sequence[RecordRow], writer: str) -> dict[str, RecordRow]:
        """Remember the ids not known yet (the first row of each); return where the known
        ones were sent. The place's lock makes it atomic."""
        entries = self.place.entries
        with self.place.lock:
            before = {row.id: entries[row.id][0] for row in rows if row.id in entries}
            now = time.monotonic()
            for row in reversed(rows):  # the first row of an id is written last
                if row.id not in before:
                    entries[row.id] = (_entry(row), writer, now)
            return before

    def take_over(
        self, rows: Sequence[RecordRow], writer: str, after_s: float
    ) -> dict[str, RecordRow]:
        """Move the ids ``writer`` entered, or entered more than ``after_s`` seconds ago (or
        not known); return where the others are."""
        entries = self.place.entries
        with self.place.lock:
            now = time.monotonic()
            left = {}
            for row in rows:
                held = entries.get(row.id)
                if held is None or held[1] == writer or held[2] < now - after_s:
                    entries[row.id] = (_entry(row), writer, now)
                    left.pop(row.id, None)
                else:
                    left[row.id] = held[0]
            return left

    def add(self, rows: Sequence[RecordRow]) -> None:
        """Remember each row's id at its series and time (replacing an older location)."""
        with self.place.lock:
            now = time.monotonic()
            for row in rows:
                self.place.entries[row.id] = (_entry(row), "", now)

    def forget_series(self, metric_key: str, org_id: str | None) -> None:
        """Forget the ids of one metric in one org scope."""
        entries = self.place.entries
        with self.place.lock:
            gone = [
                rid for rid, (row, _, _) in entries.items()
                if row.metric_key == metric_key and row.org_id == org_id
            ]  # fmt: skip
            for rid in gone:
                del entries[rid]

    def close(self) -> None:
        """Nothing to release: the entries stay for the next instance on the same place."""


def _entry(row: RecordRow) -> RecordRow:
    """What is kept of a row: its id, series and time."""
    return RecordRow(row.id, row.metric_key, row.subject_type, row.subject_id, row.org_id,
                     0, row.ts, None, None)  # fmt: skip
