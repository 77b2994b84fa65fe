"""Roll-ups in SQL: raw records into hourly summaries, each period type from the one below.

Period boundaries come from :class:`tsmeter.domain.periods.Calendar`; runs of
equal-length periods are bucketed with integer arithmetic in SQL, so DST days,
+05:45 zones and calendar months are exact without per-row Python work.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

from tsmeter.domain import PeriodType
from tsmeter.domain.periods import ROLLUP_SOURCE, Calendar, Run, runs
from tsmeter.ports import RollupStats

_HOUR = 3_600_000_000_000
# (series_id, period_start, period_end, cnt, total, min, max, last_ts, last_value)
Component = tuple[int, int, int, int, float, float, float, int, float]

_RAW = """
SELECT g.series_id, g.k, g.cnt, g.total, g.mn, g.mx, g.lts,
       (SELECT u.quantity FROM usage_records u
         WHERE u.series_id = g.series_id AND u.ts = g.lts
         ORDER BY u.id DESC LIMIT 1)
FROM (SELECT series_id, (ts - :base) / :step AS k, count(*) AS cnt, sum(quantity) AS total,
             min(quantity) AS mn, max(quantity) AS mx, max(ts) AS lts
        FROM usage_records
       WHERE series_id IN (SELECT value FROM json_each(:series))
         AND ts >= :base AND ts < :end
       GROUP BY series_id, k) AS g
"""
_FROM_SOURCE = """
SELECT series_id, (period_start - :base) / :step AS k, sum(cnt), sum(total), min(min), max(max)
  FROM summaries
 WHERE period_type = :source AND tz = :tz
   AND series_id IN (SELECT value FROM json_each(:series))
   AND period_start >= :base AND period_start < :end
 GROUP BY series_id, k
"""
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
        for sid, k, cnt, total, mn, mx, lts, last in conn.execute(_RAW, params):
            start = run.base + k * run.step
            out.append((sid, start, start + run.step, cnt, total, mn, mx, lts, last))
        return out
    source = ROLLUP_SOURCE[period]
    assert source is not None
    params.update(source=source.value, tz=calendar.timezone)
    lasts = {(sid, k): (lts, last) for sid, k, lts, last in conn.execute(_LAST_FROM_SOURCE, params)}
    for sid, k, cnt, total, mn, mx in conn.execute(_FROM_SOURCE, params):
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


def recompute(
    conn: sqlite3.Connection,
    period: PeriodType,
    calendar: Calendar,
    touched: dict[tuple[int, int], set[int]],
    overflowed: set[int] | None = None,
) -> tuple[int, int]:
    """Recompute and replace the summaries of ``touched`` periods; return the summaries
    written and the records they cover. Series with a component that is not finite (a sum
    of stored quantities that overflowed) are added to ``overflowed``."""
    written = seen = 0
    now = time.time_ns()
    from_raw = ROLLUP_SOURCE[period] is None
    for span, series, rows in compute_touched(conn, period, calendar, touched, from_raw=from_raw):
        conn.execute(
            "DELETE FROM summaries WHERE period_type = ? AND tz = ? AND period_start >= ?"
            " AND period_start < ? AND series_id IN (SELECT value FROM json_each(?))",
            (period.value, calendar.timezone, span[0], span[1], json.dumps(sorted(series))),
        )
        conn.executemany(
            "INSERT INTO summaries (period_type, tz, series_id, period_start, period_end,"
            " cnt, total, min, max, last_ts, last_value, computed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(period.value, calendar.timezone, *row, now) for row in rows],
        )
        written += len(rows)
        seen += sum(row[3] for row in rows)
        if overflowed is not None:
            overflowed.update(row[0] for row in rows if not finite(row))
    return written, seen


def finite(row: Component) -> bool:
    """Whether a summary's sum, min, max and last value are finite numbers."""
    return all(map(math.isfinite, (row[4], row[5], row[6], row[8])))


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
    source = ROLLUP_SOURCE[period]
    high = log_position(conn)
    touched: dict[tuple[int, int], set[int]] = {}
    if start is None and end is None:
        if source is not None:
            rollup(conn, source, calendar, None, None, overflowed)
        touched = touched_periods(conn, period, calendar, watermark(conn, period, calendar), high)
        conn.execute(
            "INSERT INTO rollup_state (period_type, tz, watermark) VALUES (?, ?, ?)"
            " ON CONFLICT (period_type, tz) DO UPDATE SET watermark = excluded.watermark",
            (period.value, calendar.timezone, high),
        )
        # the log is only needed past the oldest watermark of any roll-up
        conn.execute("DELETE FROM dirty WHERE seq <= (SELECT min(watermark) FROM rollup_state)")
    else:
        lo = calendar.start_of(period, start) if start is not None else -(1 << 63)
        hi = calendar.bounds(period, end - 1)[1] if end is not None else (1 << 63) - 1
        span = touched_periods(conn, period, calendar, None, high, within=(lo, hi))
        for (a, b), sids in span.items():
            if a < hi and b > lo:
                touched.setdefault((a, b), set()).update(sids)
        if source is not None and touched:
            first, last = min(touched)[0], max(touched)[1]
            rollup(conn, source, calendar, first, last, overflowed)
    written, seen = recompute(conn, period, calendar, touched, overflowed)
    periods = sorted(touched)
    return RollupStats(
        summaries_written=written,
        periods_recomputed=len(periods),
        records_seen=seen,
        range_start=periods[0][0] if periods else None,
        range_end=periods[-1][1] if periods else None,
    )
