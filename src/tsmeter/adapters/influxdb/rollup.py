"""Aggregation on InfluxDB, pushed down to InfluxQL.

Each run of equal-length periods (see :func:`tsmeter.domain.periods.runs`) is one
``GROUP BY time(<length>ns, <offset>ns)`` query whose buckets coincide with the
calendar periods, so DST days, +05:45 zones and calendar months are exact.
Quantities are integer ``units``, so count, sum, min and max are exact as InfluxDB computes
them, except that InfluxQL's integer sum wraps around silently on overflow: a period whose
count times its largest magnitude may pass 2**63-1 is summed again here from its points'
units (read a page at a time), and a total beyond the 64-bit range is an error, never a
wrapped number. ``last`` is the point with the greatest time, which is the record with the
greatest timestamp except in a microsecond where a point had to move (``usage_collisions``):
there the records of that microsecond are read and the tie is broken by record id.

Incremental runs process the change log ``usage_dirty`` (which metrics received records
in which UTC hour) through a ledger of the entries already processed
(:mod:`~tsmeter.adapters.influxdb.changelog`): a run with nothing new reads one count per
recently written series, a late record recomputes only the periods of its metric it
touches, and every entry is processed once more when its write has surely landed in full;
recomputing a period twice gives the same summary.

A series whose points cannot be summed (a total beyond the 64-bit range) fails alone: the
other series are computed and written, and :class:`~tsmeter.errors.SeriesError` names it.

The control flow (:func:`rollup_from`, :func:`fresh_from`) reads the server through a
:class:`Source`, so the InfluxDB 2.x store shares it with Flux reads
(:mod:`~tsmeter.adapters.influxdb.fluxrollup`); :class:`InfluxQL` is the v1 one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from tsmeter.adapters.influxdb import changelog, corrections
from tsmeter.adapters.influxdb.changelog import SETTLE, Entry, Ledger, Scope, Series
from tsmeter.adapters.influxdb.client import (
    InfluxV1Client,
    UnreadableAnswerError,
    quote_ident,
    series_rows,
)
from tsmeter.adapters.influxdb.cq import summed_exactly
from tsmeter.adapters.influxdb.lineprotocol import (
    encode_point,
    series_prefix,
    tag_value,
)
from tsmeter.adapters.influxdb.schema import (
    COLLISIONS,
    DIRTY,
    RAW,
    STATE,
    SeriesKey,
    metric_condition,
    series_condition,
    series_of,
    summary_measurement,
)
from tsmeter.domain import PeriodType
from tsmeter.domain.periods import ROLLUP_SOURCE, Calendar, Run, runs
from tsmeter.domain.quantities import MAX_UNITS
from tsmeter.errors import SeriesError
from tsmeter.ports import RollupStats, SummaryQuery, SummaryRow

_US = 1_000
_SERIES_PER_QUERY = 100
#: periods of a run one grouped query asks for (a week of hours)
PERIODS_PER_QUERY = 168
#: the roll-up host's clock (ns); the settle line follows it
clock: Callable[[], int] = time.time_ns
Touched = dict[tuple[int, int], set[Scope] | None]  # None: every metric
Components = dict[tuple[SeriesKey, int], SummaryRow]


def _state_key(period: PeriodType, calendar: Calendar) -> str:
    return f"rollup/{period.value}/{calendar.timezone}"


def watermark(client: InfluxV1Client, period: PeriodType, calendar: Calendar) -> int | None:
    """The newest change-log stamp ``period`` summaries have processed (None: never run)."""
    found = Ledger.of(InfluxQL(client).ledger(_state_key(period, calendar)))
    return None if found is None else found.mark


def _entries(
    client: InfluxV1Client,
    lo: int,
    hi: int | None,
    series: Sequence[Series] | None,
    scope: Scope | None,
) -> list[Entry]:
    """See :class:`Source`."""
    out: list[Entry] = []
    chunks: list[Sequence[Series] | None] = (
        [None] if series is None else
        [series[i : i + _SERIES_PER_QUERY] for i in range(0, len(series), _SERIES_PER_QUERY)]
    )  # fmt: skip
    for chunk in chunks:
        params: dict[str, Any] = {"lo": lo}
        where = "time > $lo"
        if hi is not None:
            params["hi"] = hi
            where += " AND time <= $hi"
        if scope is not None:
            where += " AND " + scope_condition([scope], params)
        if chunk is not None:
            terms = []
            for i, (metric, org, writer) in enumerate(chunk):
                params.update({f"e{i}m": metric, f"e{i}o": org, f"e{i}w": writer})
                terms.append(f'("metric" = $e{i}m AND "org" = $e{i}o AND "w" = $e{i}w)')
            where += " AND (" + " OR ".join(terms) + ")"
        (result,) = client.query(
            f'SELECT "hour" FROM {quote_ident(DIRTY)} WHERE {where} GROUP BY "metric", "org", "w"',
            params,
        )
        for tags, values in series_rows(result):
            key = (tags.get("metric", ""), tags.get("org", ""), tags.get("w", ""))
            out.append((key, int(values["time"]), int(values["hour"])))
    return out


def _entry_counts(
    client: InfluxV1Client, lo: int, hi: int, scope: Scope | None
) -> dict[Series, int]:
    """See :class:`Source`."""
    params: dict[str, Any] = {"lo": lo, "hi": hi}
    where = "time > $lo AND time <= $hi"
    if scope is not None:
        where += " AND " + scope_condition([scope], params)
    (result,) = client.query(
        f'SELECT count("hour") FROM {quote_ident(DIRTY)} WHERE {where}'
        ' GROUP BY "metric", "org", "w"',
        params,
    )
    return {
        (tags.get("metric", ""), tags.get("org", ""), tags.get("w", "")): int(values["count"])
        for tags, values in series_rows(result)
    }


def _log_end(client: InfluxV1Client) -> int:
    """The time of the newest change-log entry (0 when there is none)."""
    (result,) = client.query(f'SELECT last("hour") FROM {quote_ident(DIRTY)}')
    rows = series_rows(result)
    return int(rows[0][1]["time"]) if rows else 0


def scope_condition(scopes: list[Scope], params: dict[str, Any]) -> str:
    """An InfluxQL condition matching any of the (metric, org) scopes."""
    terms = []
    for i, (metric, org) in enumerate(scopes):
        params[f"m{i}"] = tag_value(metric)
        params[f"o{i}"] = tag_value(org) if org else ""
        terms.append(f'("metric" = $m{i} AND "org" = $o{i})')
    return "(" + " OR ".join(terms) + ")"


def _data_range(
    client: InfluxV1Client,
    condition: str = "",
    params: dict[str, Any] | None = None,
    field: str = "units",
) -> tuple[int, int] | None:
    where = f" WHERE {condition}" if condition else ""
    results = client.query(
        f"SELECT first({quote_ident(field)}) FROM {quote_ident(RAW)}{where};"
        f" SELECT last({quote_ident(field)}) FROM {quote_ident(RAW)}{where}",
        params or {},
    )
    first, last = (series_rows(r) for r in results)
    if not first or not last:
        return None
    return int(first[0][1]["time"]), int(last[0][1]["time"]) + 1


#: the ``tsmeter_state`` key of the mark ``tsmeter influx convert`` leaves once every raw point
#: of an earlier version has its integer units
CONVERTED = "convert/units"


def unconverted(client: InfluxV1Client) -> bool:
    """Whether raw points of an earlier version (float ``quantity``, no ``units``) may be
    stored: the raw measurement has a ``quantity`` field (InfluxDB keeps a field's key in each
    shard that ever held it) and ``tsmeter influx convert`` has left no mark. Two cheap reads
    (the field index and one state point), no raw point read."""
    (result,) = client.query(f"SHOW FIELD KEYS FROM {quote_ident(RAW)}")
    if "quantity" not in {v.get("fieldKey") for _, v in series_rows(result)}:
        return False
    return InfluxQL(client).ledger(CONVERTED) is None


def compute(client: InfluxV1Client, run: Run, scopes: Iterable[Scope] | None) -> Components:
    """Components of every period of ``run`` for the metrics in ``scopes`` (None: all),
    from raw points, asked PERIODS_PER_QUERY periods at a time (influxd's time for a
    grouped query grows with series times periods: a month of hours over thousands of
    subjects in one query would outlast the client's timeout).

    A query whose answer cannot be read (a series whose sum overflowed) is asked again one
    series at a time: SeriesError names the series that fail, with the others' components.
    """
    out: Components = {}
    failed: list[SeriesKey] = []
    keys = None if scopes is None else sorted(scopes, key=lambda k: (k[0], k[1] or ""))
    chunks: list[list[Scope] | None] = (
        [None] if keys is None else
        [keys[i : i + _SERIES_PER_QUERY] for i in range(0, len(keys), _SERIES_PER_QUERY)]
    )  # fmt: skip
    for first in range(0, run.count, PERIODS_PER_QUERY):
        part = Run(run.base + first * run.step, run.step,
                   min(PERIODS_PER_QUERY, run.count - first))  # fmt: skip
        for chunk in chunks:
            params: dict[str, Any] = {"lo": part.base, "hi": part.end}
            condition = "" if chunk is None else " AND " + scope_condition(chunk, params)
            try:
                beyond = _components(client, part, condition, params, out)
            except UnreadableAnswerError:
                beyond = []
                for key in _series_in(client, condition, params):
                    one = dict(params)
                    try:
                        beyond += _components(client, part, " AND " +
                                              series_condition([key], one), one, out)  # fmt: skip
                    except UnreadableAnswerError:
                        beyond.append(key)
            failed += [key for key in beyond if key not in failed]
        _settle_ties(client, part, out)
    if failed:
        raise SeriesError.naming(failed, OVERFLOW, list(out.values()))
    return out


#: what SeriesError says of a series whose stored quantities cannot be summed
OVERFLOW = (
    f"cannot be summed: its total in a period is beyond the 64-bit range of a stored total"
    f" (±{MAX_UNITS} units); purge or correct the records, or define the metric with a lower"
    " precision"
)
#: points per read of a period summed here (see :func:`exact_sum`)
SUM_PAGE = 50_000


def _components(
    client: InfluxV1Client, run: Run, condition: str, params: dict[str, Any], out: Components
) -> list[SeriesKey]:
    """Add the components of ``run``'s periods of the points matching ``condition``; return
    the series with a period whose total is beyond the 64-bit range (left out)."""
    (result,) = client.query(
        'SELECT count("units") AS "count", sum("units") AS "sum",'
        ' min("units") AS "min", max("units") AS "max", max("tsn") AS "last_ts",'
        f' last("units") AS "last" FROM {quote_ident(RAW)}'
        f" WHERE time >= $lo AND time < $hi{condition}"
        f" GROUP BY time({run.step}ns, {run.base % run.step}ns),"
        ' "metric", "subject_type", "subject_id", "org" fill(none)',
        params,
    )
    beyond: list[SeriesKey] = []
    for tags, v in series_rows(result):
        key = series_of(tags)
        start = int(v["time"])
        count, low, high = int(v["count"]), int(v["min"]), int(v["max"])
        total = int(v["sum"])
        if count * max(abs(low), abs(high)) > MAX_UNITS:  # InfluxQL's sum may have wrapped
            total = exact_sum(client, key, max(start, params["lo"]),
                              min(start + run.step, params["hi"]))  # fmt: skip
            if not -MAX_UNITS <= total <= MAX_UNITS:
                if key not in beyond:
                    beyond.append(key)
                continue
        out[(key, start)] = SummaryRow(
            key[0], key[1], key[2], key[3], start, start + run.step, count, total, low, high,
            int(v["last_ts"]), int(v["last"]),
        )  # fmt: skip
    return beyond


def exact_sum(client: InfluxV1Client, key: SeriesKey, lo: int, hi: int) -> int:
    """The exact sum of the ``units`` of series ``key`` in ``[lo, hi)``, added here from its
    points, read SUM_PAGE at a time in time order (the points at a page's last time are read
    together, so none is counted twice)."""
    total = 0
    cursor = lo
    while cursor < hi:
        params: dict[str, Any] = {"lo": cursor, "hi": hi}
        condition = series_condition([key], params)
        (result,) = client.query(
            f'SELECT "units" FROM {quote_ident(RAW)} WHERE time >= $lo AND time < $hi'
            f" AND {condition} ORDER BY time LIMIT {SUM_PAGE}",
            params,
        )
        rows = [v for _, v in series_rows(result) if v.get("units") is not None]
        if len(rows) < SUM_PAGE:
            return total + sum(int(v["units"]) for v in rows)
        last = int(rows[-1]["time"])
        total += sum(int(v["units"]) for v in rows if int(v["time"]) < last)
        at: dict[str, Any] = {"at": last}
        (result,) = client.query(
            f'SELECT "units" FROM {quote_ident(RAW)} WHERE time = $at'
            f" AND {series_condition([key], at)}",
            at,
        )
        total += sum(int(v["units"]) for _, v in series_rows(result) if v.get("units") is not None)
        cursor = last + 1
    return total


def _series_in(client: InfluxV1Client, condition: str, params: dict[str, Any]) -> list[SeriesKey]:
    """The series with points matching ``condition`` in ``[$lo, $hi)`` (a count never
    overflows, so this answer can always be read)."""
    (result,) = client.query(
        f'SELECT count("units") FROM {quote_ident(RAW)} WHERE time >= $lo AND time < $hi'
        f'{condition} GROUP BY "metric", "subject_type", "subject_id", "org"',
        params,
    )
    return sorted({series_of(tags) for tags, _ in series_rows(result)}, key=repr)


def _settle_ties(client: InfluxV1Client, run: Run, rows: Components) -> None:
    """Where a summary's last microsecond holds moved points, pick LAST by (time, id)."""
    if not rows:
        return
    (result,) = client.query(
        f'SELECT "n" FROM {quote_ident(COLLISIONS)} WHERE time >= $lo AND time < $hi'
        ' GROUP BY "metric", "subject_type", "subject_id", "org"',
        {"lo": run.base, "hi": run.end},
    )
    marked = {(series_of(tags), int(v["time"])) for tags, v in series_rows(result)}
    for (key, start), row in list(rows.items()):
        micro = row.last_ts // _US * _US
        if (key, micro) not in marked:
            continue
        params: dict[str, Any] = {"lo": micro, "hi": micro + _US}
        condition = series_condition([key], params)
        (points,) = client.query(
            f'SELECT "units", "rid", "tsn" FROM {quote_ident(RAW)}'
            f" WHERE time >= $lo AND time < $hi AND {condition}",
            params,
        )
        best = max((int(v["tsn"]), str(v["rid"]), int(v["units"]))
                   for _, v in series_rows(points) if v.get("units") is not None)  # fmt: skip
        rows[(key, start)] = row._replace(last_ts=best[0], last_value=best[2])


class Source(Protocol):
    """What the roll-up logic reads from and writes to a server."""

    def ledger(self, key: str) -> dict[str, Any] | None:
        """The fields of the newest state point stored under ``key`` (None: never stored):
        see :meth:`~tsmeter.adapters.influxdb.changelog.Ledger.of`."""
        ...

    def entries(
        self, lo: int, hi: int | None, series: Sequence[Series] | None, scope: Scope | None
    ) -> list[Entry]:
        """Change-log entries stamped in ``(lo, hi]`` (``hi`` None: no end) of ``series``
        (stored tag values; None: every series) in ``scope`` (None: every metric)."""
        ...

    def entry_counts(self, lo: int, hi: int, scope: Scope | None) -> dict[Series, int]:
        """How many change-log entries each series has stamped in ``(lo, hi]``."""
        ...

    def log_end(self) -> int:
        """The time of the newest change-log entry (0 when there is none)."""
        ...

    def data_range(self) -> tuple[int, int] | None:
        """[first, last + 1) of the raw point times, or None without records."""
        ...

    def compute(self, run: Run, scopes: Iterable[Scope] | None) -> Components:
        """Components of every period of ``run`` for ``scopes`` (None: all), from raw points."""
        ...

    def stored(self, query: SummaryQuery, measurement: str, lo: int, hi: int) -> list[SummaryRow]:
        """Summary points of the query's metric (and subject) starting in ``[lo, hi)``, with
        ``period_end`` left 0."""
        ...

    def write(self, body: bytes) -> None:
        """Write line protocol."""
        ...


class InfluxQL:
    """The :class:`Source` of the v1 API (InfluxQL)."""

    def __init__(self, client: InfluxV1Client) -> None:
        self.client = client

    def ledger(self, key: str) -> dict[str, Any] | None:
        """See :class:`Source`."""
        (result,) = self.client.query(
            f'SELECT * FROM {quote_ident(STATE)} WHERE "key" = $key ORDER BY time DESC LIMIT 1',
            {"key": tag_value(key)},
        )
        rows = series_rows(result)
        return rows[0][1] if rows else None

    def entries(
        self, lo: int, hi: int | None, series: Sequence[Series] | None, scope: Scope | None
    ) -> list[Entry]:
        """See :class:`Source`."""
        return _entries(self.client, lo, hi, series, scope)

    def entry_counts(self, lo: int, hi: int, scope: Scope | None) -> dict[Series, int]:
        """See :class:`Source`."""
        return _entry_counts(self.client, lo, hi, scope)

    def log_end(self) -> int:
        """See :class:`Source`."""
        return _log_end(self.client)

    def data_range(self) -> tuple[int, int] | None:
        """See :class:`Source`."""
        return _data_range(self.client)

    def compute(self, run: Run, scopes: Iterable[Scope] | None) -> Components:
        """See :class:`Source`."""
        return compute(self.client, run, scopes)

    def stored(self, query: SummaryQuery, measurement: str, lo: int, hi: int) -> list[SummaryRow]:
        """See :class:`Source`."""
        params: dict[str, Any] = {}
        condition = metric_condition(
            query.metric_key, query.org_id, query.subject_type, query.subject_id, params
        )
        (result,) = self.client.query(
            f"SELECT * FROM {quote_ident(measurement)} WHERE {condition}"
            " AND time >= $lo AND time < $hi",
            {**params, "lo": lo, "hi": hi},
        )
        out = []
        for _, v in series_rows(result):
            if v.get("units_sum") is None:  # written by an earlier version: recomputed
                continue
            if not v.get("count"):  # emptied by a cancel (``corrections.tombstones``)
                continue
            key = series_of(v)
            out.append(SummaryRow(
                key[0], key[1], key[2], key[3], int(v["time"]), 0, int(v["count"]),
                int(v["units_sum"]), int(v["units_min"]), int(v["units_max"]),
                int(v["last_ts"]), int(v["units_last"]),
            ))  # fmt: skip
        return out

    def write(self, body: bytes) -> None:
        """See :class:`Source`."""
        self.client.write(body)


def _compute_touched(
    source: Source, period: PeriodType, calendar: Calendar, touched: Touched
) -> Components:
    """Components of the ``touched`` periods; SeriesError (with every other series'
    components) if some series cannot be computed."""
    out: Components = {}
    failed: list[SeriesKey] = []
    spans: list[tuple[int, int, set[Scope] | None]] = []
    for (start, end), keys in sorted(touched.items(), key=lambda item: item[0]):
        if spans and spans[-1][1] == start:
            merged = None if keys is None or spans[-1][2] is None else spans[-1][2] | keys
            spans[-1] = (spans[-1][0], end, merged)
        else:
            spans.append((start, end, None if keys is None else set(keys)))
    for start, end, keys in spans:
        for run in runs(calendar.boundaries(period, start, end)):
            if run.base < end:
                try:
                    out.update(source.compute(run, keys))
                except SeriesError as exc:
                    failed += [key for key in exc.series if key not in failed]
                    out.update(_by_key(exc.rows))
    if failed:
        raise SeriesError.naming(failed, OVERFLOW, list(out.values()))
    return out


def _by_hour(entries: Iterable[Entry]) -> dict[int, set[Scope]]:
    """The (metric, org) scopes change-log entries mark, per UTC hour."""
    out: dict[int, set[Scope]] = {}
    for series, _, hour in entries:
        out.setdefault(hour, set()).add(changelog.scope_of(series))
    return out


def _by_key(rows: Iterable[SummaryRow]) -> Components:
    """Summary rows keyed by (series, period start), as in Components."""
    return {((r.metric_key, r.subject_type, r.subject_id, r.org_id), r.period_start): r
            for r in rows}  # fmt: skip


def rollup(
    client: InfluxV1Client,
    period: PeriodType,
    calendar: Calendar,
    start: int | None,
    end: int | None,
) -> RollupStats:
    """:func:`rollup_from` on the v1 API."""
    return rollup_from(InfluxQL(client), period, calendar, start, end)


def rollup_from(
    source: Source,
    period: PeriodType,
    calendar: Calendar,
    start: int | None,
    end: int | None,
) -> RollupStats:
    """Recompute the touched (or the requested) periods and overwrite their summaries.

    Like the embedded store, the period types below ``period`` that are kept (their roll-up
    has run in this zone) are brought up to date first; one never run is not written (each
    type is computed from the raw points, not from the level below).
    """
    below = ROLLUP_SOURCE[period]
    if below is not None and source.ledger(_state_key(below, calendar)) is None:
        below = None
    failed: list[SeriesKey] = []
    if below is not None:
        try:
            rollup_from(source, below, calendar, start, end)
        except SeriesError as exc:  # those series fail at this level too; the others go on
            failed += exc.series
    key = _state_key(period, calendar)
    ledger = Ledger.of(source.ledger(key))
    after: Ledger | None = None
    touched: Touched = {}
    todo: list[Entry] = []
    if start is None and end is None and ledger is not None:
        todo, after = changelog.pending(source, ledger, clock() - SETTLE)
        touched = dict(calendar.periods_of_hours(period, _by_hour(todo)))
    else:
        if start is None and end is None:  # the first run: everything, then follow the log
            # what the log holds now is processed by this run; read before the records
            after = Ledger(clock() - SETTLE, source.log_end())
            after.add(source.entries(after.settled, None, None, None))
        bounds = source.data_range()
        if bounds is not None:
            lo = max(bounds[0], start) if start is not None else bounds[0]
            hi = min(bounds[1], end) if end is not None else bounds[1]
            if lo < hi:
                edges = calendar.boundaries(period, lo, hi)
                touched = {(a, b): None for a, b in itertools.pairwise(edges)}
    failure: SeriesError | None = None
    try:
        rows = _compute_touched(source, period, calendar, touched)
    except SeriesError as exc:  # write the others; the watermark stays, so the failed
        failure, rows = exc, _by_key(exc.rows)  # series stays due for recomputation
        failed += [key for key in exc.series if key not in failed]
    rows.update(corrections.tombstones(source, period, calendar, todo, rows))  # cancels
    measurement = summary_measurement(period, calendar.timezone)
    now = time.time_ns()
    lines = summary_lines(measurement, rows.values(), now)
    if after is not None and failure is None:  # after the summaries, in the last request
        # stamped now, not at a fixed time, so a finite retention policy keeps it
        lines.append(encode_point(STATE, {"key": key}, after.fields(), now))
    for i in range(0, len(lines), 10_000):
        source.write("".join(f"{line}\n" for line in lines[i : i + 10_000]).encode())
    if failed:
        raise SeriesError.naming(failed, f"{OVERFLOW}; the other series' summaries were written")
    periods = sorted(touched)
    return RollupStats(
        summaries_written=len(rows),
        periods_recomputed=len(periods),
        records_seen=sum(r.record_count for r in rows.values()),
        range_start=periods[0][0] if periods else None,
        range_end=periods[-1][1] if periods else None,
    )


def summary_kinds(measurements: Iterable[str]) -> list[tuple[PeriodType, str]]:
    """The (period type, time zone) of the summary measurements among ``measurements``.

    >>> summary_kinds(["usage", "usage_daily", "usage_hourly.Europe/Paris", "usage_x"])
    [(<PeriodType.DAILY: 'DAILY'>, 'UTC'), (<PeriodType.HOURLY: 'HOURLY'>, 'Europe/Paris')]
    """
    out = []
    for name in measurements:
        for period in PeriodType:
            for zone in ("UTC", name.partition(".")[2]):
                if zone and summary_measurement(period, zone) == name:
                    out.append((period, zone))
    return out


def summary_lines(measurement: str, rows: Iterable[SummaryRow], now: int) -> list[str]:
    """Summary points as line protocol (the series prefix escaped once per series)."""
    prefixes: dict[SeriesKey, str] = {}
    lines = []
    for r in rows:
        key = (r.metric_key, r.subject_type, r.subject_id, r.org_id)
        prefix = prefixes.get(key)
        if prefix is None:
            tags = [("metric", r.metric_key), ("subject_type", r.subject_type),
                    ("subject_id", r.subject_id), ("org", r.org_id or "")]  # fmt: skip
            prefix = prefixes[key] = series_prefix(measurement, tags)
        lines.append(
            f"{prefix} count={r.record_count}i,units_sum={r.sum}i,units_min={r.min}i,"
            f"units_max={r.max}i,units_last={r.last_value}i,last_ts={r.last_ts}i,"
            f"computed_at={now}i {r.period_start}"
        )
    return lines


def fresh_summaries(
    client: InfluxV1Client, query: SummaryQuery, calendar: Calendar
) -> list[SummaryRow]:
    """:func:`fresh_from` on the v1 API."""
    return fresh_from(InfluxQL(client), query, calendar)


def fresh_from(source: Source, query: SummaryQuery, calendar: Calendar) -> list[SummaryRow]:
    """Stored summaries over the query's range, recomputed where records arrived since."""
    ledger = Ledger.of(source.ledger(_state_key(query.period_type, calendar)))
    found: Components = {}
    touched: Touched = {}
    edges = calendar.boundaries(query.period_type, query.start, query.end)
    if ledger is None:
        touched = {(a, b): None for a, b in itertools.pairwise(edges)}
    else:
        measurement = summary_measurement(query.period_type, calendar.timezone)
        for row in source.stored(query, measurement, edges[0], edges[-1]):
            end = calendar.next_start(query.period_type, row.period_start)
            key = (row.metric_key, row.subject_type, row.subject_id, row.org_id)
            found[(key, row.period_start)] = row._replace(period_end=end)
            if not summed_exactly(row.record_count, row.min, row.max):
                # a continuous query's sum may have wrapped: the period is summed again
                touched[(row.period_start, end)] = None
        # what no run has processed yet (the settle pass is left to runs)
        todo, _ = changelog.pending(source, ledger, ledger.settled,
                                    (query.metric_key, query.org_id))  # fmt: skip
        by_hour = _by_hour(todo)
        for bounds, keys in calendar.periods_of_hours(query.period_type, by_hour).items():
            if bounds[0] < query.end and bounds[1] > query.start and bounds not in touched:
                touched[bounds] = keys
    failed: list[SeriesKey] = []
    if touched:
        scope = {(query.metric_key, query.org_id)}
        touched = {bounds: scope for bounds in touched}
        try:
            fresh = _compute_touched(source, query.period_type, calendar, touched)
        except SeriesError as exc:  # only an error where the query asks for such a series
            fresh, failed = _by_key(exc.rows), exc.series
        for key, start in list(found):  # recomputed periods: only what the records give
            if any(a <= start < b for a, b in touched) and (key, start) not in fresh:
                del found[(key, start)]
        found.update(fresh)
    wanted = [
        row for (key, start), row in found.items()
        if start < query.end and row.period_end > query.start
        and key[0] == query.metric_key and key[3] == query.org_id
        and (query.subject_type is None or key[1] == query.subject_type)
        and (query.subject_id is None or key[2] == query.subject_id)
    ]  # fmt: skip
    wanted.sort(key=lambda r: (r.period_start, r.subject_type, r.subject_id))
    failed = [key for key in failed if _asked(query, key)]
    if failed:
        raise SeriesError.naming(failed, OVERFLOW, wanted)
    return wanted


def _asked(query: SummaryQuery, key: SeriesKey) -> bool:
    """Whether the series ``key`` is one ``query`` asks for."""
    return (
        key[0] == query.metric_key and key[3] == query.org_id
        and (query.subject_type is None or key[1] == query.subject_type)
        and (query.subject_id is None or key[2] == query.subject_id)
    )  # fmt: skip
