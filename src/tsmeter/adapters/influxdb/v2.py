"""The v2 transport: InfluxDB 2.x through influxdb-client and Flux.

Under :class:`~tsmeter.adapters.influxdb.store.InfluxStore` it gives the same point schema
and the same exactly-once write path as the v1 transport, with writes sent by
:class:`~tsmeter.adapters.influxdb.v2client.InfluxV2Client` (``write_api(SYNCHRONOUS)``, the
encoder's bytes). Every read is Flux with the user's values bound as parameters; roll-ups
share the v1 control flow (:mod:`~tsmeter.adapters.influxdb.fluxrollup`); purging uses the
delete API.

InfluxDB 2.x's delete predicate cannot say "tag ``org`` is absent", so purging a global
metric whose key an organisation also uses reads that organisation's points of the key,
deletes every point of the key, and writes those points back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from tsmeter.adapters.influxdb import flux
from tsmeter.adapters.influxdb import rollup as rollups
from tsmeter.adapters.influxdb.corrections import Backend, FluxCorrections
from tsmeter.adapters.influxdb.fluxrollup import FluxSource
from tsmeter.adapters.influxdb.lineprotocol import decode_tag, encode_point, tag_value
from tsmeter.adapters.influxdb.schema import (
    RAW,
    SeriesKey,
    complete,
    event_matches,
    row_of,
    series_of,
    summary_measurement,
)
from tsmeter.adapters.influxdb.transport import Conversion, Points
from tsmeter.adapters.influxdb.v2client import InfluxV2Client, InfluxV2Config
from tsmeter.domain import MetricDefinition, PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.domain.properties import stored_values
from tsmeter.errors import StorageUnavailableError
from tsmeter.ports import EventRow, RecordQuery, RollupStats, SummaryQuery, SummaryRow

__all__ = ["V2Transport"]

_US = 1_000
_HOUR = 3_600_000_000_000
_DAY = 24 * _HOUR
_SERIES_PER_QUERY = 100
_NOT_TAGS = frozenset({"_start", "_stop", "_measurement", "_field", "_value", "_time"})


def _key(row: RecordRow) -> SeriesKey:
    return (row.metric_key, row.subject_type, row.subject_id, row.org_id)


def latest_readings(
    rows: Iterable[RecordRow], at: int, dimensions: Sequence[str]
) -> list[RecordRow]:
    """Of ``rows``, the latest before ``at`` of each series and combination of the values of
    ``dimensions`` in their metadata (greatest id on ties), ordered by (time, id).

    >>> rows = [RecordRow(f"r{i}", "m", "org", "o1", None, i, i % 3, None, None) for i in range(5)]
    >>> [r.id for r in latest_readings(rows, 2, ())]
    ['r4']
    """
    latest: dict[tuple[Any, ...], RecordRow] = {}
    for row in rows:
        if row.ts >= at:
            continue
        key = (*_key(row), *stored_values(dimensions, row.metadata))
        held = latest.get(key)
        if held is None or (row.ts, row.id) > (held.ts, held.id):
            latest[key] = row
    return sorted(latest.values(), key=lambda r: (r.ts, r.id))


def _point(values: dict[str, Any]) -> dict[str, Any]:
    """A pivoted raw point in the shape the v1 code reads (``time`` = the point time)."""
    return {**values, "time": int(values["t"])}


class V2Transport:
    """One InfluxDB 2.x bucket through influxdb-client (see the module docstring).

    Example: ``InfluxStore(V2Transport.from_url("influxdb2://127.0.0.1:8086/b?org=o"), dedupe)``.
    """

    #: influxdb-client's ping is not asked: the outbox treats the store as not known to answer
    can_ping = False
    reads_pairs = False  # up to 100 series, only the rows' series

    def __init__(self, config: InfluxV2Config) -> None:
        self.settings = config
        self.api = InfluxV2Client(config)
        self.source = FluxSource(self.api)
        self.bucket = config.bucket
        self.target = f"{config.base_url}/{config.org}/{config.bucket}"
        self.lock_name = f"{config.base_url}/{config.bucket}"
        self.writer = config.writer
        self.precisions: dict[tuple[str, str | None], int] = {}
        self.corrections: Backend = FluxCorrections(self.api, self.bucket)

    @classmethod
    def from_url(cls, url: str) -> V2Transport:
        """A transport for an ``influxdb2://host:port/BUCKET?org=ORG&token=...`` URL (see
        InfluxV2Config)."""
        return cls(InfluxV2Config.from_url(url))

    def write(self, body: bytes) -> None:
        """Send line protocol through the synchronous write API."""
        self.api.write(body)

    def ping(self, timeout: float) -> bool:
        """Not asked (``can_ping`` is False): always False."""
        return False

    def close(self) -> None:
        """Close influxdb-client."""
        self.api.close()

    # -- administration ---------------------------------------------------------------
    def init(self) -> str:
        """Create the bucket if it is missing."""
        self.api.ensure_bucket()
        return f"Bucket {self.bucket!r}"

    def install_rollups(
        self,
        timezone: str,
        metrics: Sequence[MetricDefinition],
        *,
        every: str,
        lateness: str,
        offset: str,
    ) -> list[str]:
        """One Flux task per period type (hourly, daily, and each period a metric resets on),
        created or updated by name."""
        from tsmeter.adapters.influxdb.tasks import install, periods_for

        names = install(self.api, timezone, periods_for(metrics), every=every, offset=offset,
                        lateness=lateness)  # fmt: skip
        return [f"task {name!r} installed" for name in names]

    # -- converting the points of earlier versions ---------------------------------------
    def convert(self, precisions: Mapping[tuple[str, str | None], int], default: int) -> Conversion:
        """Not offered on InfluxDB 2.x yet: an error saying so."""
        raise StorageUnavailableError(
            "tsmeter influx convert is not available for InfluxDB 2.x buckets yet (only the v1"
            " API: influxdb://...)"
        )

    def mark_converted(self, conversion: Conversion, now: int) -> None:
        """See :meth:`convert`."""
        self.convert({}, 0)

    def summary_kinds(self) -> list[tuple[PeriodType, str]]:
        """See :meth:`convert`."""
        self.convert({}, 0)
        return []

    # -- the existence read of the write path -------------------------------------------
    def stored(
        self,
        rows: Sequence[RecordRow],
        *,
        slots: bool = False,
        spans: Mapping[int, tuple[int, int]] | None = None,
    ) -> Points:
        """Points already stored in the series and microseconds spanned by ``rows``, read one
        UTC day at a time (``spans``: the [lo, hi) to read of each UTC day instead; over 100
        series: every series of that span); whole points, also with ``slots``."""
        by_day: dict[int, list[RecordRow]] = {}
        for row in rows:
            by_day.setdefault(row.ts // _DAY, []).append(row)
        found: Points = []
        for day, group in by_day.items():
            lo = min(r.ts for r in group) // _US * _US
            hi = max(r.ts for r in group) // _US * _US + _US
            if spans is not None:
                lo, hi = spans[day]
            keys = sorted({_key(r) for r in group}, key=lambda k: (k[0], k[1], k[2], k[3] or ""))
            q = flux.Flux()
            predicate = flux.series_predicate(q, keys) if len(keys) <= _SERIES_PER_QUERY else None
            query = flux.points(self.bucket, RAW, lo, hi, predicate, q)
            found += [({}, _point(values)) for values in self.api.stream(query)]
        return found

    # -- reading ----------------------------------------------------------------------
    def writers(self) -> set[str] | None:
        """Not asked (``reads_pairs`` is False: no slots are kept): None."""
        return None

    def find_record(self, record_id: str) -> RecordRow | None:
        """The stored record with this id, by a scan of every record id (slow on large
        buckets)."""
        hits = self.api.rows(flux.rid_lookup(self.bucket, record_id))
        if not hits:
            return None
        at = int(hits[0]["t"])
        q = flux.Flux()
        query = flux.points(
            self.bucket, RAW, at, at + 1, flux.series_predicate(q, [series_of(hits[0])]), q
        )
        for values in self.api.rows(query):
            if values.get("rid") == record_id and complete(_point(values)):
                return row_of({}, _point(values), self.precisions)
        return None

    def _bounds(self, query: RecordQuery) -> tuple[int, int] | None:
        q = flux.Flux()
        predicate = flux.metric_predicate(
            q, query.metric_key, query.org_id, query.subject_type, query.subject_id
        )
        rows = self.api.rows(flux.edges(self.bucket, RAW, "rid", predicate, q))
        first = [int(r["t"]) for r in rows if r["edge"] == "first"]
        last = [int(r["t"]) for r in rows if r["edge"] == "last"]
        return (min(first), max(last)) if first and last else None

    def iter_records(self, query: RecordQuery) -> Iterator[RecordRow]:
        """Records matching ``query`` ordered by (time, id), read one time window at a time."""
        lo, hi = query.start, query.end
        if lo is None or hi is None:
            edges = self._bounds(query)
            if edges is None:
                return
            lo = edges[0] if lo is None else lo
            hi = edges[1] + 1 if hi is None else hi
        remaining = query.limit if query.limit is not None else -1
        window = _DAY
        cursor = lo // _US * _US
        while cursor < hi and remaining != 0:
            stop = min(cursor + window, (hi + _US - 1) // _US * _US)
            q = flux.Flux()
            predicate = flux.metric_predicate(
                q, query.metric_key, query.org_id, query.subject_type, query.subject_id
            )
            found = flux.points(self.bucket, RAW, cursor, stop, predicate, q)
            precisions = self.precisions
            rows = sorted(
                (r for r in (row_of({}, p, precisions) for p in map(_point, self.api.stream(found))
                             if complete(p))
                 if lo <= r.ts < hi),
                key=lambda r: (r.ts, r.id),
            )  # fmt: skip
            for row in rows:
                if remaining == 0:
                    return
                yield row
                remaining -= 1
            cursor = stop
            window = window * 4 if len(rows) < 10_000 else max(_HOUR, window // 2)

    def readings_before(
        self, query: RecordQuery, at: int, dimensions: Sequence[str]
    ) -> list[RecordRow]:
        """The latest record before ``at`` of each series of ``query`` and combination of
        the values of ``dimensions`` (the port's ``readings_before``), found by reading the
        records of ``[0, at)`` through :meth:`iter_records` and keeping the latest of each
        (greatest id on ties). Exact, and costs a read of that history: a Flux query grouped
        by the ``dim.<name>`` tags would read less, but no InfluxDB 2.x server runs where
        this is tested, so the read path is the one the record reads already prove."""
        if at <= 0:
            return []
        scan = RecordQuery(query.metric_key, query.org_id, query.subject_type,
                           query.subject_id, 0, at)  # fmt: skip
        return latest_readings(self.iter_records(scan), at, dimensions)

    def count_records(self, query: RecordQuery) -> int | None:
        """None: a Flux count over a time range is not offered yet (progress shows none)."""
        return None

    # -- purging ----------------------------------------------------------------------
    def purge(self, metric_key: str, org_id: str | None) -> int:
        """Delete every point of a metric (records, summaries, marks, change log) in one org
        scope; return how many records were deleted."""
        q = flux.Flux()
        count = sum(
            int(r["_value"])
            for r in self.api.rows(flux.counts(self.bucket, flux.metric_predicate(
                q, metric_key, org_id), q))
        )  # fmt: skip
        metric = tag_value(metric_key)
        if org_id is not None:
            self.api.delete(flux.delete_predicate({"metric": metric, "org": tag_value(org_id)}))
        else:
            keep = self._scoped_points(metric)
            self.api.delete(flux.delete_predicate({"metric": metric}))
            for i in range(0, len(keep), 10_000):
                self.api.write("".join(f"{line}\n" for line in keep[i : i + 10_000]).encode())
        return count

    def _scoped_points(self, metric: str) -> list[str]:
        """Every point (any measurement) of the organisations' metrics stored as ``metric``,
        as line protocol, to be written back after deleting every point of that key."""
        q = flux.Flux()
        predicate = f"r.metric == {q.bind('metric', metric)} and exists r.org"
        lines = []
        for table in self.api.tables(flux.everything(self.bucket, predicate, q)):
            tags = [c.label for c in table.columns if c.group and c.label not in _NOT_TAGS]
            for record in table.records:
                values = record.values
                fields = {
                    k: v for k, v in values.items()
                    if k not in tags and k not in _NOT_TAGS
                    and k not in ("result", "table", "t") and v is not None
                }  # fmt: skip
                lines.append(encode_point(
                    values["_measurement"],
                    {k: decode_tag(str(values[k])) for k in tags if values.get(k)},
                    fields,
                    int(values["t"]),
                ))  # fmt: skip
        return lines

    # -- metering events -----------------------------------------------------------------
    def list_events(self, start: int | None, end: int | None, name: str | None) -> list[EventRow]:
        """Events in ``[start, end)``, optionally of one name or name family, oldest first."""
        lo = max(0, start) if start is not None else 0
        hi = min(flux.END, end) if end is not None else flux.END
        if lo >= hi:
            return []
        out = []
        for values in self.api.stream(flux.events(self.bucket, lo, hi)):
            event = decode_tag(str(values.get("event") or ""))
            if not event_matches(event, name):
                continue
            tags = {"metric": "", "subject_type": "", "subject_id": "", **values}
            metric, subject_type, subject_id, org = series_of(tags)  # empty tags are not stored
            out.append(EventRow(int(values["t"]), event, metric, subject_type, subject_id, org,
                                str(values["_value"])))  # fmt: skip
        return sorted(out, key=lambda e: e.ts)

    # -- summaries --------------------------------------------------------------------
    def rollup(
        self, period: PeriodType, calendar: Calendar, start: int | None, end: int | None
    ) -> RollupStats:
        """Bring summaries of ``period`` up to date (see the port)."""
        return rollups.rollup_from(self.source, period, calendar, start, end)

    def summaries(self, query: SummaryQuery, calendar: Calendar) -> list[SummaryRow]:
        """Fresh summaries: stored ones, recomputed where records arrived since."""
        return rollups.fresh_from(self.source, query, calendar)

    def stored_summaries(
        self, metric_key: str, period: PeriodType, timezone: str, org_id: str | None = None
    ) -> list[SummaryRow]:
        """The summary points stored for a metric, as written (no freshness; ``period_end``
        left 0): what the aggregator or the Flux tasks wrote."""
        query = SummaryQuery(metric_key, period, 0, flux.END, org_id=org_id)
        measurement = summary_measurement(period, timezone)
        rows = self.source.stored(query, measurement, 0, flux.END)
        return sorted(rows, key=lambda r: (r.period_start, r.subject_type, r.subject_id))
