"""Measures computed from the records of each period: the exact engine behind UNIQUE_COUNT,
TIME_WEIGHTED_SUM and usage grouped or filtered by a metric's dimensions.

The composable types (COUNT, SUM, AVG, MAX, MIN, LAST) are made of a summary's components,
which the stores keep and roll up. A distinct count is not made of smaller periods' counts
(a user active on Monday and on Tuesday is one user of the week), and a time-weighted sum
needs the reading in force when a period starts; usage grouped by a dimension needs each
record's properties. So these are computed at read time, here, from the records of each
period as the store streams them (:meth:`~tsmeter.ports.UsageStore.iter_records`, ordered by
time), in one pass, with integer arithmetic only:

* **components** per (period, subject, group): the number of records, the sum, min and max
  of their units, and the last value by time (of records with one time, the greatest id);
* **UNIQUE_COUNT**: the number of distinct values of ``metadata[unique_property]`` among the
  period's records (a record without it adds none);
* **TIME_WEIGHTED_SUM**: each record is a reading of its *series* (the subject and the values
  of all the metric's dimensions) that holds from its time until the series' next reading
  (of readings at one instant, the greatest id holds); the reading in force when a period
  starts (for the first period, from :meth:`~tsmeter.ports.UsageStore.readings_before`)
  carries into it. A period's integral runs to ``min(period end, as_of)``, in units × ns,
  as a Python int (exact at any size); a group sums its series' integrals. A series that
  only carries a reading into a period has usage there (``record_count`` 0) once the
  period has begun.

Periods are the calendar's (:class:`~tsmeter.domain.periods.Calendar`): half-open, local
calendar days of 23 or 25 hours across DST changes, quarter-hour zones. A property's value is
what :func:`~tsmeter.domain.properties.property_value` keeps (strings as given, integers in
decimal, booleans ``true``/``false``); a record without it has ``None`` (a group of its
own). A value of another type that a record stored before validation may hold is taken as
its JSON text, and an empty string as no value.

>>> from tsmeter.domain import MetricDefinition, RecordRow
>>> m = MetricDefinition(key="users", aggregation_type="UNIQUE_COUNT", unique_property="user")
>>> rows = [RecordRow(f"r{i}", "users", "org", "o1", None, 1, i, f'{{"user": "u{i % 2}"}}', None)
...         for i in range(5)]
>>> [(x.record_count, x.value(m)) for x in measure_rows(m, rows, [0, 10], as_of=10)]
[(5, 2)]
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from tsmeter.domain import AggregationType, MetricDefinition, PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.domain.properties import NS_PER, property_value, stored_values
from tsmeter.domain.quantities import aggregate_units, time_weighted_units
from tsmeter.errors import StorageUnavailableError, ValidationError
from tsmeter.ports import RecordQuery, UsageStore

__all__ = [
    "Grouping",
    "Measure",
    "grouping",
    "measure",
    "measure_rows",
    "period_edges",
]

Group = tuple[str | None, ...]
#: (subject type, subject id, group values)
GroupKey = tuple[str, str, Group]
#: (subject type, subject id, values of every dimension)
SeriesKey = tuple[str, str, Group]


@dataclass(frozen=True)
class Grouping:
    """How usage is split and filtered: ``group_by`` (dimension names, in the order asked)
    and ``where`` (``(name, value)`` pairs; value None: records without the property)."""

    group_by: tuple[str, ...] = ()
    where: tuple[tuple[str, str | None], ...] = ()


def grouping(
    metric: MetricDefinition,
    group_by: Sequence[str] = (),
    where: Mapping[str, object] | None = None,
) -> Grouping:
    """``group_by`` and ``where`` checked against the metric's dimensions (ValidationError
    naming ``groupBy[i]`` or ``where.<name>``); values of ``where`` are kept as
    :func:`~tsmeter.domain.properties.property_value` keeps them.

    >>> from tsmeter.domain import Dimension, MetricDefinition
    >>> m = MetricDefinition(key="tokens", aggregation_type="SUM",
    ...                      dimensions=[Dimension(name="model"), Dimension(name="region")])
    >>> grouping(m, ["region"], {"model": "gpt-4o"})
    Grouping(group_by=('region',), where=(('model', 'gpt-4o'),))
    >>> grouping(m, ["user"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: groupBy[0]: 'user' is not a dimension of metric 'tokens' ...
    """
    declared = metric.dimension_names
    shown = ", ".join(declared) if declared else "none"
    if isinstance(group_by, str):
        group_by = (group_by,)
    names: list[str] = []
    for i, name in enumerate(group_by):
        if name not in declared:
            raise ValidationError(
                f"groupBy[{i}]",
                f"{name!r} is not a dimension of metric {metric.key!r} (its dimensions: {shown})",
            )
        if name in names:
            raise ValidationError(f"groupBy[{i}]", f"{name!r} is named twice")
        names.append(name)
    kept: list[tuple[str, str | None]] = []
    for name, value in (where or {}).items():
        if name not in declared:
            raise ValidationError(
                f"where.{name}",
                f"{name!r} is not a dimension of metric {metric.key!r} (its dimensions: {shown})",
            )
        kept.append((name, None if value is None else property_value(f"where.{name}", value)))
    return Grouping(tuple(names), tuple(kept))


@dataclass(eq=False)
class Measure:
    """Usage of one subject (and group of dimension values) over one period ``[start, end)``
    (ns): the components of its records in the metric's units, the distinct values
    (UNIQUE_COUNT) and the held integral in units × ns (TIME_WEIGHTED_SUM)."""

    start: int
    end: int
    subject_type: str
    subject_id: str
    group: Group
    record_count: int = 0
    sum: int = 0
    min: int = 0
    max: int = 0
    last_ts: int = 0
    last_id: str = ""
    last_value: int = 0
    distinct: set[str] = field(default_factory=set)
    held: int = 0

    def add(self, units: int, ts: int, rid: str) -> None:
        """Count one record."""
        if self.record_count == 0:
            self.min = self.max = units
            self.last_ts, self.last_id, self.last_value = ts, rid, units
        else:
            if units < self.min:
                self.min = units
            elif units > self.max:
                self.max = units
            if ts > self.last_ts or (ts == self.last_ts and rid > self.last_id):
                self.last_ts, self.last_id, self.last_value = ts, rid, units
        self.record_count += 1
        self.sum += units

    def value(self, metric: MetricDefinition) -> int:
        """The usage as the metric measures it: a count for COUNT and UNIQUE_COUNT, else
        units (TIME_WEIGHTED_SUM: units × the metric's time unit, rounded half to even)."""
        agg = metric.aggregation_type
        if agg is AggregationType.UNIQUE_COUNT:
            return len(self.distinct)
        if agg is AggregationType.TIME_WEIGHTED_SUM:
            return time_weighted_units(self.held, NS_PER[metric.time_unit])
        if self.record_count == 0:
            return 0
        return aggregate_units(agg.value, self)


def period_edges(calendar: Calendar, period: PeriodType, start: int, end: int) -> list[int]:
    """The boundaries of every ``period`` meeting ``[start, end)``: ``[b0, b1, ..., bn]``
    with ``b0 <= start`` and ``bn >= end``."""
    edges = calendar.boundaries(period, start, end)
    while len(edges) > 2 and edges[-2] >= end:
        edges.pop()
    return edges


def measure(
    store: UsageStore,
    metric: MetricDefinition,
    edges: Sequence[int],
    *,
    subject_type: str | None = None,
    subject_id: str | None = None,
    group: Grouping = Grouping(),
    as_of: int | None = None,
) -> list[Measure]:
    """Measures of ``metric`` in each period between successive ``edges`` (ns, increasing),
    per subject (optionally of one type, or one subject) and group, read from ``store``;
    ``as_of`` (default now) is when time-weighted readings stop holding."""
    if as_of is None:
        as_of = time.time_ns()
    lo, hi = edges[0], edges[-1]
    query = RecordQuery(metric.key, metric.org_id, subject_type, subject_id, lo, hi)
    carry: list[RecordRow] = []
    if metric.aggregation_type is AggregationType.TIME_WEIGHTED_SUM:
        carry = store.readings_before(query, lo, metric.dimension_names)
    return measure_rows(
        metric, store.iter_records(query), edges, group=group, carry=carry, as_of=as_of
    )


class _Properties:
    """A record's declared property values, from its metadata JSON (parsed once per distinct
    text, so records that share their properties cost one parse)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._cache: dict[str | None, Group] = {}

    def __call__(self, metadata: str | None) -> Group:
        found = self._cache.get(metadata)
        if found is None:
            found = self._parse(metadata)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[metadata] = found
        return found

    def _parse(self, metadata: str | None) -> Group:
        return stored_values(self.names, metadata)


class _Series:
    """A time-weighted series: its reading in force, since when it is not integrated yet,
    and the group it counts in."""

    __slots__ = ("group", "rid", "since", "ts", "units")

    def __init__(self, group: GroupKey, ts: int, rid: str, units: int, since: int) -> None:
        self.group, self.ts, self.rid, self.units, self.since = group, ts, rid, units, since


def measure_rows(
    metric: MetricDefinition,
    rows: Iterable[RecordRow],
    edges: Sequence[int],
    *,
    group: Grouping = Grouping(),
    carry: Iterable[RecordRow] = (),
    as_of: int,
) -> list[Measure]:
    """Measures of ``metric`` from ``rows`` (its records in ``[edges[0], edges[-1])``, in
    time order) per period between successive ``edges``, subject and group; ``carry``: the
    latest reading of each time-weighted series before ``edges[0]`` (see the module
    docstring). Sorted by period, subject and group (None before values)."""
    return list(_Pass(metric, edges, group, as_of).run(rows, carry))


class _Pass:
    """One pass over a metric's records (see :func:`measure_rows`)."""

    def __init__(
        self, metric: MetricDefinition, edges: Sequence[int], group: Grouping, as_of: int
    ) -> None:
        if len(edges) < 2 or any(a >= b for a, b in pairwise(edges)):
            raise ValueError("edges must be at least two increasing instants")
        self.metric = metric
        self.edges = list(edges)
        self.as_of = as_of
        agg = metric.aggregation_type
        self.weighted = agg is AggregationType.TIME_WEIGHTED_SUM
        self.unique = metric.unique_property if agg is AggregationType.UNIQUE_COUNT else None
        dims = metric.dimension_names
        # the properties read of each record: every dimension (a time-weighted series is
        # the subject and all of them), then the unique property
        self.names = (*dims, self.unique) if self.unique is not None else dims
        self.properties = _Properties(self.names) if self.names else None
        self.pick = tuple(dims.index(n) for n in group.group_by)
        self.where = tuple((dims.index(n), v) for n, v in group.where)
        self.width = len(dims)

    def run(self, rows: Iterable[RecordRow], carry: Iterable[RecordRow]) -> Iterator[Measure]:
        edges, last = self.edges, len(self.edges) - 2
        index = 0
        lo, hi = edges[0], edges[1]
        found: dict[GroupKey, Measure] = {}
        series: dict[SeriesKey, _Series] = {}
        properties, pick, where, width = self.properties, self.pick, self.where, self.width
        weighted, unique = self.weighted, self.unique is not None
        empty: Group = ()
        if weighted:
            self._carry_in(carry, lo, series)
        previous = -(1 << 63)
        for row in rows:
            ts = row.ts
            if ts < previous:
                raise StorageUnavailableError(
                    f"the store returned records of metric {self.metric.key!r} out of time"
                    f" order ({ts} after {previous})"
                )
            previous = ts
            if ts >= hi:
                if ts >= edges[-1]:
                    break
                yield from self._close(found, series, lo, hi)
                found = {}
                if series:  # each period between carries the readings in force
                    index += 1
                    while ts >= edges[index + 1]:
                        yield from self._close(found, series, edges[index], edges[index + 1])
                        found = {}
                        index += 1
                else:
                    index = bisect.bisect_right(edges, ts, index + 1) - 1
                lo, hi = edges[index], edges[index + 1]
            if ts < lo:
                continue
            if properties is not None:
                values = properties(row.metadata)
                if where and any(values[i] != v for i, v in where):
                    continue
                chosen = tuple(values[i] for i in pick) if pick else empty
            else:
                values = empty
                chosen = (None,) * len(pick) if pick else empty
                if where and any(v is not None for _, v in where):
                    continue
            key = (row.subject_type, row.subject_id, chosen)
            m = found.get(key)
            if m is None:
                m = found[key] = Measure(lo, hi, *key)
            m.add(row.quantity, ts, row.id)
            if unique:
                seen = values[width]
                if seen is not None:
                    m.distinct.add(seen)
            if weighted:
                skey = (row.subject_type, row.subject_id, values[:width])
                s = series.get(skey)
                if s is None:
                    series[skey] = _Series(key, ts, row.id, row.quantity, ts)
                elif ts > s.ts:
                    self._hold(found, s, ts, lo, hi)
                    s.ts, s.rid, s.units, s.since = ts, row.id, row.quantity, ts
                elif ts == s.ts and row.id > s.rid:
                    s.rid, s.units = row.id, row.quantity
                elif ts < s.ts:  # pragma: no cover - the order check above forbids it
                    raise AssertionError("readings out of order")
        yield from self._close(found, series, lo, hi)
        if weighted and series:
            while index < last:
                index += 1
                yield from self._close({}, series, edges[index], edges[index + 1])

    def _carry_in(
        self, carry: Iterable[RecordRow], lo: int, series: dict[SeriesKey, _Series]
    ) -> None:
        """The readings in force at ``lo``: the latest of each series (greatest id on ties)."""
        for row in carry:
            if row.ts >= lo:
                continue
            values = self.properties(row.metadata) if self.properties is not None else ()
            if self.where:
                if self.properties is None:
                    if any(v is not None for _, v in self.where):
                        continue
                elif any(values[i] != v for i, v in self.where):
                    continue
            dims = values[: self.width] if values else (None,) * self.width
            chosen = tuple(dims[i] for i in self.pick)
            skey = (row.subject_type, row.subject_id, dims)
            s = series.get(skey)
            if s is None or (row.ts, row.id) > (s.ts, s.rid):
                key = (row.subject_type, row.subject_id, chosen)
                series[skey] = _Series(key, row.ts, row.id, row.quantity, lo)

    def _hold(
        self, found: dict[GroupKey, Measure], s: _Series, until: int, lo: int, hi: int
    ) -> None:
        """Integrate a series' reading from when it was last integrated to ``until`` (capped
        at ``as_of``) into its group's measure of the period ``[lo, hi)``."""
        stop = min(until, self.as_of)
        if stop > s.since and s.units:
            m = found.get(s.group)
            if m is None:
                m = found[s.group] = Measure(lo, hi, *s.group)
            m.held += s.units * (stop - s.since)

    def _close(
        self,
        found: dict[GroupKey, Measure],
        series: dict[SeriesKey, _Series],
        lo: int,
        hi: int,
    ) -> Iterator[Measure]:
        """The measures of the period ``[lo, hi)``, every series' reading integrated to its
        end and carried into the next period."""
        if series:
            begun = lo < self.as_of
            for s in series.values():
                if begun and s.group not in found:
                    found[s.group] = Measure(lo, hi, *s.group)
                self._hold(found, s, hi, lo, hi)
                s.since = hi
        yield from sorted(found.values(), key=_order)


def _order(m: Measure) -> tuple[Any, ...]:
    return (m.subject_type, m.subject_id, tuple((v is not None, v or "") for v in m.group))
