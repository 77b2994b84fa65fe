"""Roll-ups in SQL: raw records into hourly summaries, each period type from the one below.

Period boundaries come from :class:`tsmeter.domain.periods.Calendar`; runs of
equal-length periods are bucketed with integer arithmetic in SQL, so DST days,
+05:45 zones and calendar months are exact without per-row Python work.

A roll-up run rewrites its summaries inside SQLite (``INSERT ... SELECT``): Python sees
the touched hours and periods, never a row per series or per summary, so its cost grows
with the records and summaries it reads and writes, not with subjects times hours. Which
series a span of touched periods is recomputed for comes from the dirty log (or, where
the log does not reach back, from the records) through temporary tables.

Quantities are integer units (see :mod:`tsmeter.domain.quantities`), so every sum is exact.
SQLite's ``sum()`` stops a statement with "integer overflow" when a partial sum leaves the
64-bit range: the statement is then run again with ``tsm_sum()``
(:class:`~tsmeter.adapters.sqlite.schema.ExactSum`), which gives the exact total or NULL where
it does not fit. A NULL total marks a summary whose sum overflowed; the period types rolled up
from it carry the NULL, and reading it is an error naming the series (see :func:`finite`).
Averages are not computed here: the reader divides the sum by the count.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from tsmeter.domain import PeriodType
from tsmeter.domain.periods import ROLLUP_SOURCE, Calendar, Run, runs
from tsmeter.domain.quantities import MAX_UNITS
from tsmeter.ports import RollupStats

_HOUR = 3_600_000_000_000
# (series_id, period_start, period_end, cnt, total, min, max, last_ts, last_value), in units;
# total None: beyond the 64-bit range
Component = tuple[int, int, int, int, int | None, int, int, int, int]

#: how each kind of sum is written in a statement: SQLite's fast sum() first, and the exact
#: tsm_sum() when that overflowed (a NULL total below stays NULL in both)
_FAST = {
    "sum_units": "sum(units)",
    "sum_total": "CASE WHEN count(total) = count(*) THEN sum(total) END",
    "sum_s_total": "CASE WHEN count(s.total) = count(*) THEN sum(s.total) END",
}
_EXACT = {"sum_units": "tsm_sum(units)", "sum_total": "tsm_sum(total)",
          "sum_s_total": "tsm_sum(s.total)"}  # fmt: skip


def _both(template: str) -> tuple[str, str]:
    """The statement of ``template`` with fast sums and with exact ones."""
    return template.format(**_FAST), template.format(**_EXACT)


def _overflow(exc: sqlite3.OperationalError) -> bool:
    return "integer overflow" in str(exc)


def _rows(conn: sqlite3.Connection, sql: tuple[str, str], params: Any) -> list[Any]:
    """Every row of a query of :func:`_both`, summed exactly where sum() overflowed."""
    try:
        return conn.execute(sql[0], params).fetchall()
    except sqlite3.OperationalError as exc:
        if not _overflow(exc):
            raise
    return conn.execute(sql[1], params).fetchall()


def _run(conn: sqlite3.Connection, sql: tuple[str, str], params: Any) -> int:
    """Run a write of :func:`_both` (a failed statement leaves no row behind, the transaction
    goes on); the rows it wrote."""
    try:
        return conn.execute(sql[0], params).rowcount
    except sqlite3.OperationalError as exc:
        if not _overflow(exc):
            raise
    return conn.execute(sql[1], params).rowcount


_RAW = _both("""
SELECT g.series_id, g.k, g.cnt, g.total, g.mn, g.mx, g.lts,
       (SELECT u.units FROM usage_records u
         WHERE u.series_id = g.series_id AND u.ts = g.lts
         ORDER BY u.id DESC LIMIT 1)
FROM (SELECT series_id, (ts - :base) / :step AS k, count(*) AS cnt, {sum_units} AS total,
             min(units) AS mn, max(units) AS mx, max(ts) AS lts
        FROM usage_records
       WHERE series_id IN (SELECT value FROM json_each(:series))
         AND ts >= :base AND ts < :end
       GROUP BY series_id, k) AS g
""")
_FROM_SOURCE = _both("""
SELECT series_id, (period_start - :base) / :step AS k, sum(cnt), {sum_total}, min(min),
       max(max)
  FROM summaries
 WHERE period_type = :source AND tz = :tz
   AND series_id IN (SELECT value FROM json_each(:series))
   AND period_start >= :base AND period_start < :end
 GROUP BY series_id, k
""")
# Only one max() aggregate: SQLite then takes last_value from the row holding it.
# Source periods of one series are disjoint, so last_ts never ties.
_LAST_FROM_SOURCE = """
SELECT series_id, (period_start - :base) / :step AS k, max(last_ts), last_value
  FROM summaries
 WHERE period_type = :source AND tz = :tz
   AND series_id IN (SELECT value FROM json_each(:series))
   AND period_start >= :base AND period_start < :end
 GROUP BY series_id, k
"""


def compute(
    conn: sqlite3.Connection,
    period: PeriodType,
    calendar: Calendar,
    run: Run,
    series: Iterable[int],
    *,
    from_raw: bool,
) -> list[Component]:
    """The components of every period of ``run`` for ``series``, from raw records or from
    the period type below (``from_raw=False``, which must be fresh)."""
    params = {
        "base": run.base,
        "step": run.step,
        "end": run.end,
        "series": json.dumps(sorted(series)),
    }
    out: list[Component] = []
    if from_raw:
        for sid, k, cnt, total, mn, mx, lts, last in _rows(conn, _RAW, params):
            start = run.base + k * run.step
            out.append((sid, start, start + run.step, cnt, total, mn, mx, lts, last))
        return out
    source = ROLLUP_SOURCE[period]
    assert source is not None
    params.update(source=source.value, tz=calendar.timezone)
    lasts = {(sid, k): (lts, last) for sid, k, lts, last in conn.execute(_LAST_FROM_SOURCE, params)}
    for sid, k, cnt, total, mn, mx in _rows(conn, _FROM_SOURCE, params):
        start = run.base + k * run.step
        lts, last = lasts[(sid, k)]
        out.append((sid, start, start + run.step, cnt, total, mn, mx, lts, last))
    return out


def _spans(periods: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge sorted adjacent periods into contiguous spans."""
    spans: list[tuple[int, int]] = []
    for start, end in periods:
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def touched_periods(
    conn: sqlite3.Connection,
    period: PeriodType,
    calendar: Calendar,
    after: int | None,
    upto: int,
    series: Iterable[int] | None = None,
    within: tuple[int, int] | None = None,
) -> dict[tuple[int, int], set[int]]:
    """Periods that received records since dirty-log position ``after`` (``None``: ever, or
    with records in the time range ``within``), each with the series that received them."""
    params: dict[str, object] = {"lo": after, "hi": upto, "hour": _HOUR}
    if after is None:
        sql = "SELECT DISTINCT series_id, ts / :hour FROM usage_records WHERE 1"
        if within is not None:
            sql += " AND ts >= :start AND ts < :end"
            params.update(start=within[0], end=within[1])
    else:
        sql = "SELECT DISTINCT series_id, hour FROM dirty WHERE seq > :lo AND seq <= :hi"
    if series is not None:
        sql += " AND series_id IN (SELECT value FROM json_each(:series))"
        params["series"] = json.dumps(sorted(series))
    by_hour: dict[int, set[int]] = defaultdict(set)
    for sid, hour in conn.execute(sql, params):
        by_hour[hour].add(sid)
    return calendar.periods_of_hours(period, by_hour)


def compute_touched(
    conn: sqlite3.Connection,
    period: PeriodType,
    calendar: Calendar,
    touched: dict[tuple[int, int], set[int]],
    *,
    from_raw: bool,
) -> Iterator[tuple[tuple[int, int], set[int], list[Component]]]:
    """For each contiguous span of ``touched`` periods: the span, its series and the
    components of its periods (a superset of the touched pairs, all equally fresh)."""
    for span in _spans(sorted(touched)):
        series: set[int] = set()
        for bounds, sids in touched.items():
            if span[0] <= bounds[0] < span[1]:
                series |= sids
        rows: list[Component] = []
        for run in runs(calendar.boundaries(period, span[0], span[1])):
            if run.base < span[1]:
                rows += compute(conn, period, calendar, run, series, from_raw=from_raw)
        yield span, series, rows


# the series a span is recomputed for, and where each touched hour's span is (multi-span runs)
_TEMP = (
    "CREATE TEMP TABLE IF NOT EXISTS rollup_series (id INTEGER PRIMARY KEY)",
    "CREATE TEMP TABLE IF NOT EXISTS rollup_span_of_hour (hour INTEGER PRIMARY KEY, span INTEGER)",
    "CREATE TEMP TABLE IF NOT EXISTS rollup_span_series (span INTEGER, id INTEGER,"
    " PRIMARY KEY (span, id)) WITHOUT ROWID",
    "CREATE TEMP TABLE IF NOT EXISTS rollup_periods (start INTEGER PRIMARY KEY, end INTEGER)",
)
#: runs of at most this many periods may be summed from the type below by walking each
#: series' periods in order (a seek per series and period, even an empty one) instead of
#: sorting the source rows; they are where the seeks are fewer than the source rows
JOIN_PERIODS = 64
# Summaries from records, written by SQLite. g.q is the record's own units when the group
# has one record; else the last of the group, found by its time (the id breaks ties), as _RAW
# does.
_WRITE_RAW = _both("""
INSERT INTO summaries (period_type, tz, series_id, period_start, period_end, cnt, total, min,
                       max, last_ts, last_value, computed_at)
SELECT :period, :tz, g.series_id, :base + g.k * :step, :base + (g.k + 1) * :step, g.cnt,
       g.total, g.mn, g.mx, g.lts,
       CASE WHEN g.cnt = 1 THEN g.q ELSE
         (SELECT u.units FROM usage_records u
           WHERE u.series_id = g.series_id AND u.ts = g.lts ORDER BY u.id DESC LIMIT 1) END,
       :now
FROM (SELECT series_id, (ts - :base) / :step AS k, count(*) AS cnt, {sum_units} AS total,
             min(units) AS mn, max(units) AS mx, max(ts) AS lts, units AS q
        FROM usage_records
       WHERE series_id IN (SELECT id FROM temp.rollup_series)
         AND ts >= :base AND ts < :end
       GROUP BY series_id, k) AS g
""")
# Summaries from the type below. g.q is the source summary's own last value when the group
# has one; else the last value of the source period holding the group's last time (source
# periods of a series are disjoint: it is the one starting last at or before that time), the
# row _LAST_FROM_SOURCE takes it from.
_WRITE_FROM_SOURCE = _both("""
INSERT INTO summaries (period_type, tz, series_id, period_start, period_end, cnt, total, min,
                       max, last_ts, last_value, computed_at)
SELECT :period, :tz, g.series_id, :base + g.k * :step, :base + (g.k + 1) * :step, g.cnt,
       g.total, g.mn, g.mx, g.lts,
       CASE WHEN g.n = 1 THEN g.q ELSE
         (SELECT s.last_value FROM summaries s
           WHERE s.period_type = :source AND s.tz = :tz AND s.series_id = g.series_id
             AND s.period_start <= g.lts ORDER BY s.period_start DESC LIMIT 1) END,
       :now
FROM (SELECT series_id, (period_start - :base) / :step AS k, count(*) AS n, sum(cnt) AS cnt,
             {sum_total} AS total, min(min) AS mn, max(max) AS mx, max(last_ts) AS lts,
             last_value AS q
        FROM summaries
       WHERE period_type = :source AND tz = :tz
         AND series_id IN (SELECT id FROM temp.rollup_series)
         AND period_start >= :base AND period_start < :end
       GROUP BY series_id, k) AS g
""")
# The same, driven by series and periods (in temp.rollup_periods): the source rows come in
# group order, so SQLite sorts nothing.
_WRITE_FROM_SOURCE_BY_PERIOD = _both("""
INSERT INTO summaries (period_type, tz, series_id, period_start, period_end, cnt, total, min,
                       max, last_ts, last_value, computed_at)
SELECT :period, :tz, g.series_id, g.period_start, g.period_end, g.cnt, g.total, g.mn, g.mx,
       g.lts,
       CASE WHEN g.n = 1 THEN g.q ELSE
         (SELECT s.last_value FROM summaries s
           WHERE s.period_type = :source AND s.tz = :tz AND s.series_id = g.series_id
             AND s.period_start <= g.lts ORDER BY s.period_start DESC LIMIT 1) END,
       :now
FROM (SELECT r.id AS series_id, p.start AS period_start, p.end AS period_end, count(*) AS n,
             sum(s.cnt) AS cnt, {sum_s_total} AS total, min(s.min) AS mn, max(s.max) AS mx,
             max(s.last_ts) AS lts, s.last_value AS q
        FROM temp.rollup_series AS r CROSS JOIN temp.rollup_periods AS p
             CROSS JOIN summaries AS s
       WHERE s.period_type = :source AND s.tz = :tz AND s.series_id = r.id
         AND s.period_start >= p.start AND s.period_start < p.end
       GROUP BY r.id, p.start) AS g
""")
#: a summary whose total is within ±MAX_UNITS (see ``finite``)
_FINITE = "(total IS NOT NULL AND total >= :lowest)"
_SPAN_WHERE = (
    "period_type = :period AND tz = :tz AND period_start >= :lo AND period_start < :hi"
    " AND series_id IN (SELECT id FROM temp.rollup_series)"
)


class Changes:
    """What a roll-up run recomputes: the records stored since dirty-log position ``after``
    (exclusive) up to ``upto``, or, with ``after`` None, every record (in the time range
    ``within``, if given), read from the records themselves.

    The period types of one run usually share their changes (their watermarks move
    together): :meth:`shared` hands them one object, which reads the changed hours once and
    leaves the changed series in ``temp.rollup_series`` for the next type.
    """

    def __init__(self, after: int | None, upto: int, within: tuple[int, int] | None = None) -> None:
        self.after = after
        self.upto = upto
        self.within = within
        self._hours: list[int] | None = None
        self._filled = False  # temp.rollup_series holds every series of these changes

    @classmethod
    def shared(
        cls,
        memo: dict[tuple[int | None, int, tuple[int, int] | None], Changes],
        after: int | None,
        upto: int,
        within: tuple[int, int] | None = None,
    ) -> Changes:
        """The changes of ``memo`` with these bounds, made if missing; any other one in
        ``memo`` no longer owns ``temp.rollup_series``."""
        found = memo.setdefault((after, upto, within), cls(after, upto, within))
        for other in memo.values():
            other._filled = other._filled and other is found
        return found

    def _pairs(self) -> tuple[str, dict[str, object]]:
        """SQL of the (hour, series_id) rows of the changes (not distinct), and its
        parameters."""
        if self.after is not None:
            return (
                "SELECT hour, series_id FROM dirty WHERE seq > :after AND seq <= :upto",
                {"after": self.after, "upto": self.upto},
            )
        sql = "SELECT ts / :hour AS hour, series_id FROM usage_records"
        params: dict[str, object] = {"hour": _HOUR}
        if self.within is not None:
            sql += " WHERE ts >= :start AND ts < :end"
            params.update(start=self.within[0], end=self.within[1])
        return sql, params

    def hours(self, conn: sqlite3.Connection) -> list[int]:
        """The UTC hours (numbered from the epoch) that received changes."""
        if self._hours is None:
            sql, params = self._pairs()
            self._hours = [h for (h,) in conn.execute(f"SELECT DISTINCT hour FROM ({sql})", params)]
        return self._hours

    def fill_series(self, conn: sqlite3.Connection, spans: list[tuple[int, int]]) -> None:
        """Fill ``temp.rollup_span_series`` with the series changed in each span (numbered
        in order); with one span, ``temp.rollup_series`` directly."""
        if len(spans) == 1 and self._filled:
            return
        for ddl in _TEMP:
            conn.execute(ddl)
        conn.execute("DELETE FROM temp.rollup_series")
        self._filled = len(spans) == 1
        sql, params = self._pairs()
        if len(spans) == 1:
            if self.after is None:  # every record: every series (those without any are cheap)
                conn.execute("INSERT INTO temp.rollup_series SELECT id FROM series")
            else:
                conn.execute(
                    f"INSERT OR IGNORE INTO temp.rollup_series SELECT series_id FROM ({sql})",
                    params,
                )
            return
        conn.execute("DELETE FROM temp.rollup_span_of_hour")
        conn.execute("DELETE FROM temp.rollup_span_series")
        where = [(hour, n) for hour, n in _hour_spans(spans, self.hours(conn))]
        conn.executemany("INSERT OR IGNORE INTO temp.rollup_span_of_hour VALUES (?, ?)", where)
        conn.execute(
            "INSERT OR IGNORE INTO temp.rollup_span_series SELECT m.span, c.series_id"
            f" FROM ({sql}) AS c JOIN temp.rollup_span_of_hour AS m ON m.hour = c.hour",
            params,
        )

    @staticmethod
    def use_span(conn: sqlite3.Connection, number: int, spans: int) -> None:
        """Make ``temp.rollup_series`` hold the series of span ``number`` (of ``spans``)."""
        if spans == 1:
            return
        conn.execute("DELETE FROM temp.rollup_series")
        conn.execute(
            "INSERT INTO temp.rollup_series SELECT id FROM temp.rollup_span_series WHERE span = ?",
            (number,),
        )


def _hour_spans(spans: list[tuple[int, int]], hours: list[int]) -> Iterator[tuple[int, int]]:
    """Each hour with the number of the span it overlaps (spans are sorted and disjoint, and
    touched periods are whole spans, so an hour overlaps at most one)."""
    starts = [a for a, _ in spans]
    for hour in hours:
        lo, hi = hour * _HOUR, (hour + 1) * _HOUR
        i = max(0, bisect.bisect_right(starts, lo) - 1)
        while i < len(spans) and spans[i][0] < hi:
            if spans[i][1] > lo:
                yield hour, i
            i += 1


def recompute(
    conn: sqlite3.Connection,
    period: PeriodType,
    calendar: Calendar,
    periods: Iterable[tuple[int, int]],
    changes: Changes,
    overflowed: set[int] | None = None,
    *,
    tally: bool = True,
    source: PeriodType | None = None,
) -> tuple[int, int]:
    """Recompute and replace the summaries of the touched ``periods`` for the series that
    ``changes`` touched in each contiguous span of them, inside SQLite, from the ``source``
    summaries (up to date) or, where None, from the records; return the summaries
    written and the records they cover (0 unless ``tally``). With ``tally``, series with a
    total beyond the 64-bit range (a sum of stored units that overflowed) are added to
    ``overflowed``; a type rolled up from this one carries the overflow up, so a run checks
    only the type it was asked for."""
    spans = _spans(sorted(periods))
    if not spans:
        return 0, 0
    changes.fill_series(conn, spans)
    sql = _WRITE_RAW if source is None else _WRITE_FROM_SOURCE
    params: dict[str, object] = {"period": period.value, "tz": calendar.timezone,
                                 "now": time.time_ns(), "lowest": -MAX_UNITS}  # fmt: skip
    if source is not None:
        params["source"] = source.value
    written = seen = 0
    for number, (lo, hi) in enumerate(spans):
        changes.use_span(conn, number, len(spans))
        params.update(lo=lo, hi=hi)
        conn.execute(f"DELETE FROM summaries WHERE {_SPAN_WHERE}", params)
        for run in runs(calendar.boundaries(period, lo, hi)):
            if run.base >= hi:
                continue
            params.update(base=run.base, step=run.step, end=run.end)
            if source is not None and _walk(conn, params, run.count):
                conn.execute("DELETE FROM temp.rollup_periods")
                conn.executemany(
                    "INSERT INTO temp.rollup_periods VALUES (?, ?)",
                    [(run.base + i * run.step, run.base + (i + 1) * run.step)
                     for i in range(run.count)],
                )  # fmt: skip
                written += _run(conn, _WRITE_FROM_SOURCE_BY_PERIOD, params)
            else:
                written += _run(conn, sql, params)
        if not tally:
            continue
        count, bad = conn.execute(
            f"SELECT coalesce(sum(cnt), 0), coalesce(sum(NOT {_FINITE}), 0) FROM summaries"
            f" WHERE {_SPAN_WHERE}",
            params,
        ).fetchone()
        seen += int(count)
        if bad and overflowed is not None:
            overflowed.update(
                sid for (sid,) in conn.execute(
                    f"SELECT DISTINCT series_id FROM summaries WHERE {_SPAN_WHERE}"
                    f" AND NOT {_FINITE}",
                    params,
                )
            )  # fmt: skip
    return written, seen


def _walk(conn: sqlite3.Connection, params: dict[str, object], periods: int) -> bool:
    """Whether to sum a run of ``periods`` periods by walking each series' periods: when
    there are few periods and the seeks that takes are fewer than the rows to read."""
    if periods > JOIN_PERIODS:
        return False
    (series,) = conn.execute("SELECT count(*) FROM temp.rollup_series").fetchone()
    (rows,) = conn.execute(
        "SELECT count(*) FROM summaries WHERE period_type = :source AND tz = :tz"
        " AND series_id IN (SELECT id FROM temp.rollup_series)"
        " AND period_start >= :base AND period_start < :end",
        params,
    ).fetchone()
    return int(series) * periods <= int(rows)


def finite(row: Component) -> bool:
    """Whether a summary's total is a sum within ±MAX_UNITS (its min, max and last value are
    stored values, always within)."""
    total = row[4]
    return total is not None and -MAX_UNITS <= total <= MAX_UNITS


def watermark(conn: sqlite3.Connection, period: PeriodType, calendar: Calendar) -> int | None:
    """The dirty-log position up to which ``period`` summaries are complete (None: never run)."""
    row = conn.execute(
        "SELECT watermark FROM rollup_state WHERE period_type = ? AND tz = ?",
        (period.value, calendar.timezone),
    ).fetchone()
    return None if row is None else int(row[0])


def log_position(conn: sqlite3.Connection) -> int:
    """The newest dirty-log position."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'dirty'").fetchone()
    return 0 if row is None else int(row[0])


def rollup(
    conn: sqlite3.Connection,
    period: PeriodType,
    calendar: Calendar,
    start: int | None,
    end: int | None,
    overflowed: set[int] | None = None,
) -> RollupStats:
    """Bring ``period`` summaries up to date (see ``UsageStore.rollup``); the caller holds a
    write transaction. Series whose summaries are not finite are added to ``overflowed``."""
    stats = _rollup(conn, period, calendar, start, end, overflowed, {}, tally=True)
    if start is None and end is None:
        # the log is only needed past the oldest watermark of any roll-up (trimmed once every
        # level below has read it: a level run for the first time may read it from the start)
        conn.execute("DELETE FROM dirty WHERE seq <= (SELECT min(watermark) FROM rollup_state)")
    return stats


def _rollup(
    conn: sqlite3.Connection,
    period: PeriodType,
    calendar: Calendar,
    start: int | None,
    end: int | None,
    overflowed: set[int] | None,
    memo: dict[tuple[int | None, int, tuple[int, int] | None], Changes],
    *,
    tally: bool,
) -> RollupStats:
    """:func:`rollup` without trimming the dirty log; ``memo`` holds the changes read by the
    period types below; ``tally``: count the records seen and check for overflow (see
    :func:`recompute`).

    A period type is rolled up from the one below (:data:`ROLLUP_SOURCE`), brought up to date
    first, only where that one is kept: its roll-up has run in this zone. Otherwise it is
    computed from the records, and the type below is not written: a store aggregated only
    MONTHLY keeps no hourly summaries (for 10,000 subjects, as many rows as records)."""
    source = ROLLUP_SOURCE[period]
    if source is not None and watermark(conn, source, calendar) is None:
        source = None
    high = log_position(conn)
    if start is None and end is None:
        if source is not None:
            _rollup(conn, source, calendar, None, None, overflowed, memo, tally=False)
        mark = watermark(conn, period, calendar)
        if mark is None and _log_complete(conn, high):
            mark = 0  # never run, but the log still holds every record ever stored
        changes = Changes.shared(memo, mark, high)
        periods = set(_periods(calendar, period, changes.hours(conn)))
        conn.execute(
            "INSERT INTO rollup_state (period_type, tz, watermark) VALUES (?, ?, ?)"
            " ON CONFLICT (period_type, tz) DO UPDATE SET watermark = excluded.watermark",
            (period.value, calendar.timezone, high),
        )
    else:
        lo = calendar.start_of(period, start) if start is not None else -(1 << 63)
        hi = calendar.bounds(period, end - 1)[1] if end is not None else (1 << 63) - 1
        changes = Changes.shared(memo, None, high, (lo, hi))
        found = _periods(calendar, period, changes.hours(conn))
        periods = {(a, b) for a, b in found if a < hi and b > lo}
        if source is not None and periods:
            first, last = min(periods)[0], max(periods)[1]
            _rollup(conn, source, calendar, first, last, overflowed, memo, tally=False)
    written, seen = recompute(conn, period, calendar, periods, changes, overflowed, tally=tally,
                              source=source)  # fmt: skip
    ordered = sorted(periods)
    return RollupStats(
        summaries_written=written,
        periods_recomputed=len(ordered),
        records_seen=seen,
        range_start=ordered[0][0] if ordered else None,
        range_end=ordered[-1][1] if ordered else None,
    )


def _periods(calendar: Calendar, period: PeriodType, hours: list[int]) -> list[tuple[int, int]]:
    """The periods that overlap any of the UTC ``hours``."""
    none: set[int] = set()
    return list(calendar.periods_of_hours(period, dict.fromkeys(hours, none)))


def _log_complete(conn: sqlite3.Connection, high: int) -> bool:
    """Whether the dirty log still holds an entry for every record stored (nothing was ever
    trimmed from its start): then a first roll-up can read it instead of every record."""
    if high == 0:
        return True
    row = conn.execute("SELECT min(seq) FROM dirty").fetchone()
    return row is not None and row[0] == 1
