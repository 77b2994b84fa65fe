"""The v1 transport: InfluxDB's v1 HTTP API (1.x, 2.x compat, 3.x) with InfluxQL reads.

:class:`V1Transport` sends the store's line protocol through
:class:`~tsmeter.adapters.influxdb.client.InfluxV1Client` and answers its reads in InfluxQL
with the user's values bound as parameters; roll-ups are
:mod:`~tsmeter.adapters.influxdb.rollup`, continuous queries :mod:`~tsmeter.adapters.influxdb.cq`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from tsmeter.adapters.influxdb import rollup as rollups
from tsmeter.adapters.influxdb.client import (
    InfluxV1Client,
    InfluxV1Config,
    quote_ident,
    series_rows,
)
from tsmeter.adapters.influxdb.corrections import Backend, InfluxQLCorrections
from tsmeter.adapters.influxdb.lineprotocol import decode_tag, encode_point, tag_value
from tsmeter.adapters.influxdb.schema import (
    CONVERT_HINT,
    EVENTS,
    RAW,
    STATE,
    complete,
    event_matches,
    metric_condition,
    row_of,
    series_of,
)
from tsmeter.adapters.influxdb.speedups import native
from tsmeter.adapters.influxdb.transport import Conversion, Points
from tsmeter.domain import MetricDefinition, PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import Rounding, from_units, to_units
from tsmeter.errors import StorageUnavailableError, ValidationError
from tsmeter.ports import EventRow, RecordQuery, RollupStats, SummaryQuery, SummaryRow

__all__ = ["V1Transport"]

_US = 1_000
_HOUR = 3_600_000_000_000
_DAY = 24 * _HOUR
#: what the write path reads of a stored point: its id and the tags that make its slot
_SLOT_COLUMNS = '"rid", "metric", "subject_type", "subject_id", "org", "c"'


class V1Transport:
    """One database through the v1 API (see the module docstring).

    Example: ``InfluxStore(V1Transport.from_url("influxdb://127.0.0.1:8086/metering"), dedupe)``.
    """

    #: (metric, org) pairs an existence read names; beyond, it reads every point of the span
    METRICS_PER_QUERY = 20
    can_ping = True
    reads_pairs = True

    def __init__(self, config: InfluxV1Config) -> None:
        self.config = config
        self.client = InfluxV1Client(config)
        self.target = self.lock_name = f"{config.base_url}/{config.database}"
        self.writer = config.writer
        self.precisions: dict[tuple[str, str | None], int] = {}
        self._units_ok = False  # no raw point of an earlier version left (cached once known)
        self.corrections: Backend = InfluxQLCorrections(self.client)

    @classmethod
    def from_url(cls, url: str) -> V1Transport:
        """A transport for an ``influxdb://host:port/database?...`` URL (see InfluxV1Config)."""
        return cls(InfluxV1Config.from_url(url))

    def write(self, body: bytes) -> None:
        """Send line protocol to ``/write``."""
        self.client.write(body)

    def ping(self, timeout: float) -> bool:
        """Whether ``/ping`` answers within ``timeout`` seconds."""
        return self.client.ping(timeout=timeout)

    def close(self) -> None:
        """Close the HTTP session."""
        self.client.close()

    # -- administration ---------------------------------------------------------------
    def init(self) -> str:
        """Create the database if it is missing."""
        self.client.query(f"CREATE DATABASE {quote_ident(self.config.database)}", database=False)
        return f"Database {self.config.database!r}"

    def install_rollups(
        self,
        timezone: str,
        metrics: Sequence[MetricDefinition],
        *,
        every: str,
        lateness: str,
        offset: str,
    ) -> list[str]:
        """Continuous queries for hourly, daily and weekly summaries (``offset`` is for 2.x
        tasks; monthly and yearly stay with ``tsmeter aggregate``)."""
        from tsmeter.adapters.influxdb.cq import install

        lateness_by_period = {
            PeriodType.HOURLY: lateness, PeriodType.DAILY: "2d", PeriodType.WEEKLY: "8d"
        }  # fmt: skip
        names = install(self.client, timezone, every=every, lateness=lateness_by_period)
        return [f"continuous query {name} installed" for name in names]

    # -- reading ----------------------------------------------------------------------
    def stored(
        self,
        rows: Sequence[RecordRow],
        *,
        slots: bool = False,
        spans: Mapping[int, tuple[int, int]] | None = None,
    ) -> Points:
        """Points already stored in the metrics and microseconds spanned by ``rows``, read one
        UTC day at a time (``spans``: the [lo, hi) to read of each UTC day instead); with
        ``slots``, only what the write path needs of them (record id, series tags and time).

        The write path's reads select one field: InfluxDB 1.x copies every cached value of
        each field it reads (whatever the time range), so fewer fields cost it less CPU.

        The condition names the rows' (metric, org) pairs, not their series: InfluxDB 1.x
        plans a query that names many series slowly even when the range is empty, and a few
        metrics quickly (figures in docs/benchmarks/RESULTS.md). Points of other subjects
        come back too; they only add times to other series' slots and ids that are stored
        anyway. Beyond METRICS_PER_QUERY pairs, every point of the span is read.
        """
        found: Points = []
        for day, lo, hi, pairs in _days(rows):
            lo, hi = spans[day] if spans is not None else (lo // _US * _US, hi // _US * _US + _US)
            params: dict[str, Any] = {"lo": lo, "hi": hi}
            condition = ""
            if len(pairs) <= self.METRICS_PER_QUERY:
                terms = []
                for i, (metric, org) in enumerate(pairs):
                    params[f"m{i}"], params[f"o{i}"] = tag_value(metric), tag_value(org)
                    terms.append(f'("metric" = $m{i} AND "org" = $o{i})')
                condition = f" AND ({' OR '.join(terms)})"
            columns = _SLOT_COLUMNS if slots else "*"
            (result,) = self.client.query(
                f"SELECT {columns} FROM {quote_ident(RAW)}"
                f" WHERE time >= $lo AND time < $hi{condition}",
                params,
            )
            found += [({}, values) for _, values in series_rows(result)]
        return found

    def writers(self) -> set[str] | None:
        """The writer names of the stored records, from the series index (no point read)."""
        (result,) = self.client.query(f'SHOW TAG VALUES FROM {quote_ident(RAW)} WITH KEY = "w"')
        return {decode_tag(str(values["value"])) for _, values in series_rows(result)}

    def find_record(self, record_id: str) -> RecordRow | None:
        """The stored record with this id, by a scan of the raw measurement (slow on large
        databases)."""
        (result,) = self.client.query(
            f'SELECT * FROM {quote_ident(RAW)} WHERE "rid" = $rid LIMIT 1', {"rid": record_id}
        )
        rows = [pair for pair in series_rows(result) if complete(pair[1])]
        return row_of(*rows[0], self.precisions) if rows else None

    def _edge(self, condition: str, params: dict[str, Any], selector: str) -> int | None:
        (result,) = self.client.query(
            f'SELECT {selector}("rid") FROM {quote_ident(RAW)} WHERE {condition}', params
        )
        rows = series_rows(result)
        return int(rows[0][1]["time"]) if rows else None

    def iter_records(self, query: RecordQuery) -> Iterator[RecordRow]:
        """Records matching ``query`` ordered by (time, id), read one time window at a time."""
        params: dict[str, Any] = {}
        condition = metric_condition(
            query.metric_key, query.org_id, query.subject_type, query.subject_id, params
        )
        lo = query.start if query.start is not None else self._edge(condition, params, "first")
        hi = query.end if query.end is not None else self._edge(condition, params, "last")
        if lo is None or hi is None:
            return
        if query.end is None:
            hi += 1
        remaining = query.limit if query.limit is not None else -1
        window = _DAY
        cursor = lo // _US * _US
        while cursor < hi and remaining != 0:
            stop = min(cursor + window, (hi + _US - 1) // _US * _US)
            (result,) = self.client.query(
                f"SELECT * FROM {quote_ident(RAW)} WHERE {condition}"
                " AND time >= $wlo AND time < $whi",
                {**params, "wlo": cursor, "whi": stop},
            )
            points = [
                row_of(*pair, self.precisions) for pair in series_rows(result) if complete(pair[1])
            ]
            rows = sorted((r for r in points if lo <= r.ts < hi), key=lambda r: (r.ts, r.id))
            for row in rows:
                if remaining == 0:
                    return
                yield row
                remaining -= 1
            cursor = stop
            window = window * 4 if len(rows) < 10_000 else max(_HOUR, window // 2)

    #: candidate times per query of the second step of :meth:`readings_before`
    READINGS_PER_QUERY = 64

    def readings_before(
        self, query: RecordQuery, at: int, dimensions: Sequence[str]
    ) -> list[RecordRow]:
        """The latest record before ``at`` of each series of ``query`` and combination of
        the values of ``dimensions`` (the port's ``readings_before``), in two steps: the
        server finds each group's greatest exact time (``max("tsn")`` grouped by the subject
        and the ``dim.<name>`` tags, over ``[0, at)``); then the points at those times are
        read (batches of times in time order, so the spans read do not overlap) and, of
        points of one group at its time (records of one instant, from several writers or
        moved off a taken nanosecond), the greatest record id is kept."""
        if at <= 0:
            return []
        tags = ["subject_type", "subject_id", *(f"dim.{name}" for name in dimensions)]
        params: dict[str, Any] = {"at": at, "hi": (at - 1) // _US * _US + _US}
        condition = metric_condition(
            query.metric_key, query.org_id, query.subject_type, query.subject_id, params
        )
        (result,) = self.client.query(
            f'SELECT max("tsn") FROM {quote_ident(RAW)} WHERE {condition}'
            ' AND time >= 0 AND time < $hi AND "tsn" < $at'
            f" GROUP BY {', '.join(quote_ident(t) for t in tags)}",
            params,
        )
        latest: dict[tuple[str | None, ...], int] = {}
        for group_tags, values in series_rows(result):
            if values.get("max") is not None:
                latest[_group_of(group_tags, tags)] = int(values["max"])
        times = sorted(set(latest.values()))
        chosen: dict[tuple[str | None, ...], RecordRow] = {}
        for i in range(0, len(times), self.READINGS_PER_QUERY):
            batch = times[i : i + self.READINGS_PER_QUERY]
            bound = dict(params)
            bound["lo"] = batch[0] // _US * _US
            bound["top"] = batch[-1] // _US * _US + _US
            terms = []
            for j, t in enumerate(batch):
                bound[f"t{j}"] = t
                terms.append(f'"tsn" = $t{j}')
            (result,) = self.client.query(
                f"SELECT * FROM {quote_ident(RAW)} WHERE {condition}"
                f" AND time >= $lo AND time < $top AND ({' OR '.join(terms)})",
                bound,
            )
            for point_tags, values in series_rows(result):
                if not complete(values):
                    continue
                group = _group_of({**values, **point_tags}, tags)
                row = row_of(point_tags, values, self.precisions)
                if latest.get(group) != row.ts:
                    continue
                held = chosen.get(group)
                if held is None or row.id > held.id:
                    chosen[group] = row
        return sorted(chosen.values(), key=lambda r: (r.ts, r.id))

    def count_records(self, query: RecordQuery) -> int:
        """How many raw points match ``query`` (its limit ignored), counted by the server."""
        params: dict[str, Any] = {"lo": query.start or 0, "hi": query.end or 2**63 - 1}
        condition = metric_condition(
            query.metric_key, query.org_id, query.subject_type, query.subject_id, params
        )
        (result,) = self.client.query(
            f'SELECT count("rid") FROM {quote_ident(RAW)} WHERE {condition}'
            " AND time >= $lo AND time < $hi",
            params,
        )
        rows = series_rows(result)
        return int(rows[0][1]["count"]) if rows else 0

    def purge(self, metric_key: str, org_id: str | None) -> int:
        """Delete every point of a metric (records, summaries, marks); return records deleted."""
        params: dict[str, Any] = {}
        condition = metric_condition(metric_key, org_id, None, None, params)
        (result,) = self.client.query(
            f'SELECT count("rid") FROM {quote_ident(RAW)} WHERE {condition}', params
        )
        rows = series_rows(result)
        count = int(rows[0][1]["count"]) if rows else 0
        self.client.query(f"DROP SERIES WHERE {condition}", params)
        return count

    def list_events(self, start: int | None, end: int | None, name: str | None) -> list[EventRow]:
        """Events in ``[start, end)``, optionally of one name or name family, oldest first."""
        lo = start if start is not None else 0
        hi = end if end is not None else 2**63 - 1
        params: dict[str, Any] = {"lo": lo, "hi": hi}
        (result,) = self.client.query(
            f"SELECT * FROM {quote_ident(EVENTS)} WHERE time >= $lo AND time < $hi", params
        )
        out = []
        for tags, values in series_rows(result):
            merged = {**{k: v for k, v in values.items() if v is not None}, **tags}
            event = decode_tag(str(merged.get("event", "")))
            if not event_matches(event, name):
                continue
            metric, subject_type, subject_id, org = series_of(merged)
            out.append(EventRow(int(values["time"]), event, metric, subject_type, subject_id,
                                org, str(values["data"])))  # fmt: skip
        return sorted(out, key=lambda e: e.ts)

    # -- summaries --------------------------------------------------------------------
    def rollup(
        self, period: PeriodType, calendar: Calendar, start: int | None, end: int | None
    ) -> RollupStats:
        """Bring summaries of ``period`` up to date (see the port)."""
        self._require_units()
        return rollups.rollup(self.client, period, calendar, start, end)

    def summaries(self, query: SummaryQuery, calendar: Calendar) -> list[SummaryRow]:
        """Fresh summaries: stored ones, recomputed where records arrived since."""
        self._require_units()
        return rollups.fresh_summaries(self.client, query, calendar)

    def _require_units(self) -> None:
        """Refuse to sum while raw points of an earlier version have no integer units (their
        float quantities would be left out of every sum)."""
        if self._units_ok:
            return
        if rollups.unconverted(self.client):
            raise StorageUnavailableError(
                f"InfluxDB database {self.config.database!r} holds usage points written by an"
                f" earlier version (float quantity, no integer units): {CONVERT_HINT}; until"
                " then roll-ups and summaries are refused rather than leave them out"
            )
        self._units_ok = True

    # -- converting the points of earlier versions ---------------------------------------
    #: raw points read per conversion request, about (the time window adapts)
    CONVERT_PAGE = 50_000

    def convert(self, precisions: Mapping[tuple[str, str | None], int], default: int) -> Conversion:
        """Write integer ``units`` onto every raw point that has a float ``quantity`` and no
        ``units`` (see the Transport), reading one time window at a time."""
        done = Conversion()
        bounds = rollups._data_range(self.client, field="quantity")
        if bounds is None:
            return done
        lo, hi = bounds
        window = _DAY
        cursor = lo
        while cursor < hi:
            stop = min(cursor + window, hi)
            (result,) = self.client.query(
                f'SELECT "quantity", "units" FROM {quote_ident(RAW)}'
                " WHERE time >= $lo AND time < $hi GROUP BY *",
                {"lo": cursor, "hi": stop},
            )
            found = series_rows(result)
            made = (self._converted(tags, values, precisions, default, done)
                    for tags, values in found)  # fmt: skip
            lines = [line for line in made if line is not None]
            for i in range(0, len(lines), 10_000):
                self.client.write("".join(f"{x}\n" for x in lines[i : i + 10_000]).encode())
            cursor = stop
            if len(found) < self.CONVERT_PAGE // 4:
                window *= 4
            elif len(found) > self.CONVERT_PAGE:
                window = max(_US, window // 4)
        return done

    @staticmethod
    def _converted(
        tags: dict[str, str],
        values: dict[str, Any],
        precisions: Mapping[tuple[str, str | None], int],
        default: int,
        done: Conversion,
    ) -> str | None:
        """The line giving one raw point its units, or None if it needs none."""
        quantity = values.get("quantity")
        if values.get("units") is not None or quantity is None:
            return None
        metric, _, _, org = series_of(tags)
        precision = precisions.get((metric, org))
        if precision is None:
            done.unknown.add((metric, org))
            precision = default
        try:
            units = to_units("quantity", float(quantity), precision, Rounding.HALF_EVEN)
        except ValidationError as exc:
            raise ValidationError(
                "quantity", f"a point of metric {metric!r} at {values['time']} cannot be"
                f" converted: {exc}"
            ) from None  # fmt: skip
        if from_units(units, precision) != Decimal(repr(float(quantity))):
            done.rounded += 1
        at = int(values["time"])
        done.add(at)
        point_tags = {k: decode_tag(v) for k, v in tags.items() if v}
        return encode_point(RAW, point_tags, {"units": units}, at)

    def mark_converted(self, conversion: Conversion, now: int) -> None:
        """Leave the mark roll-ups look for (see ``rollup.unconverted``)."""
        fields = {"converted": conversion.converted, "rounded": conversion.rounded}
        self.client.write(
            (encode_point(STATE, {"key": rollups.CONVERTED}, fields, now) + "\n").encode()
        )

    def summary_kinds(self) -> list[tuple[PeriodType, str]]:
        """The (period type, time zone) of every summary measurement stored."""
        (result,) = self.client.query("SHOW MEASUREMENTS")
        return rollups.summary_kinds(str(v["name"]) for _, v in series_rows(result))


def _group_of(tags: Mapping[str, Any], names: Sequence[str]) -> tuple[str | None, ...]:
    """The values of the tags ``names`` (decoded; None where a point has no such tag).

    >>> _group_of({"subject_id": "o1", "dim.model": ""}, ["subject_id", "dim.model"])
    ('o1', None)
    """
    return tuple(decode_tag(str(tags[n])) if tags.get(n) else None for n in names)


def _days(rows: Sequence[RecordRow]) -> list[tuple[int, int, int, list[tuple[str, str]]]]:
    """Per UTC day of ``rows``: the day, the first and the last time, and the (metric, org)
    pairs (org "" for none), sorted."""
    pairs: dict[int, set[tuple[str, str]]] = {}
    fast = native if native is not None and type(rows) is list else None
    bounds = fast.span_bounds(rows, _DAY) if fast is not None else None
    if fast is not None and bounds is not None:
        for metric, org, day in fast.series_spans(rows, _DAY):
            pairs.setdefault(day, set()).add((metric, org or ""))
    else:
        bounds = {}
        for row in rows:
            ts = row.ts
            day = ts // _DAY
            held = bounds.get(day)
            bounds[day] = (ts, ts) if held is None else (min(held[0], ts), max(held[1], ts))
            pairs.setdefault(day, set()).add((row.metric_key, row.org_id or ""))
    return [(day, lo, hi, sorted(pairs[day])) for day, (lo, hi) in bounds.items()]
