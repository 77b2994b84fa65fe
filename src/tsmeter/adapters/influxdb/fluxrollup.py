"""The roll-up :class:`~tsmeter.adapters.influxdb.rollup.Source` of the InfluxDB 2.x store.

The control flow (watermarks, the change log, which periods to recompute) is the v1
store's; only the reads differ. Components are computed here in Python from raw points
fetched with Flux (the integer ``units``, ``rid`` and ``tsn`` of each point), streamed one
slice of at most a week at a time: count, sum, min and max as the records give them, and
``last`` settled by (timestamp, id) exactly, collisions or not. Sums are Python integers,
so they are exact; a period's total beyond the 64-bit range of a stored field fails its
series (:class:`~tsmeter.errors.SeriesError`), it is never written wrapped around.

Summaries the Flux tasks wrote (:mod:`~tsmeter.adapters.influxdb.tasks`) were summed by
Flux, whose ``int`` additions wrap around silently. A stored summary is trusted only when
``count × max(|units_min|, |units_max|) ≤ 2**63-1``
(:func:`~tsmeter.adapters.influxdb.cq.summed_exactly`); any other is recomputed here from
its raw points, exactly, and fails its series if the exact total is out of range.

Points written before quantities were units (a float ``quantity``, no ``units``) and
summaries with only the old float fields make a read fail with an error naming
``tsmeter influx convert``, never a sum that leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tsmeter.adapters.influxdb import flux
from tsmeter.adapters.influxdb.changelog import Entry, Scope, Series
from tsmeter.adapters.influxdb.cq import summed_exactly
from tsmeter.adapters.influxdb.rollup import OVERFLOW, Components
from tsmeter.adapters.influxdb.schema import RAW, SeriesKey, series_of, summary_measurement
from tsmeter.adapters.influxdb.v2client import InfluxV2Client
from tsmeter.domain import PeriodType
from tsmeter.domain.periods import Calendar, Run
from tsmeter.domain.quantities import MAX_UNITS
from tsmeter.errors import SeriesError, StorageUnavailableError
from tsmeter.ports import SummaryQuery, SummaryRow

__all__ = ["LEGACY", "WRAPPED", "FluxSource", "summary_row"]

_SLICE = 7 * 24 * 3_600_000_000_000
_SCOPES_PER_QUERY = 100


#: what the error says of data written before quantities were units (float ``quantity``)
LEGACY = (
    "holds usage written before quantities were stored as integer units (a float"
    " `quantity` field); run `tsmeter influx convert` to convert it and recompute the"
    " summaries"
)
#: what SeriesError says of a stored summary whose Flux sum may have wrapped around
WRAPPED = (
    "has a stored summary whose sum may have wrapped around in 64-bit arithmetic"
    " (count × largest magnitude beyond 2**63-1)"
)
_SUMMARY_FIELDS = ("count", "units_sum", "units_min", "units_max", "units_last", "last_ts")


def summary_row(values: dict[str, Any]) -> SummaryRow:
    """A stored summary from a pivoted summary point (``period_end`` left 0).

    A summary whose sum may have wrapped around (see :func:`summed_exactly`) is a
    SeriesError naming its series (WRAPPED); one with only the old float fields, or an
    incomplete one, a StorageUnavailableError.
    """
    key = series_of(values)
    missing = [name for name in _SUMMARY_FIELDS if values.get(name) is None]
    if missing:
        where = f"the summary of {key[0]} for {key[1]} {key[2]!r} at {values.get('t')}"
        if values.get("units_sum") is None and values.get("sum") is not None:
            raise StorageUnavailableError(f"the bucket {LEGACY} ({where})")
        raise StorageUnavailableError(
            f"{where} lacks {', '.join(missing)}: it is being written, try again"
        )
    count, low, high = int(values["count"]), int(values["units_min"]), int(values["units_max"])
    if not summed_exactly(count, low, high):
        raise SeriesError.naming([key], WRAPPED)
    return SummaryRow(
        key[0], key[1], key[2], key[3], int(values["t"]), 0, count, int(values["units_sum"]),
        low, high, int(values["last_ts"]), int(values["units_last"]),
    )  # fmt: skip


def _period_of(measurement: str) -> tuple[PeriodType, Calendar]:
    """The period type and calendar of a summary measurement (``usage_daily.Europe/Paris``)."""
    name, _, zone = measurement.partition(".")
    period = PeriodType(name.removeprefix("usage_").upper())
    zone = zone or "UTC"
    if summary_measurement(period, zone) != measurement:
        raise ValueError(f"not a summary measurement: {measurement!r}")
    return period, Calendar(zone)


class FluxSource:
    """Roll-up reads with Flux, writes through the store's client."""

    def __init__(self, client: InfluxV2Client) -> None:
        self.client = client
        self.bucket = client.config.bucket

    def ledger(self, key: str) -> dict[str, Any] | None:
        """See :class:`~tsmeter.adapters.influxdb.rollup.Source`."""
        rows = self.client.rows(flux.watermark(self.bucket, key))
        newest = max(rows, key=lambda r: int(r["t"]), default=None)
        return None if newest is None else {k: v for k, v in newest.items() if v is not None}

    def entries(
        self, lo: int, hi: int | None, series: Sequence[Series] | None, scope: Scope | None
    ) -> list[Entry]:
        """See :class:`~tsmeter.adapters.influxdb.rollup.Source`."""
        out: list[Entry] = []
        chunks: list[Sequence[Series] | None] = (
            [None] if series is None else
            [series[i : i + _SCOPES_PER_QUERY] for i in range(0, len(series), _SCOPES_PER_QUERY)]
        )  # fmt: skip
        for chunk in chunks:
            for row in self.client.stream(flux.dirty(self.bucket, lo, scope, hi, chunk)):
                key = (str(row.get("metric") or ""), str(row.get("org") or ""),
                       str(row.get("w") or ""))  # fmt: skip
                out.append((key, int(row["t"]), int(row["_value"])))
        return out

    def entry_counts(self, lo: int, hi: int, scope: Scope | None) -> dict[Series, int]:
        """See :class:`~tsmeter.adapters.influxdb.rollup.Source`."""
        return {
            (str(r.get("metric") or ""), str(r.get("org") or ""), str(r.get("w") or "")):
                int(r["_value"])
            for r in self.client.rows(flux.dirty_counts(self.bucket, lo, hi, scope))
        }  # fmt: skip

    def log_end(self) -> int:
        """See :class:`~tsmeter.adapters.influxdb.rollup.Source`."""
        return max((int(r["t"]) for r in self.client.rows(flux.log_end(self.bucket))), default=0)

    def data_range(self) -> tuple[int, int] | None:
        """See :class:`~tsmeter.adapters.influxdb.rollup.Source`."""
        # every point has a rid, converted or not (roll-ups then fail on an unconverted one)
        rows = self.client.rows(flux.edges(self.bucket, RAW, "rid", "true", flux.Flux()))
        first = [int(r["t"]) for r in rows if r["edge"] == "first"]
        last = [int(r["t"]) for r in rows if r["edge"] == "last"]
        if not first or not last:
            return None
        return min(first), max(last) + 1

    def compute(self, run: Run, scopes: Iterable[Scope] | None) -> Components:
        """See :class:`~tsmeter.adapters.influxdb.rollup.Source`."""
        keys = None if scopes is None else sorted(scopes, key=lambda k: (k[0], k[1] or ""))
        chunks: list[list[Scope] | None] = (
            [None] if keys is None else
            [keys[i : i + _SCOPES_PER_QUERY] for i in range(0, len(keys), _SCOPES_PER_QUERY)]
        )  # fmt: skip
        acc: dict[tuple[SeriesKey, int], list[Any]] = {}
        for chunk in chunks:
            for lo in range(run.base, run.end, _SLICE):
                query = flux.raw_components(self.bucket, lo, min(lo + _SLICE, run.end), chunk)
                for row in self.client.stream(query):
                    _add(acc, run, row)
        out: Components = {}
        failed: list[SeriesKey] = []
        for (key, start), (count, total, low, high, last_ts, _, last) in acc.items():
            if not -MAX_UNITS <= total <= MAX_UNITS:  # beyond a stored field: its series fails
                failed += [] if key in failed else [key]
                continue
            out[(key, start)] = SummaryRow(
                key[0], key[1], key[2], key[3], start, start + run.step, count, total, low,
                high, last_ts, last,
            )  # fmt: skip
        if failed:
            out = {k: row for k, row in out.items() if k[0] not in failed}
            raise SeriesError.naming(failed, OVERFLOW, list(out.values()))
        return out

    def stored(self, query: SummaryQuery, measurement: str, lo: int, hi: int) -> list[SummaryRow]:
        """See :class:`~tsmeter.adapters.influxdb.rollup.Source`."""
        q = flux.Flux()
        predicate = flux.metric_predicate(
            q, query.metric_key, query.org_id, query.subject_type, query.subject_id
        )
        found = flux.points(self.bucket, measurement, lo, hi, predicate, q)
        out: list[SummaryRow] = []
        suspect: dict[tuple[Scope, int], set[SeriesKey]] = {}
        for values in self.client.stream(found):
            try:
                out.append(summary_row(values))
            except SeriesError as exc:  # summed by Flux, may have wrapped: recompute exactly
                key = exc.series[0]
                suspect.setdefault(((key[0], key[3]), int(values["t"])), set()).add(key)
        if suspect:
            out += self._recompute(measurement, suspect)
        return [row for row in out if row.record_count]  # 0: emptied by a cancel

    def _recompute(
        self, measurement: str, suspect: dict[tuple[Scope, int], set[SeriesKey]]
    ) -> list[SummaryRow]:
        """The ``suspect`` stored summaries (by scope and period start) computed from their
        raw points (``period_end`` left 0, as stored); SeriesError where the exact total is
        out of range, with the others' rows."""
        period, calendar = _period_of(measurement)
        out: list[SummaryRow] = []
        failed: list[SeriesKey] = []
        for (scope, start), keys in sorted(suspect.items(), key=_by_start):
            run = Run(start, calendar.next_start(period, start) - start, 1)
            try:
                rows = list(self.compute(run, [scope]).values())
            except SeriesError as exc:
                failed += [k for k in exc.series if k in keys and k not in failed]
                rows = exc.rows
            out += [r._replace(period_end=0) for r in rows
                    if (r.metric_key, r.subject_type, r.subject_id, r.org_id) in keys]  # fmt: skip
        if failed:
            raise SeriesError.naming(failed, OVERFLOW, out)
        return out

    def write(self, body: bytes) -> None:
        """See :class:`~tsmeter.adapters.influxdb.rollup.Source`."""
        self.client.write(body)


def _by_start(item: tuple[tuple[Scope, int], Any]) -> tuple[int, str, str]:
    """Order suspect summaries by period start, then metric and org."""
    (metric, org), start = item[0]
    return start, metric, org or ""


def _add(acc: dict[tuple[SeriesKey, int], list[Any]], run: Run, row: dict[str, Any]) -> None:
    """Fold one raw point into the components of its series and period."""
    units, tsn, rid = row.get("units"), row.get("tsn"), row.get("rid")
    if units is None:
        if row.get("quantity") is not None:
            raise StorageUnavailableError(f"the bucket {LEGACY}")
        return  # a point being written (its fields arrive apart): the change log comes back
    if tsn is None or rid is None:
        return
    units, tsn, rid = int(units), int(tsn), str(rid)
    start = run.base + (tsn - run.base) // run.step * run.step
    key = series_of(row)
    found = acc.get((key, start))
    if found is None:
        acc[(key, start)] = [1, units, units, units, tsn, rid, units]
        return
    found[0] += 1
    found[1] += units
    if units < found[2]:
        found[2] = units
    if units > found[3]:
        found[3] = units
    if (tsn, rid) > (found[4], found[5]):
        found[4], found[5], found[6] = tsn, rid, units
