"""The roll-up :class:`~tsmeter.adapters.influxdb.rollup.Source` of the InfluxDB 2.x store.

The control flow (watermarks, the change log, which periods to recompute) is the v1
store's; only the reads differ. Components are computed here in Python from raw points
fetched with Flux (``quantity``, ``rid`` and ``tsn`` of each point), streamed one slice of
at most a week at a time: count, sum, min and max as the records give them, and ``last``
settled by (timestamp, id) exactly, collisions or not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from tsmeter.adapters.influxdb import flux
from tsmeter.adapters.influxdb.changelog import Entry, Scope, Series
from tsmeter.adapters.influxdb.rollup import OVERFLOW, Components
from tsmeter.adapters.influxdb.schema import RAW, SeriesKey, series_of
from tsmeter.adapters.influxdb.v2client import InfluxV2Client
from tsmeter.domain.periods import Run
from tsmeter.errors import SeriesError
from tsmeter.ports import SummaryQuery, SummaryRow

__all__ = ["FluxSource", "summary_row"]

_SLICE = 7 * 24 * 3_600_000_000_000
_SCOPES_PER_QUERY = 100


def summary_row(values: dict[str, Any]) -> SummaryRow:
    """A stored summary from a pivoted summary point (``period_end`` left 0)."""
    key = series_of(values)
    return SummaryRow(
        key[0], key[1], key[2], key[3], int(values["t"]), 0, int(values["count"]),
        float(values["sum"]), float(values["min"]), float(values["max"]),
        int(values["last_ts"]), float(values["last"]),
    )  # fmt: skip


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
        rows = self.client.rows(flux.edges(self.bucket, RAW, "quantity", "true", flux.Flux()))
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
            if not math.isfinite(total):  # a sum that overflowed fails its series alone
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
        return [summary_row(values) for values in self.client.stream(found)]

    def write(self, body: bytes) -> None:
        """See :class:`~tsmeter.adapters.influxdb.rollup.Source`."""
        self.client.write(body)


def _add(acc: dict[tuple[SeriesKey, int], list[Any]], run: Run, row: dict[str, Any]) -> None:
    """Fold one raw point into the components of its series and period."""
    tsn = int(row["tsn"])
    start = run.base + (tsn - run.base) // run.step * run.step
    key = series_of(row)
    quantity = float(row["quantity"])
    rid = str(row["rid"])
    found = acc.get((key, start))
    if found is None:
        acc[(key, start)] = [1, quantity, quantity, quantity, tsn, rid, quantity]
        return
    found[0] += 1
    found[1] += quantity
    if quantity < found[2]:
        found[2] = quantity
    if quantity > found[3]:
        found[3] = quantity
    if (tsn, rid) > (found[4], found[5]):
        found[4], found[5], found[6] = tsn, rid, quantity
