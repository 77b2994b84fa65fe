"""Where the points of one ``append`` call go: its read windows, the slots taken, and the
rows that still need a point.

InfluxDB merges points with equal measurement, tag set and time. ``place`` gives each new
row a time no point of its series has (its own, else a free nanosecond of the same
microsecond, then an overflow tag ``c``), against the slots taken so far in the call
(``Slots``: what the existence reads found and what was placed). Records in time order
let the slots stay small: ``floors`` and ``prune`` forget those no later window can reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

from tsmeter.adapters.influxdb.schema import SeriesKey, series_key_of
from tsmeter.domain import RecordRow
from tsmeter.speedups import native

__all__ = ["Slots", "floors", "hours", "place", "prune", "unstored", "windows"]

_US = 1_000
_HOUR = 3_600_000_000_000
# a RecordRow's metric, organisation and time, for loops that run in C
_METRIC, _ORG, _TS = itemgetter(1), itemgetter(4), itemgetter(6)


def _key(row: RecordRow) -> SeriesKey:
    return (row.metric_key, row.subject_type, row.subject_id, row.org_id)


def hours(rows: list[RecordRow]) -> set[tuple[str, str | None, int]]:
    """The (metric, org, UTC hour) of the rows."""
    if native is not None and type(rows) is list:
        spans: set[tuple[str, str | None, int]] = native.series_spans(rows, _HOUR)
        return spans
    return set(zip(map(_METRIC, rows), map(_ORG, rows), map(_HOUR.__rfloordiv__, map(_TS, rows)),
                   strict=True))  # fmt: skip


def windows(rows: list[RecordRow], first: int, most: int) -> list[list[RecordRow]]:
    """The rows in windows of ``first``, then four times the one before, up to ``most``: the
    server's first points wait only for a small window to be checked, and each next
    window's read has the time of the one before to finish."""
    windows, at, size = [], 0, first
    while at < len(rows):
        windows.append(rows[at : at + size])
        at, size = at + size, min(most, size * 4)
    return windows


def floors(windows: list[list[RecordRow]]) -> list[int]:
    """For each window, the first microsecond any record of it or of a later window has:
    slots before it are never needed again (records in time order let ``occupied`` stay
    small)."""
    floors = [min(map(_TS, window)) // _US * _US for window in windows]
    for k in range(len(floors) - 2, -1, -1):
        floors[k] = min(floors[k], floors[k + 1])
    return floors


class Slots:
    """The point slots (series, overflow tag ``c``, time) taken in one ``append`` call.

    Most points are alone at their time, so a slot without ``c`` is kept as time → the
    row (or a stand-in whose items 1 to 4 are the series) of the first point there, which
    costs no tuple; the other slots (a second series at that time, or a ``c``) are tuples
    in ``more``.
    """

    __slots__ = ("first", "more")

    def __init__(self) -> None:
        self.first: dict[int, tuple[Any, ...]] = {}
        self.more: set[tuple[SeriesKey, str, int]] = set()

    def taken(self, key: SeriesKey, c: str, ts: int) -> bool:
        """Whether a point of series ``key`` with tag ``c`` is at ``ts``."""
        if not c:
            holder = self.first.get(ts)
            if holder is not None and (holder[1], holder[2], holder[3], holder[4]) == key:
                return True
        return (key, c, ts) in self.more

    def take(self, key: SeriesKey, c: str, ts: int, holder: tuple[Any, ...]) -> None:
        """Mark a slot taken; ``holder[1:5]`` is ``key`` (the row placed there)."""
        if not c and ts not in self.first:
            self.first[ts] = holder
        else:
            self.more.add((key, c, ts))

    def __iter__(self) -> Iterator[tuple[SeriesKey, str, int]]:
        """Every slot taken (for tests)."""
        for ts, holder in self.first.items():
            yield (holder[1], holder[2], holder[3], holder[4]), "", ts
        yield from self.more


def prune(occupied: Slots, cursor: dict[tuple[SeriesKey, int], int], floor: int) -> None:
    """Forget the slots and cursors before ``floor`` (a record at or after it places within
    its own microsecond, never before ``floor``). What is kept goes to new containers: in
    time order most is dropped."""
    for key in [key for key in cursor if key[1] < floor]:
        del cursor[key]
    occupied.first = {ts: holder for ts, holder in occupied.first.items() if ts >= floor}
    occupied.more = {slot for slot in occupied.more if slot[2] >= floor}


def unstored(
    chunk: list[RecordRow],
    found: list[tuple[dict[str, str], dict[str, Any]]],
    unique: dict[str, RecordRow],
    occupied: Slots,
    remember: Callable[[dict[str, str], dict[str, Any]], None],
    total: int,
) -> list[RecordRow]:
    """The rows of ``chunk`` whose id is not among the stored points ``found``. Every id found
    is dropped from ``unique`` (and its point remembered), every point time found
    is ``occupied`` (also of a point whose fields are still landing). ``total`` is how many
    ids ``unique`` had at the start of the call."""
    for tags, values in found:
        key = series_key_of(tags, values)
        occupied.take(key, values.get("c") or "", int(values["time"]), (None, *key))
        rid = values.get("rid")
        if rid is not None and unique.pop(rid, None) is not None:
            remember(tags, values)
    if len(unique) == total:  # no id of this call was found stored: all of them are new
        return chunk
    return [row for row in chunk if row[0] in unique]


def place(
    rows: list[RecordRow],
    occupied: Slots,
    cursor: dict[tuple[SeriesKey, int], int],
) -> tuple[list[int], list[int], set[tuple[SeriesKey, int]]]:
    """Point times and overflow tags for new rows, so that no two points coincide.

    A row keeps its exact time when that is free in its series; otherwise it
    takes the next free nanosecond of its microsecond, then of the next ``c``.
    Returns the times, the ``c`` values and the (series, microsecond) slots
    where something moved; ``occupied`` and ``cursor`` (the next slot to try per series
    microsecond) carry over to the next call.
    """
    times: list[int] = []
    overflow: list[int] = []
    moved: set[tuple[SeriesKey, int]] = set()
    count, index = len(rows), 0
    while index < count:
        if native is not None:  # takes the rows whose exact time is free, up to the first taken
            index = native.place_fast(rows, index, occupied.first, occupied.more, times, overflow)
            if index == count:
                break
        row = rows[index]
        index += 1
        key = _key(row)
        if not occupied.taken(key, "", row.ts):
            occupied.take(key, "", row.ts, row)
            times.append(row.ts)
            overflow.append(0)
            continue
        micro = row.ts // _US * _US
        slot = cursor.get((key, micro), 0)
        while occupied.taken(key, str(slot // _US) if slot >= _US else "", micro + slot % _US):
            slot += 1
        cursor[(key, micro)] = slot + 1
        c = str(slot // _US) if slot >= _US else ""
        occupied.take(key, c, micro + slot % _US, row)
        times.append(micro + slot % _US)
        overflow.append(slot // _US)
        moved.add((key, micro))
    return times, overflow, moved
