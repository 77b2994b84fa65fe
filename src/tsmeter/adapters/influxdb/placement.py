"""Where the points of one ``append`` call go: its read windows, the slots taken, and the
rows that still need a point (``unstored``: not stored, and not earlier in the call:
``CallIds``).

InfluxDB merges points with equal measurement, tag set and time. ``place`` gives each new
row a time no point of its series has (its own, else a free nanosecond of the same
microsecond, then an overflow tag ``c``), against the slots taken so far in the call
(``Slots``: what the existence reads found and what was placed). Records in time order
let the slots stay small: ``prune`` forgets those no later window can reach.

A store whose slots outlive the call (a fleet's writer, see ``InfluxStore.append_stream``)
keeps a ``Coverage``: the time ranges of each (metric, org) pair whose stored points its
slots hold, so that a later window reads only the ranges not covered yet.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from tsmeter.adapters.influxdb.schema import SeriesKey, series_key_of
from tsmeter.adapters.influxdb.speedups import native
from tsmeter.domain import RecordRow

__all__ = ["CallIds", "Coverage", "Slots", "Windows", "hours", "place", "prune", "unstored"]

_US = 1_000
_HOUR = 3_600_000_000_000
_DAY = 24 * _HOUR
# a RecordRow's id, metric, organisation and time, for loops that run in C
_ID, _METRIC, _ORG, _TS = itemgetter(0), itemgetter(1), itemgetter(4), itemgetter(6)


def _key(row: RecordRow) -> SeriesKey:
    return (row.metric_key, row.subject_type, row.subject_id, row.org_id)


def hours(rows: list[RecordRow]) -> set[tuple[str, str | None, int]]:
    """The (metric, org, UTC hour) of the rows."""
    if native is not None and type(rows) is list:
        spans: set[tuple[str, str | None, int]] = native.series_spans(rows, _HOUR)
        return spans
    return set(zip(map(_METRIC, rows), map(_ORG, rows), map(_HOUR.__rfloordiv__, map(_TS, rows)),
                   strict=True))  # fmt: skip


class Windows:
    """The read windows of one ``append`` call: ``first`` rows, then four times the one before,
    up to ``most`` (the server's first points wait only for a small window to be checked, and
    each next window's read has the time of the one before to finish).

    Windows are cut from the call's parts as they are asked for, so a stream of parts (an
    outbox delivering batch after batch) is never held whole.
    """

    _END = 2**63  # after every time

    def __init__(self, parts: Iterable[Sequence[RecordRow]], first: int, most: int) -> None:
        self._parts = iter(parts)
        self._size, self._most = first, most
        self._part: Sequence[RecordRow] = ()
        self._at = 0
        self._done = False
        # rows that came as one list are all known: the first microsecond of each tail
        # (from every position a window is cut at) is worked out when first asked for
        self._known: list[RecordRow] | None = None
        self._tails: dict[int, int] | None = None
        if isinstance(parts, list | tuple) and len(parts) == 1 and type(parts[0]) is list:
            self._known = self._part = parts[0]
            self._done = True

    def __iter__(self) -> Iterator[list[RecordRow]]:
        return self

    def __next__(self) -> list[RecordRow]:
        want = self._size
        window: list[RecordRow] = []
        while len(window) < want:
            if self._at >= len(self._part):
                part = None if self._done else next(self._parts, None)
                if part is None:
                    self._done = True
                    break
                self._part, self._at = part, 0
                continue
            taken = self._part[self._at : self._at + want - len(window)]
            self._at += len(taken)
            window = taken if not window and type(taken) is list else [*window, *taken]
        if not window:
            raise StopIteration
        self._size = min(self._most, want * 4)
        return window

    @staticmethod
    def low(window: list[RecordRow]) -> int:
        """The first microsecond of the window's rows."""
        first: int = min(map(_TS, window))
        return first // _US * _US

    def rest_low(self) -> int | None:
        """The first microsecond of the rows not cut into a window yet (past every time when
        none are left), or None when that is not known: a stream may bring more."""
        rows = self._known
        if rows is None:
            return self._END if self._done and self._at >= len(self._part) else None
        if self._tails is None:
            cuts, at, size = [], self._at, self._size
            while at < len(rows):
                cuts.append(at)
                at, size = at + size, min(self._most, size * 4)
            self._tails, low = {}, self._END
            ends = [*cuts[1:], len(rows)] if cuts else []
            for at, stop in reversed(list(zip(cuts, ends, strict=True))):
                low = min(low, self.low(rows[at:stop]))
                self._tails[at] = low
        return self._tails.get(self._at, self._END)


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


class Coverage:
    """The time ranges, per (metric, org) pair and UTC day, whose stored points are all in a
    store's slots: read there before, or written since by the store itself.

    ``reads`` says what to read for new rows and covers it: per pair and UTC day, each gap
    between covered ranges that holds rows is read from its first row's microsecond to the
    end of its last row's, or whole (up to the neighbouring ranges or the day's edges) when
    the rows span a quarter of it or more: a read costs the server about as much for a day
    as for a microsecond, so rows spread over a day are read once. The transport must read
    every series of the rows' pairs in a span (as the v1 one does). Each day's ranges are
    kept sorted and disjoint.

    >>> cover = Coverage()
    >>> def rows(*times):
    ...     return [RecordRow(f"r{t}", "m", "org", "o", None, 1.0, t, None, None) for t in times]
    >>> [(len(found), spans) for found, spans in cover.reads(rows(5_000, 9_000))]
    [(2, {0: (5000, 10000)})]
    >>> [(len(found), spans) for found, spans in cover.reads(rows(1_000, 7_000, 12_000))]
    [(1, {0: (1000, 2000)}), (1, {0: (12000, 13000)})]
    >>> cover.reads(rows(1_500, 9_999))
    []
    """

    __slots__ = ("spans",)

    def __init__(self) -> None:
        # (metric, org, day) -> sorted, disjoint [lo, hi) ranges, flattened: [lo0, hi0, lo1, ...]
        self.spans: dict[tuple[str, str | None, int], list[int]] = {}

    def clear(self) -> None:
        """Forget every range (the slots were forgotten, or may be stale)."""
        self.spans.clear()

    def reads(
        self, rows: Iterable[RecordRow]
    ) -> list[tuple[list[RecordRow], dict[int, tuple[int, int]]]]:
        """The reads that bring the slots of the rows whose time is not covered, and cover
        what they read: (rows, UTC day -> [lo, hi) to read). A read has, of each day, the
        rows of one pair in one gap (a read of a day spans one range)."""
        gaps: dict[tuple[tuple[str, str | None, int], int], list[RecordRow]] = {}
        spans = self.spans
        for row in rows:
            ts = row[6]
            group = (row[1], row[4], ts // _DAY)
            held = spans.get(group)
            at = 0 if held is None else bisect_right(held, ts)
            if at % 2 == 0:  # after an end (or before the first start): not covered
                gaps.setdefault((group, at), []).append(row)
        reads: list[tuple[list[RecordRow], dict[int, tuple[int, int]]]] = []
        order: dict[int, int] = {}  # reads that have rows of a day
        covered: list[tuple[tuple[str, str | None, int], int, int]] = []
        for (group, at), found in gaps.items():
            times = [row[6] for row in found]
            lo, hi = min(times) // _US * _US, max(times) // _US * _US + _US
            held = spans.get(group, [])
            left = held[at - 1] if at else group[2] * _DAY
            right = held[at] if at < len(held) else (group[2] + 1) * _DAY
            if 4 * (hi - lo) >= right - left:
                lo, hi = left, right
            k = order.get(group[2], 0)
            order[group[2]] = k + 1
            if k == len(reads):
                reads.append(([], {}))
            reads[k][0].extend(found)
            reads[k][1][group[2]] = (lo, hi)
            covered.append((group, lo, hi))
        for group, lo, hi in covered:  # after every gap was found against the old ranges
            self._cover(group, lo, hi)
        return reads

    def _cover(self, group: tuple[str, str | None, int], lo: int, hi: int) -> None:
        held = self.spans.setdefault(group, [])
        # the ranges that touch [lo, hi) merge with it
        start = bisect_right(held, lo)
        start -= start % 2  # the range whose start is at or before lo, or the next one
        if start >= 2 and held[start - 1] >= lo:
            start -= 2
        end = start
        while end < len(held) and held[end] <= hi:
            lo, hi = min(lo, held[end]), max(hi, held[end + 1])
            end += 2
        held[start:end] = [lo, hi]


def prune(occupied: Slots, cursor: dict[tuple[SeriesKey, int], int], floor: int) -> bool:
    """Forget the slots and cursors before ``floor`` (a record at or after it places within
    its own microsecond, never before ``floor``); return whether a slot was forgotten. What
    is kept goes to new containers: in time order most is dropped."""
    for key in [key for key in cursor if key[1] < floor]:
        del cursor[key]
    held = len(occupied.first) + len(occupied.more)
    occupied.first = {ts: holder for ts, holder in occupied.first.items() if ts >= floor}
    occupied.more = {slot for slot in occupied.more if slot[2] >= floor}
    return len(occupied.first) + len(occupied.more) < held


class CallIds:
    """The ids one ``append`` call wrote or found stored, which its later windows' rows
    must not write again.

    Each window's written ids are a set of their own, so a window's ids are checked
    against a few sets of its neighbours' instead of one that grows with the call, and a
    window's set is dropped whole (``forget``) once later reads find its ids through the
    ledger. Ids found stored are ``kept`` for the whole call: the ledger may not know them.
    """

    __slots__ = ("kept", "windows")

    def __init__(self) -> None:
        self.windows: deque[tuple[int, set[str]]] = deque()  # (window number, ids written)
        self.kept: set[str] = set()

    def __contains__(self, rid: object) -> bool:
        return rid in self.kept or any(rid in ids for _, ids in self.windows)

    def isdisjoint(self, ids: set[str]) -> bool:
        """Whether none of ``ids`` is held."""
        return self.kept.isdisjoint(ids) and all(held.isdisjoint(ids) for _, held in self.windows)

    def forget(self, below: int) -> None:
        """Drop the ids written by the windows numbered below ``below``."""
        while self.windows and self.windows[0][0] < below:
            self.windows.popleft()


def unstored(
    window: list[RecordRow],
    number: int,
    found: list[tuple[dict[str, str], dict[str, Any]]],
    seen: CallIds,
    occupied: Slots,
    remember: Callable[[dict[str, str], dict[str, Any]], None],
) -> list[RecordRow]:
    """The rows of ``window`` (the call's ``number``-th) that need a point: not among the
    stored points ``found`` (the window's own read, which covers where each of its rows
    goes and where the ledger says its id went before) and not earlier in the call
    (``seen``, to which the window's ids are added). Every point time found is
    ``occupied`` (also of a point whose fields are still landing), and the stored point
    of a row is remembered."""
    stored: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
    for tags, values in found:
        key = series_key_of(tags, values)
        occupied.take(key, values.get("c") or "", int(values["time"]), (None, *key))
        rid = values.get("rid")
        if rid is not None:
            stored[rid] = (tags, values)
    ids = set(map(_ID, window))
    if len(ids) == len(window) and seen.isdisjoint(ids) and stored.keys().isdisjoint(ids):
        seen.windows.append((number, ids))  # the usual case: every id new
        return window
    fresh, wrote = [], set()  # one at a time: the first of a repeated id counts
    for row in window:
        rid = row[0]
        if rid in wrote or rid in seen:
            continue
        point = stored.get(rid)
        if point is not None:
            seen.kept.add(rid)
            remember(*point)
        else:
            wrote.add(rid)
            fresh.append(row)
    seen.windows.append((number, wrote))
    return fresh


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
