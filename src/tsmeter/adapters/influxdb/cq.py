"""Server-side roll-ups on InfluxDB 1.x: continuous queries that write tsmeter's summaries.

One continuous query per period type that InfluxQL can bucket exactly —
HOURLY, DAILY and WEEKLY (ISO weeks: InfluxQL weeks start on Thursday, the
epoch's weekday, so they are offset by four days) in the meter's time zone —
writing the same measurements and fields as tsmeter's own aggregator
(``usage_hourly`` …, see :mod:`~tsmeter.adapters.influxdb.schema`). ``RESAMPLE
FOR`` re-covers a lateness window, so records arriving that late are folded in.
Months and years have no fixed length in InfluxQL: they stay with ``tsmeter
aggregate``. Where points had to move (``usage_collisions``) a continuous query
takes the last point by time, not by (time, id); the aggregator settles those.

Quantities are integer units (the raw field ``units``, see
:mod:`~tsmeter.domain.quantities`), so ``units_sum``, ``units_min``, ``units_max`` and
``units_last`` are integer fields and the sums are exact — up to 64 bits: InfluxQL adds
integers with Go's ``int64`` and wraps around on overflow without an error, and a
continuous query cannot raise. Whoever reads a stored summary therefore checks it with
:func:`summed_exactly` (``count × max(|units_min|, |units_max|) ≤ 2**63-1``: then no partial
sum can wrap, in any order) and, where that fails, computes the sum another way or raises;
never a wrapped number. Raw points written before quantities were units (a float
``quantity``, no ``units``) are not read here: ``tsmeter influx convert`` gives them units.
After upgrading from float quantities, run ``tsmeter influx install-rollups`` again: it
replaces the queries of the same names, which read ``quantity``.
"""

from __future__ import annotations

import re

from tsmeter.adapters.influxdb.client import InfluxV1Client, quote_ident
from tsmeter.adapters.influxdb.schema import RAW, summary_measurement
from tsmeter.domain import PeriodType
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import MAX_UNITS
from tsmeter.errors import ValidationError

__all__ = ["PREFIX", "continuous_queries", "install", "summed_exactly"]

PREFIX = "tsmeter_"
_DURATION = re.compile(r"[1-9][0-9]*(ns|u|ms|s|m|h|d|w)")
_BUCKETS = {
    PeriodType.HOURLY: "1h",
    PeriodType.DAILY: "1d",
    PeriodType.WEEKLY: "1w, 4d",
}


def continuous_queries(
    database: str, timezone: str, *, every: str = "1m", lateness: dict[PeriodType, str]
) -> dict[str, str]:
    """``name -> CREATE CONTINUOUS QUERY statement`` for each period type InfluxQL can bucket.

    >>> qs = continuous_queries("db", "UTC", lateness={PeriodType.HOURLY: "2h"})
    >>> sorted(qs)
    ['tsmeter_hourly_utc']
    """
    Calendar(timezone)  # an unknown zone is a ValidationError here, not a broken query
    for field, value in [
        ("every", every),
        *((f"lateness.{p.value}", v) for p, v in lateness.items()),
    ]:
        if not _DURATION.fullmatch(value):
            raise ValidationError(field, f"not an InfluxQL duration like 90s, 2h or 7d: {value!r}")
    zone = timezone.replace("'", "")
    out = {}
    for period, bucket in _BUCKETS.items():
        if period not in lateness:
            continue
        slug = zone.lower().replace("/", "_").replace("-", "_").replace("+", "p")
        name = f"{PREFIX}{period.value.lower()}_{slug}"
        into = f"{quote_ident(database)}..{quote_ident(summary_measurement(period, timezone))}"
        tz = "" if timezone == "UTC" else f" tz('{zone}')"
        out[name] = (
            f"CREATE CONTINUOUS QUERY {quote_ident(name)} ON {quote_ident(database)}"
            f" RESAMPLE EVERY {every} FOR {lateness[period]} BEGIN"
            ' SELECT count("units") AS "count", sum("units") AS "units_sum",'
            ' min("units") AS "units_min", max("units") AS "units_max", max("tsn") AS "last_ts",'
            f' last("units") AS "units_last" INTO {into} FROM {quote_ident(RAW)}'
            f' GROUP BY time({bucket}), "metric", "subject_type", "subject_id", "org"{tz}'
            " END"
        )
    return out


def summed_exactly(count: int, low: int, high: int) -> bool:
    """Whether a sum of ``count`` integers between ``low`` and ``high`` computed in 64-bit
    arithmetic (InfluxQL's ``sum()``, Flux's ``+``) is exact: every partial sum is then at
    most ``count × max(|low|, |high|)`` in magnitude, within ±(2**63-1). False means it may
    have wrapped around (or may not: compute it exactly another way, or raise).

    >>> summed_exactly(2, -(2**62 - 1), 2**62 - 1), summed_exactly(2, 0, 2**62)
    (True, False)
    """
    return count * max(abs(low), abs(high)) <= MAX_UNITS


def install(
    client: InfluxV1Client,
    timezone: str,
    *,
    every: str = "1m",
    lateness: dict[PeriodType, str] | None = None,
) -> list[str]:
    """Create (or replace) tsmeter's continuous queries for ``timezone``; return their names."""
    lateness = lateness or {PeriodType.HOURLY: "3h", PeriodType.DAILY: "2d",
                            PeriodType.WEEKLY: "8d"}  # fmt: skip
    database = client.config.database
    wanted = continuous_queries(database, timezone, every=every, lateness=lateness)
    (shown,) = client.query("SHOW CONTINUOUS QUERIES", database=False)
    for series in shown.get("series", []):  # one per database; "values" only if it has any
        if series.get("name") != database:
            continue
        position = series["columns"].index("name")
        for values in series.get("values", []):
            if values[position] in wanted:
                client.query(
                    f"DROP CONTINUOUS QUERY {quote_ident(values[position])}"
                    f" ON {quote_ident(database)}",
                    database=False,
                )
    for statement in wanted.values():
        client.query(statement, database=False)
    return sorted(wanted)
