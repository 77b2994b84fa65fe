"""Calendar periods in an IANA time zone, as half-open UTC ranges in nanoseconds.

Days are local calendar days (23 or 25 hours across DST changes), weeks start
on Monday (ISO), months and years are calendar ones. Hours are the stretches
between successive instants whose local wall clock reads ``HH:00``; in zones
with offsets like +05:45 they start at a quarter past the UTC hour.

>>> cal = Calendar("Europe/Paris")
>>> start, end = cal.bounds(PeriodType.DAILY, to_ns(datetime(2026, 3, 29, 12, tzinfo=UTC)))
>>> (end - start) // 3_600_000_000_000
23
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tsmeter.domain.models import PeriodType
from tsmeter.domain.validation import from_ns, to_ns
from tsmeter.errors import ValidationError

__all__ = ["Calendar", "Run", "runs"]

K = TypeVar("K", bound=Hashable)

_HOUR = timedelta(hours=1)
_HOUR_NS = 3_600_000_000_000
# Each period type is assembled exactly from the one below it.
ROLLUP_SOURCE: dict[PeriodType, PeriodType | None] = {
    PeriodType.HOURLY: None,
    PeriodType.DAILY: PeriodType.HOURLY,
    PeriodType.WEEKLY: PeriodType.DAILY,
    PeriodType.MONTHLY: PeriodType.DAILY,
    PeriodType.YEARLY: PeriodType.MONTHLY,
}


@dataclass(frozen=True)
class Run:
    """``count`` consecutive periods of equal length ``step`` starting at ``base`` (ns).

    A timestamp ``t`` in ``[base, base + count*step)`` lies in period number
    ``(t - base) // step``; stores use this to bucket with plain arithmetic.
    """

    base: int
    step: int
    count: int

    @property
    def end(self) -> int:
        """The end of the last period of the run."""
        return self.base + self.step * self.count


def runs(boundaries: list[int]) -> list[Run]:
    """Group successive period boundaries into runs of equal-length periods.

    >>> runs([0, 10, 20, 30, 35, 40])
    [Run(base=0, step=10, count=3), Run(base=30, step=5, count=2)]
    """
    result: list[Run] = []
    for start, end in itertools.pairwise(boundaries):
        step = end - start
        last = result[-1] if result else None
        if last is not None and last.step == step and last.end == start:
            result[-1] = Run(last.base, step, last.count + 1)
        else:
            result.append(Run(start, step, 1))
    return result


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("timezone", f"unknown IANA time zone {name!r}") from None


class Calendar:
    """Period arithmetic in one time zone (default UTC).

    >>> from_ns(Calendar("Asia/Kathmandu").start_of(PeriodType.HOURLY, 1_767_225_600 * 10**9))
    datetime.datetime(2025, 12, 31, 23, 15, tzinfo=datetime.timezone.utc)
    """

    def __init__(self, timezone: str = "UTC") -> None:
        self.timezone = timezone
        self.zone = _zone(timezone)
        self._cache: dict[tuple[PeriodType, int], list[int]] = {}

    def __repr__(self) -> str:
        return f"Calendar({self.timezone!r})"

    # -- single periods ---------------------------------------------------------------
    def start_of(self, period: PeriodType, ns: int) -> int:
        """The start (ns) of the period that contains the instant ``ns``."""
        local = from_ns(ns).astimezone(self.zone)
        if period is PeriodType.HOURLY:
            return self._hour_start(local, ns)
        day = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
        if period is PeriodType.WEEKLY:
            day = _wall(day - timedelta(days=day.weekday()), self.zone)
        elif period is PeriodType.MONTHLY:
            day = day.replace(day=1)
        elif period is PeriodType.YEARLY:
            day = day.replace(month=1, day=1)
        return self._local_to_ns(day)

    def next_start(self, period: PeriodType, start: int) -> int:
        """The start of the period after the one starting at ``start``."""
        if period is PeriodType.HOURLY:
            candidate = start + _HOUR_NS
            found = self.start_of(period, candidate)
            return found if found > start else candidate
        local = from_ns(start).astimezone(self.zone).replace(tzinfo=None)
        if period is PeriodType.DAILY:
            nxt = local.replace(hour=0, minute=0) + timedelta(days=1)
        elif period is PeriodType.WEEKLY:
            nxt = local.replace(hour=0, minute=0) + timedelta(days=7)
        elif period is PeriodType.MONTHLY:
            y, m = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
            nxt = datetime(y, m, 1)
        else:
            nxt = datetime(local.year + 1, 1, 1)
        return self._local_to_ns(nxt.replace(tzinfo=self.zone))

    def bounds(self, period: PeriodType, ns: int) -> tuple[int, int]:
        """``(start, end)`` in ns of the period containing ``ns``."""
        start = self.start_of(period, ns)
        return start, self.next_start(period, start)

    # -- many periods -----------------------------------------------------------------
    def boundaries(self, period: PeriodType, start: int, end: int) -> list[int]:
        """Every period boundary from the period containing ``start`` to the first at or
        after ``end`` (so ``[b[0], b[-1])`` covers ``[start, end)``)."""
        first = self.start_of(period, start)
        result = [first]
        while result[-1] < end or len(result) == 1:
            result.append(self.next_start(period, result[-1]))
        return result

    def covering(self, period: PeriodType, instants: Iterable[int]) -> list[tuple[int, int]]:
        """The distinct periods ``(start, end)`` that contain any of ``instants``, sorted.

        >>> Calendar().covering(PeriodType.HOURLY, [0, 1, 3_600_000_000_000])
        [(0, 3600000000000), (3600000000000, 7200000000000)]
        """
        found: list[tuple[int, int]] = []
        end = None
        for t in sorted(set(instants)):
            if end is None or t >= end:
                start, end = self.bounds(period, t)
                found.append((start, end))
        return found

    def periods_of_hours(
        self, period: PeriodType, by_hour: Mapping[int, set[K]]
    ) -> dict[tuple[int, int], set[K]]:
        """Map UTC hours (numbered from the epoch) to the periods they overlap, merging the
        sets of keys (series) attached to each hour; a UTC hour can straddle two local periods
        in zones like +05:45.

        >>> touched = Calendar().periods_of_hours(PeriodType.DAILY, {0: {"a"}, 1: {"b"}})
        >>> [(bounds, sorted(keys)) for bounds, keys in touched.items()]
        [((0, 86400000000000), ['a', 'b'])]
        """
        touched: dict[tuple[int, int], set[K]] = {}
        edges: list[int] = []
        for hour in sorted(by_hour):
            lo, hi = hour * _HOUR_NS, (hour + 1) * _HOUR_NS
            if not edges or not edges[0] <= lo < hi <= edges[-1]:
                edges = self.boundaries(period, lo, hi + 31 * 24 * _HOUR_NS)  # edges[-1] >= hi
            i = bisect.bisect_right(edges, lo) - 1
            while edges[i] < hi:
                touched.setdefault((edges[i], edges[i + 1]), set()).update(by_hour[hour])
                i += 1
        return touched

    # -- helpers ----------------------------------------------------------------------
    def _hour_start(self, local: datetime, ns: int) -> int:
        truncated = local.replace(minute=0, second=0, microsecond=0)
        start = self._local_to_ns(truncated)
        if start > ns:  # a wall-clock hour that started before a backward shift
            start = self._local_to_ns(truncated.replace(fold=0))
        while start > ns:  # exotic shifts of less than an hour: step back in UTC
            start -= _HOUR_NS // 4
        return start

    def _local_to_ns(self, local: datetime) -> int:
        return to_ns(local.astimezone(UTC))


def _wall(value: datetime, zone: ZoneInfo) -> datetime:
    """Re-attach ``zone`` to a wall-clock value produced by arithmetic."""
    return value.replace(tzinfo=None).replace(tzinfo=zone, fold=0)
