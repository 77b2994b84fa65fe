"""What an incremental roll-up on InfluxDB still has to do: the change log and its ledger.

With every write the InfluxDB store logs, in ``usage_dirty``, one entry per (metric, org,
UTC hour) the write touched: tags ``metric``, ``org``, ``w`` (the writer), field ``hour``,
time = the writer's clock when it encoded the write (the entry's *stamp*). An entry is
identified by its series (those three tags) and its stamp. Two facts bound what can still
arrive:

* writers' clocks differ from the roll-up host's by at most :data:`CLOCK_SKEW`, and a write,
  queued and retried, lands within :data:`IN_FLIGHT` of its stamp on its writer's clock;
  so once the roll-up host's clock is :data:`SETTLE` (their sum) past a stamp, every point
  of that write is visible, and nothing stamped that early lands any more;
* InfluxDB makes the points of one write visible one shard, one series at a time: a run can
  see an entry before the records it was written with.

Each period type and zone keeps a :class:`Ledger` (in ``tsmeter_state``): the *settle line*
(every entry stamped at or before it is final), the newest stamp processed (the
watermark), and the entries stamped after the settle line that a run has processed. A run
moves the settle line to ``now - SETTLE`` and processes

* every entry stamped between the old settle line and the new one, again (so a write a run
  saw only in part is recomputed once it has fully landed), and
* every entry stamped after the new settle line that the ledger does not name: a grouped
  count per series compares the log with the ledger without reading the entries, and only
  the series whose counts differ are read; entries newer than the watermark are read.

So a run with nothing new reads one count per recent series, one late record is one entry
and its periods, and each entry is processed at most twice. The ledger only ever saves work:
without it (lost, or written by an older version) the runs process more, never less.
Several hosts may run roll-ups: each run writes the ledger of what it processed, the newest
ledger wins, and what another run processed but that ledger does not name is processed
again. A purge removes a metric's entries: if late entries of that metric then land, in the
same series, as many as were purged since the settle line, the counts agree and those
entries wait for the settle pass (at most :data:`SETTLE`).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tsmeter.adapters.influxdb.lineprotocol import decode_tag

__all__ = ["CLOCK_SKEW", "IN_FLIGHT", "SETTLE", "Ledger", "Log", "pending"]

_S = 1_000_000_000
#: how far writers' clocks may be from the roll-up host's
CLOCK_SKEW = 300 * _S
#: how long after its stamp a write may still land (``InfluxStore.IN_FLIGHT_S``)
IN_FLIGHT = 300 * _S
#: once the roll-up host's clock is this far past a stamp, that write has fully landed
SETTLE = CLOCK_SKEW + IN_FLIGHT
#: characters per string field of the ledger (InfluxDB 1.x holds at most 64 KB in one)
PART = 60_000

Series = tuple[str, str, str]  # stored tag values: metric, org ("" without), writer
Entry = tuple[Series, int, int]  # (series, stamp, UTC hour)
Scope = tuple[str, str | None]  # (metric_key, org_id)


class Log(Protocol):
    """What the ledger reads of the change log (a roll-up ``Source`` provides it)."""

    def entries(
        self, lo: int, hi: int | None, series: Sequence[Series] | None, scope: Scope | None
    ) -> list[Entry]:
        """Entries stamped in ``(lo, hi]`` (``hi`` None: no end) of ``series`` (None: all)
        in ``scope`` (None: every metric)."""
        ...

    def entry_counts(self, lo: int, hi: int, scope: Scope | None) -> dict[Series, int]:
        """How many entries each series has stamped in ``(lo, hi]``, in ``scope``."""
        ...


def scope_of(series: Series) -> Scope:
    """The (metric, org) an entry's series concerns, decoded."""
    return decode_tag(series[0]), decode_tag(series[1]) if series[1] else None


@dataclass
class Ledger:
    """The processed part of the change log: see the module docstring.

    ``seen`` holds, per series, sorted disjoint ``[first, last]`` ranges of stamps, each
    stamp in them an entry processed (a write's entries of one series have consecutive
    stamps, so a write is one range).
    """

    settled: int
    mark: int
    seen: dict[Series, list[list[int]]] = field(default_factory=dict)

    # -- membership ---------------------------------------------------------------------
    def knows(self, series: Series, stamp: int) -> bool:
        """Whether the entry of ``series`` stamped ``stamp`` was processed."""
        ranges = self.seen.get(series)
        if not ranges:
            return False
        i = bisect.bisect_right(ranges, [stamp, 2**63]) - 1
        return i >= 0 and ranges[i][0] <= stamp <= ranges[i][1]

    def count(self, series: Series, lo: int, hi: int) -> int:
        """Processed entries of ``series`` stamped in ``(lo, hi]``."""
        return sum(max(0, min(b, hi) - max(a, lo + 1) + 1) for a, b in self.seen.get(series, ()))

    # -- changes ------------------------------------------------------------------------
    def settle(self, line: int) -> None:
        """Move the settle line to ``line``, forgetting what is final."""
        self.settled = max(self.settled, line)
        for series in list(self.seen):
            kept = [[max(a, self.settled + 1), b] for a, b in self.seen[series] if b > self.settled]
            if kept:
                self.seen[series] = kept
            else:
                del self.seen[series]

    def add(self, entries: Iterable[Entry]) -> None:
        """Name ``entries`` processed (those after the settle line) and move the watermark."""
        stamps: dict[Series, set[int]] = {}
        for series, stamp, _ in entries:
            self.mark = max(self.mark, stamp)
            if stamp > self.settled:
                stamps.setdefault(series, set()).add(stamp)
        for series, new in stamps.items():
            self.seen[series] = _ranges(new, self.seen.get(series, []))

    def replace(self, series: Series, lo: int, hi: int, stamps: Iterable[int]) -> None:
        """Make ``stamps`` the processed entries of ``series`` stamped in ``(lo, hi]``."""
        outside = [[a, b] for a, b in self.seen.get(series, ()) if b <= lo or a > hi]
        for a, b in self.seen.get(series, ()):
            if a <= lo < b:
                outside.append([a, lo])
            if a <= hi < b:
                outside.append([hi + 1, b])
        ranges = _ranges(set(stamps), outside)
        if ranges:
            self.seen[series] = ranges
        else:
            self.seen.pop(series, None)

    # -- storage ------------------------------------------------------------------------
    def fields(self) -> dict[str, object]:
        """The fields of the ``tsmeter_state`` point that keeps this ledger: ``watermark``,
        ``settled``, ``parts`` and the JSON of ``seen`` cut into ``seen0`` … (ASCII, so
        characters are bytes, at most :data:`PART` per field)."""
        text = json.dumps([[*series, [x for r in ranges for x in r]]
                           for series, ranges in sorted(self.seen.items())],
                          separators=(",", ":"))  # fmt: skip
        parts = [text[i : i + PART] for i in range(0, len(text), PART)] or [""]
        out: dict[str, object] = {"watermark": self.mark, "settled": self.settled,
                                  "parts": len(parts)}  # fmt: skip
        out.update({f"seen{i}": part for i, part in enumerate(parts)})
        return out

    @classmethod
    def of(cls, values: Mapping[str, Any] | None, margin: int = CLOCK_SKEW) -> Ledger | None:
        """The ledger kept in a state point's fields; None if there is none. A point with
        only a watermark (written before ledgers) or a ledger that cannot be read gives an
        empty ledger settled ``margin`` before the watermark, as runs used to re-read."""
        if not values or values.get("watermark") is None:
            return None
        mark = int(values["watermark"])
        try:
            parts = int(values["parts"])
            text = "".join(str(values[f"seen{i}"]) for i in range(parts))
            seen: dict[Series, list[list[int]]] = {}
            for metric, org, writer, flat in json.loads(text) if text else []:
                seen[(str(metric), str(org), str(writer))] = [
                    [int(flat[i]), int(flat[i + 1])] for i in range(0, len(flat), 2)
                ]
            return cls(int(values["settled"]), mark, seen)
        except (KeyError, TypeError, ValueError):
            return cls(mark - margin, mark)


def _ranges(stamps: set[int], ranges: list[list[int]]) -> list[list[int]]:
    """``ranges`` and ``stamps`` merged into sorted, disjoint, coalesced ranges."""
    pieces = sorted([*([s, s] for s in stamps), *([a, b] for a, b in ranges)])
    out: list[list[int]] = []
    for a, b in pieces:
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def in_scope(series: Series, scope: Scope | None) -> bool:
    """Whether ``series`` logs changes of ``scope`` (None: every metric)."""
    return scope is None or scope_of(series) == scope


def pending(
    log: Log, ledger: Ledger, settle_to: int, scope: Scope | None = None
) -> tuple[list[Entry], Ledger]:
    """(the entries to process, the ledger once they are): the entries stamped between
    ``ledger``'s settle line and ``settle_to`` (all of them), then those after it that the
    ledger does not name; ``settle_to`` no later than the settle line only looks for those.
    The ledger returned is a new one; ``scope`` limits both to one metric (a query's)."""
    after = Ledger(ledger.settled, ledger.mark, {k: [list(r) for r in v]
                                                  for k, v in ledger.seen.items()})  # fmt: skip
    todo: list[Entry] = []
    line = max(ledger.settled, settle_to)
    if line > ledger.settled:
        todo += log.entries(ledger.settled, line, None, scope)
    after.settle(line)
    if ledger.mark > line:  # entries the ledger may name: compare counts, read the odd ones
        counts = log.entry_counts(line, ledger.mark, scope)
        known = [s for s in after.seen if in_scope(s, scope)]
        odd = sorted(
            s for s in {*counts, *known} if counts.get(s, 0) != after.count(s, line, ledger.mark)
        )
        if odd:
            found = log.entries(line, ledger.mark, odd, None)
            by_series: dict[Series, list[int]] = {s: [] for s in odd}
            for entry in found:
                by_series[entry[0]].append(entry[1])
                if not after.knows(entry[0], entry[1]):
                    todo.append(entry)
            for series, stamps in by_series.items():  # what is there now, all processed
                after.replace(series, line, ledger.mark, stamps)
    todo += log.entries(max(line, ledger.mark), None, None, scope)
    after.add(todo)
    return todo, after
