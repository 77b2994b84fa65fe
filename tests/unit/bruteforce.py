"""The independent brute force the aggregation tests compare with: periods computed per record
with zoneinfo wall-clock arithmetic, never with :mod:`tsmeter.domain.periods`; quantities
summed with Python's :mod:`decimal` (and AVG rounded half to even with :class:`Fraction`), never
with :mod:`tsmeter.domain.quantities`."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from tsmeter import AggregationType, Meter, PeriodType, UsageSummary
from tsmeter.adapters.influxdb.client import quote_ident, series_rows
from tsmeter.adapters.influxdb.schema import summary_measurement
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.adapters.influxdb.v2 import V2Transport
from tsmeter.domain.models import RECORD_LEVEL
from tsmeter.domain.periods import Calendar

#: the types whose summaries are made of components (the roll-ups' subject); the record-level
#: ones (UNIQUE_COUNT, TIME_WEIGHTED_SUM) have their own brute force, ``brute_measures``
AGGS = tuple(a for a in AggregationType if a not in RECORD_LEVEL)
PERIODS = tuple(PeriodType)
HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)
PARIS = "Europe/Paris"
#: the decimal places of the metrics the tests define (the default precision)
PLACES = 6

# (period start, period end, subject type, subject id, count, sum, min, max, last value,
#  last timestamp, total under the aggregation type)
Row = tuple[
    datetime, datetime, str, str, int, Decimal, Decimal, Decimal, Decimal, datetime, Decimal
]


@dataclass(frozen=True)
class Rec:
    """A record as the test means it: id, (subject type, subject id), quantity (a float
    means its shortest repr, as the API takes it), UTC instant."""

    id: str
    subject: tuple[str, str]
    quantity: float | int | str | Decimal
    ts: datetime

    @property
    def value(self) -> Decimal:
        """The quantity as the exact decimal it stands for."""
        q = self.quantity
        return Decimal(repr(q)) if isinstance(q, float) else Decimal(q)


def units_value(units: int) -> Decimal:
    """The decimal of a stored integer of units of a metric with ``PLACES`` places."""
    return Decimal(units) / 10**PLACES


def utc(y: int, m: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    """An aware UTC datetime."""
    return datetime(y, m, d, h, mi, s, us, tzinfo=UTC)


def wall(
    zone: str,
    y: int,
    m: int,
    d: int,
    h: int = 0,
    mi: int = 0,
    s: int = 0,
    us: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    """The UTC instant at which ``zone``'s wall clock reads the given time (fold=1: the repeat)."""
    return datetime(y, m, d, h, mi, s, us, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


def key(agg: AggregationType) -> str:
    """The metric that aggregates with ``agg`` (every test records into all six)."""
    return f"usage_{agg.value.lower()}"


# -- the brute force --------------------------------------------------------------------------
def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def period_of(period: PeriodType, ts: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The [start, end) in UTC of the local calendar period holding ``ts``."""
    local = ts.astimezone(zone)
    if period is PeriodType.HOURLY:
        # replace() keeps fold, so the repeated hour of a fall-back day stays the second one
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return start, start + HOUR
    day = local.date()
    if period is PeriodType.DAILY:
        first, nxt = day, day + timedelta(days=1)
    elif period is PeriodType.WEEKLY:
        first = day - timedelta(days=day.weekday())  # ISO: Monday
        nxt = first + timedelta(days=7)
    elif period is PeriodType.MONTHLY:
        first = date(day.year, day.month, 1)
        nxt = date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)
    else:
        first, nxt = date(day.year, 1, 1), date(day.year + 1, 1, 1)
    return _midnight(first, zone), _midnight(nxt, zone)


def brute(
    records: Iterable[Rec],
    period: PeriodType,
    zone: str,
    agg: AggregationType,
    start: datetime,
    end: datetime,
) -> list[Row]:
    """Expected summaries of every (period, subject) with records, for periods meeting
    [start, end)."""
    tz = ZoneInfo(zone)
    unique = {r.id: r for r in reversed(list(records))}  # the first occurrence of an id counts
    groups: dict[tuple[datetime, datetime, str, str], list[Rec]] = defaultdict(list)
    for r in unique.values():
        groups[(*period_of(period, r.ts, tz), *r.subject)].append(r)
    out: list[Row] = []
    for (ps, pe, subject_type, subject_id), rs in groups.items():
        if not (ps < end and pe > start):
            continue
        qs = [r.value for r in rs]
        last = max(rs, key=lambda r: (r.ts, r.id))
        total_sum = sum(qs, Decimal(0))  # exact: a few digits each, far below 28
        # the mean rounded half to even to the metric's places (round() of a Fraction is)
        mean = Decimal(round(Fraction(total_sum) * 10**PLACES / len(qs))) / 10**PLACES
        total = {
            AggregationType.COUNT: Decimal(len(qs)),
            AggregationType.SUM: total_sum,
            AggregationType.AVG: mean,
            AggregationType.MAX: max(qs),
            AggregationType.MIN: min(qs),
            AggregationType.LAST: last.value,
        }[agg]
        row = (ps, pe, subject_type, subject_id, len(qs), total_sum, min(qs), max(qs),
               last.value, last.ts, total)  # fmt: skip
        out.append(row)
    return sorted(out)


def got(summaries: Iterable[UsageSummary]) -> list[Row]:
    """Summaries from the API in the brute force's shape."""
    rows: list[Any] = [
        (s.period_start, s.period_end, s.subject_type, s.subject_id, s.record_count, s.sum,
         s.min, s.max, s.last_value, s.last_timestamp, s.total_quantity)
        for s in summaries
    ]  # fmt: skip
    return sorted(rows)


def stored(
    meter: Meter, agg: AggregationType, period: PeriodType, zone: str
) -> list[tuple[Any, ...]]:
    """The summaries the store has persisted, read behind the API (no freshness), their
    units as decimals."""
    if isinstance(meter.store, InfluxStore) and isinstance(meter.store.transport, V2Transport):
        cal = Calendar(zone)
        rows = [
            (r.period_start, cal.next_start(period, r.period_start), r.subject_type,
             r.subject_id, r.record_count, r.sum, r.min, r.max, r.last_value, r.last_ts)
            for r in meter.store.transport.stored_summaries(key(agg), period, zone)
        ]  # fmt: skip
    elif isinstance(meter.store, InfluxStore):
        rows = _stored_in_influxdb(meter.store, agg, period, zone)
    else:
        with closing(sqlite3.connect(getattr(meter.store, "path", ""))) as conn:
            rows = conn.execute(
                "SELECT m.period_start, m.period_end, s.subject_type, s.subject_id, m.cnt,"
                " m.total, m.min, m.max, m.last_value, m.last_ts FROM summaries m"
                " JOIN series s ON s.id = m.series_id"
                " WHERE s.metric_key = ? AND m.period_type = ? AND m.tz = ?",
                (key(agg), period.value, zone),
            ).fetchall()
    epoch = utc(1970, 1, 1)

    def at(ns: int) -> datetime:
        return epoch + US * (ns // 1000)

    return sorted(
        (at(a), at(b), st, si, n, *map(units_value, values), at(lts))
        for a, b, st, si, n, *values, lts in rows
    )


def _stored_in_influxdb(
    store: InfluxStore, agg: AggregationType, period: PeriodType, zone: str
) -> list[tuple[Any, ...]]:
    """Summary points of one metric as (start, end, type, id, count, sum, min, max, last, ts),
    in units."""
    cal = Calendar(zone)
    (result,) = store.transport.client.query(
        f'SELECT * FROM {quote_ident(summary_measurement(period, zone))} WHERE "metric" = $m',
        {"m": key(agg)},
    )
    return [
        (int(v["time"]), cal.next_start(period, int(v["time"])), v["subject_type"],
         v["subject_id"], int(v["count"]), int(v["units_sum"]), int(v["units_min"]),
         int(v["units_max"]), int(v["units_last"]), int(v["last_ts"]))
        for _, v in series_rows(result)
    ]  # fmt: skip


# -- record-level measures: UNIQUE_COUNT, TIME_WEIGHTED_SUM, dimensions ------------------------
#: seconds in each time unit of a time-weighted sum
UNIT_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}

# (period start, period end, subject type, subject id, group values, count, sum, min, max,
#  last value, last timestamp, total); min, max, last are None for a period the subject
#  only carries a time-weighted reading into
MRow = tuple[Any, ...]


@dataclass(frozen=True)
class Prop:
    """A record with properties: the :class:`Rec` fields and its ``metadata``."""

    id: str
    subject: tuple[str, str]
    quantity: int | str | Decimal
    ts: datetime
    metadata: tuple[tuple[str, Any], ...] = ()

    @property
    def value(self) -> Decimal:
        """The quantity as the exact decimal it stands for."""
        return Decimal(self.quantity)

    def prop(self, name: str) -> str | None:
        """The property as text: strings as given, integers in decimal, booleans
        true/false; None when absent."""
        found = dict(self.metadata).get(name)
        if found is None:
            return None
        if found is True or found is False:
            return "true" if found else "false"
        return str(found)


def periods_between(
    period: PeriodType, zone: str, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Every local calendar period meeting [start, end), found by stepping with
    :func:`period_of` from the period of ``start``."""
    tz = ZoneInfo(zone)
    found = [period_of(period, start, tz)]
    while found[-1][1] < end:
        found.append(period_of(period, found[-1][1], tz))
    return found


def _seconds(span: timedelta) -> Fraction:
    return Fraction(span.days * 86400 + span.seconds) + Fraction(span.microseconds, 10**6)


def brute_measures(
    records: Iterable[Prop],
    period: PeriodType,
    zone: str,
    agg: str,
    start: datetime,
    end: datetime,
    *,
    dimensions: tuple[str, ...] = (),
    group_by: tuple[str, ...] = (),
    where: dict[str, str | None] | None = None,
    unique: str | None = None,
    time_unit: str = "HOUR",
    as_of: datetime,
) -> list[MRow]:
    """Expected summaries per period meeting [start, end), subject and group of ``group_by``
    values, of the records matching ``where``. The first record of an id counts. A
    time-weighted series is the subject and every dimension's value; the reading in force at
    an instant is the latest reading at or before it (greatest id at one instant); each
    period integrates, segment by segment, from its start to min(its end, as_of), in
    Fractions of seconds, reported in ``time_unit`` rounded half to even to PLACES."""
    kept = list({r.id: r for r in reversed(list(records))}.values())
    kept = [r for r in kept if all(r.prop(k) == v for k, v in (where or {}).items())]
    out: list[MRow] = []
    for ps, pe in periods_between(period, zone, start, end):
        groups: dict[tuple[Any, ...], list[Prop]] = defaultdict(list)
        for r in kept:
            if ps <= r.ts < pe:
                groups[(*r.subject, tuple(r.prop(g) for g in group_by))].append(r)
        held: dict[tuple[Any, ...], Fraction] = defaultdict(Fraction)
        if agg == "TIME_WEIGHTED_SUM":
            cap = min(pe, as_of)
            series: dict[tuple[Any, ...], list[Prop]] = defaultdict(list)
            for r in kept:
                series[(*r.subject, tuple(r.prop(d) for d in dimensions))].append(r)
            for (st, si, dims), readings in series.items():
                gkey = (st, si, tuple(dims[dimensions.index(g)] for g in group_by))
                if any(r.ts < ps for r in readings) and ps < as_of:
                    groups.setdefault(gkey, [])
                cuts = sorted({ps, *(r.ts for r in readings if ps < r.ts < cap)})
                for a, b in zip(cuts, [*cuts[1:], cap], strict=True):
                    if b <= a:
                        continue
                    before = [r for r in readings if r.ts <= a]
                    if before:
                        now = max(before, key=lambda r: (r.ts, r.id))
                        held[gkey] += Fraction(now.value) * _seconds(b - a)
                        groups.setdefault(gkey, [])
        for (st, si, gvals), rs in groups.items():
            qs = [r.value for r in rs]
            if agg == "UNIQUE_COUNT":
                assert unique is not None
                total = Decimal(len({r.prop(unique) for r in rs} - {None}))
            elif agg == "TIME_WEIGHTED_SUM":
                per_unit = held[(st, si, gvals)] / UNIT_SECONDS[time_unit]
                total = Decimal(round(per_unit * 10**PLACES)) / 10**PLACES
            elif agg == "COUNT":
                total = Decimal(len(qs))
            elif agg == "SUM":
                total = sum(qs, Decimal(0))
            else:
                raise ValueError(agg)
            last = max(rs, key=lambda r: (r.ts, r.id)) if rs else None
            out.append((
                ps, pe, st, si, gvals, len(rs), sum(qs, Decimal(0)),
                min(qs) if qs else None, max(qs) if qs else None,
                last.value if last else None, last.ts if last else None, total,
            ))  # fmt: skip
    return sorted(out, key=_sort_key)


def _sort_key(row: MRow) -> tuple[Any, ...]:
    return (row[0], row[2], row[3], tuple((v is not None, v or "") for v in row[4]))


def got_measures(summaries: Iterable[UsageSummary], group_by: tuple[str, ...] = ()) -> list[MRow]:
    """Summaries from the API in :func:`brute_measures`'s shape (``dimensions`` must name
    exactly ``group_by``, or be None when not grouped)."""
    rows = []
    for s in summaries:
        if s.dimensions is not None:
            assert tuple(s.dimensions) == group_by, s.dimensions
        gvals = tuple((s.dimensions or {}).values())
        rows.append((
            s.period_start, s.period_end, s.subject_type, s.subject_id, gvals, s.record_count,
            s.sum, s.min, s.max, s.last_value, s.last_timestamp, s.total_quantity,
        ))  # fmt: skip
    return sorted(rows, key=_sort_key)
