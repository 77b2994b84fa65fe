"""Corrections on InfluxDB: the audit measurement, and cancelling or amending one raw point.

Audit, measurement ``usage_corrections``, one point per correction id:
    tags   ``metric``, ``org``, ``rid`` (the record id), ``cid`` (the correction id), ``kind``
           (``CANCEL``/``AMEND``)
    fields ``units_before``, ``units_after`` (integers, units of the metric; 0 after a
           cancel), ``actor``, ``reason``, ``subject_type``, ``subject_id`` (strings),
           ``corrected_at`` (ns)
    time   the record's exact time (``tsn``)

Everything that names the point comes from the correction and its record, so two hosts
applying one correction write one point.

Applying a correction (:func:`apply`, under the store's host lock): the record's point is
found where the id ledger says it was sent (else by a scan of record ids), with its full tag
set (``GROUP BY *``: the series tags, ``w``, ``c``, dimension tags); the audit point is
written first, with an entry of the change log (``usage_dirty``); then the point is deleted
(cancel: ``DELETE`` naming every tag key, an absent one as ``''``, at its exact time) or its
``units`` field overwritten (amend: the same series and time, so the server merges the
field into the point); then a second change-log entry. The ledger keeps the id, so a record
sent again with it finds its point missing, and the write path asks :meth:`Backend.cancelled`
before writing it anew (``InfluxStore._enter``): a cancelled id is never written again.
Change-log entries of corrections carry the writer tag ``<writer>#corrected``: a roll-up
that processes them overwrites a summary left without records by a cancel with an empty one
(count 0), which readers skip (``rollup.tombstones``).

A correction whose audit point exists but whose effect did not land (the process stopped in
between) is finished when the same correction id is applied again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tsmeter.adapters.influxdb.changelog import Entry, Scope, scope_of
from tsmeter.adapters.influxdb.client import InfluxV1Client, quote_ident, series_rows
from tsmeter.adapters.influxdb.lineprotocol import decode_tag, encode_point, tag_value
from tsmeter.adapters.influxdb.schema import (
    DIRTY,
    RAW,
    SeriesKey,
    complete,
    row_of,
    summary_measurement,
)
from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.corrections import CorrectionKind, CorrectionRequest, CorrectionRow
from tsmeter.domain.periods import Calendar
from tsmeter.errors import ConflictError, NotFoundError
from tsmeter.ports import CorrectionQuery, SummaryQuery, SummaryRow

if TYPE_CHECKING:
    from tsmeter.adapters.influxdb.rollup import Source
    from tsmeter.adapters.influxdb.store import InfluxStore
    from tsmeter.adapters.influxdb.v2client import InfluxV2Client

__all__ = ["CORRECTED", "CORRECTIONS", "Backend", "FluxCorrections", "InfluxQLCorrections"]

CORRECTIONS = "usage_corrections"
#: the suffix of the writer tag of change-log entries written by corrections
CORRECTED = "#corrected"
_US = 1_000
_HOUR = 3_600_000_000_000
_END = 2**63 - 1
_IDS_PER_QUERY = 100
#: a point as read back: (its stored tags, every tag key of the measurement; column -> value)
Point = tuple[dict[str, str], dict[str, Any]]


class Backend(Protocol):
    """What corrections need of a transport beyond writing line protocol."""

    def point(self, record_id: str, near: Sequence[RecordRow]) -> Point | None:
        """The raw point of ``record_id`` with its full tag set, read in the microsecond of
        each of ``near`` (where it was sent), or None."""
        ...

    def delete(self, tags: dict[str, str], at: int) -> None:
        """Delete the one raw point of exactly this tag set (stored values) at ``at``."""
        ...

    def corrections(self, query: CorrectionQuery) -> list[CorrectionRow]:
        """The audit points ``query`` asks for (unordered)."""
        ...

    def cancelled(self, places: Sequence[RecordRow]) -> set[str]:
        """The ids among ``places`` (record ids at the time they were sent) cancelled."""
        ...


def audit_line(row: CorrectionRow) -> str:
    """The audit point of a correction."""
    tags = {"metric": row.metric_key, "org": row.org_id or "", "rid": row.record_id,
            "cid": row.id, "kind": row.kind.value}  # fmt: skip
    fields = {"units_before": row.units_before, "units_after": row.units_after,
              "actor": row.actor, "reason": row.reason, "subject_type": row.subject_type,
              "subject_id": row.subject_id, "corrected_at": row.corrected_at}  # fmt: skip
    return encode_point(CORRECTIONS, tags, fields, row.record_ts)


def correction_of(tags: dict[str, Any], values: dict[str, Any]) -> CorrectionRow:
    """A correction from its audit point (tags from GROUP BY or as columns)."""
    merged = {**values, **{k: v for k, v in tags.items() if v is not None}}
    org = str(merged.get("org") or "")
    return CorrectionRow(
        decode_tag(str(merged["cid"])), decode_tag(str(merged["rid"])),
        CorrectionKind(str(merged["kind"])), int(merged["units_before"]),
        int(merged["units_after"]), str(merged["actor"]), str(merged["reason"]),
        int(merged["corrected_at"]), decode_tag(str(merged["metric"])),
        str(merged["subject_type"]), str(merged["subject_id"]),
        decode_tag(org) if org else None, int(merged["time"] if "time" in merged else merged["t"]),
    )  # fmt: skip


# -- the v1 API ---------------------------------------------------------------------------
class InfluxQLCorrections:
    """The :class:`Backend` of the v1 API (InfluxQL, values bound as parameters)."""

    def __init__(self, client: InfluxV1Client) -> None:
        self.client = client

    def point(self, record_id: str, near: Sequence[RecordRow]) -> Point | None:
        """See :class:`Backend`."""
        for place in near:
            lo = place.ts // _US * _US
            (result,) = self.client.query(
                f"SELECT * FROM {quote_ident(RAW)} WHERE time >= $lo AND time < $hi"
                ' AND "metric" = $metric AND "org" = $org GROUP BY *',
                {"lo": lo, "hi": lo + _US, "metric": tag_value(place.metric_key),
                 "org": tag_value(place.org_id) if place.org_id else ""},
            )  # fmt: skip
            for tags, values in series_rows(result):
                if values.get("rid") == record_id and complete(values):
                    return dict(tags), values
        return None

    def delete(self, tags: dict[str, str], at: int) -> None:
        """See :class:`Backend`: every tag key is named (an absent one as ``''``), so only
        this series matches."""
        params: dict[str, Any] = {"at": at}
        terms = []
        for i, (key, value) in enumerate(sorted(tags.items())):
            params[f"k{i}"] = value
            terms.append(f"{quote_ident(key)} = $k{i}")
        self.client.query(
            f"DELETE FROM {quote_ident(RAW)} WHERE time = $at AND {' AND '.join(terms)}", params
        )

    def corrections(self, query: CorrectionQuery) -> list[CorrectionRow]:
        """See :class:`Backend`."""
        params: dict[str, Any] = {
            "lo": max(0, query.start) if query.start is not None else 0,
            "hi": min(_END, query.end) if query.end is not None else _END,
        }
        condition = ""
        if query.record_id is not None:
            params["rid"] = tag_value(query.record_id)
            condition += ' AND "rid" = $rid'
        if query.metric_key is not None:
            params["metric"] = tag_value(query.metric_key)
            params["org"] = tag_value(query.org_id) if query.org_id else ""
            condition += ' AND "metric" = $metric AND "org" = $org'
        elif query.org_id is not None:
            params["org"] = tag_value(query.org_id)
            condition += ' AND "org" = $org'
        (result,) = self.client.query(
            f"SELECT * FROM {quote_ident(CORRECTIONS)} WHERE time >= $lo AND time < $hi"
            f"{condition} GROUP BY *",
            params,
        )
        return [correction_of(tags, values) for tags, values in series_rows(result)]

    def cancelled(self, places: Sequence[RecordRow]) -> set[str]:
        """See :class:`Backend`."""
        found: set[str] = set()
        ordered = sorted(places, key=lambda r: r.ts)
        for i in range(0, len(ordered), _IDS_PER_QUERY):
            some = ordered[i : i + _IDS_PER_QUERY]
            params: dict[str, Any] = {"lo": some[0].ts, "hi": some[-1].ts + 1,
                                      "kind": CorrectionKind.CANCEL.value}  # fmt: skip
            terms = []
            for n, place in enumerate(some):
                params[f"r{n}"] = tag_value(place.id)
                terms.append(f'"rid" = $r{n}')
            (result,) = self.client.query(
                f'SELECT "units_after" FROM {quote_ident(CORRECTIONS)} WHERE time >= $lo'
                f' AND time < $hi AND "kind" = $kind AND ({" OR ".join(terms)}) GROUP BY "rid"',
                params,
            )
            found |= {decode_tag(str(tags["rid"])) for tags, _ in series_rows(result)}
        return found


# -- InfluxDB 2.x -------------------------------------------------------------------------
class FluxCorrections:
    """The :class:`Backend` of InfluxDB 2.x (Flux reads with bound values; the delete API,
    whose predicate cannot say "tag absent" nor name a nanosecond, so the other points of
    the series' microsecond that it would delete too are written back)."""

    _NOT_TAGS = frozenset({"_start", "_stop", "_measurement", "_field", "_value", "_time",
                           "result", "table", "t"})  # fmt: skip

    def __init__(self, api: InfluxV2Client, bucket: str) -> None:
        self.api = api
        self.bucket = bucket

    def _points(self, measurement: str, lo: int, hi: int, predicate: str, q: Any) -> list[Point]:
        from tsmeter.adapters.influxdb import flux

        out: list[Point] = []
        for table in self.api.tables(flux.points(self.bucket, measurement, lo, hi, predicate, q)):
            keys = [c.label for c in table.columns if c.group and c.label not in self._NOT_TAGS]
            for record in table.records:
                values = dict(record.values)
                tags = {k: str(values.pop(k)) for k in keys if values.get(k) is not None}
                values["time"] = int(values["t"])
                out.append((tags, values))
        return out

    def point(self, record_id: str, near: Sequence[RecordRow]) -> Point | None:
        """See :class:`Backend`."""
        from tsmeter.adapters.influxdb import flux

        for place in near:
            lo = place.ts // _US * _US
            q = flux.Flux()
            predicate = flux.metric_predicate(q, place.metric_key, place.org_id)
            for tags, values in self._points(RAW, lo, lo + _US, predicate, q):
                if values.get("rid") == record_id and complete(values):
                    return tags, values
        return None

    def delete(self, tags: dict[str, str], at: int) -> None:
        """See :class:`Backend`: the points of the microsecond matching the predicate's tags
        (those whose keys the delete API can name) are read, deleted, and all but this one
        written back."""
        from tsmeter.adapters.influxdb import flux

        lo = at // _US * _US
        present = {k: v for k, v in tags.items() if v}
        named = {k: v for k, v in sorted(present.items()) if flux.plain_identifier(k)}
        q = flux.Flux()
        predicate = " and ".join(
            f"r[{flux.string(k)}] == {q.bind(f'k{i}', v)}" for i, (k, v) in enumerate(named.items())
        )
        kept = [
            encode_point(RAW, {k: decode_tag(v) for k, v in found.items() if v},
                         {k: v for k, v in values.items()
                          if k not in ("time", *self._NOT_TAGS) and v is not None},
                         values["time"])
            for found, values in self._points(RAW, lo, lo + _US, predicate or "true", q)
            if not ({k: v for k, v in found.items() if v} == present and values["time"] == at)
        ]  # fmt: skip
        self.api.delete(flux.delete_predicate({"_measurement": RAW, **named}), lo, lo + _US - 1)
        if kept:
            self.api.write("".join(f"{line}\n" for line in kept).encode())

    def corrections(self, query: CorrectionQuery) -> list[CorrectionRow]:
        """See :class:`Backend`."""
        from tsmeter.adapters.influxdb import flux

        q = flux.Flux()
        terms = ["true"]
        if query.record_id is not None:
            terms.append(f"r.rid == {q.bind('rid', tag_value(query.record_id))}")
        if query.metric_key is not None:
            terms.append(flux.metric_predicate(q, query.metric_key, query.org_id))
        elif query.org_id is not None:
            terms.append(f"r.org == {q.bind('org', tag_value(query.org_id))}")
        lo = max(0, query.start) if query.start is not None else 0
        hi = min(flux.END, query.end) if query.end is not None else flux.END
        if lo >= hi:
            return []
        found = self._points(CORRECTIONS, lo, hi, " and ".join(terms), q)
        return [correction_of(tags, values) for tags, values in found]

    def cancelled(self, places: Sequence[RecordRow]) -> set[str]:
        """See :class:`Backend`."""
        from tsmeter.adapters.influxdb import flux

        found: set[str] = set()
        ordered = sorted(places, key=lambda r: r.ts)
        for i in range(0, len(ordered), _IDS_PER_QUERY):
            some = ordered[i : i + _IDS_PER_QUERY]
            q = flux.Flux()
            ids = " or ".join(f"r.rid == {q.bind(f'r{n}', tag_value(p.id))}"
                              for n, p in enumerate(some))  # fmt: skip
            predicate = f"r.kind == {q.bind('kind', CorrectionKind.CANCEL.value)} and ({ids})"
            for tags, _ in self._points(CORRECTIONS, some[0].ts, some[-1].ts + 1, predicate, q):
                found.add(decode_tag(tags["rid"]))
        return found


# -- applying -----------------------------------------------------------------------------
def apply(
    store: InfluxStore, request: CorrectionRequest, not_before: int
) -> tuple[CorrectionRow, bool]:
    """Apply ``request`` (see the module docstring and ``UsageStore.correct``); the caller
    holds the store's host lock."""
    backend = store.transport.corrections
    earlier = backend.corrections(CorrectionQuery(record_id=request.record_id))
    earlier.sort(key=lambda c: (c.corrected_at, c.id))
    same = next((c for c in earlier if c.id == request.id), None)
    cancel = next((c for c in earlier if c.kind is CorrectionKind.CANCEL), None)
    located = _locate(store, request.record_id)
    finished = False
    if same is not None or (cancel is not None and located is not None):
        done = same or cancel
        assert done is not None
        finished = located is not None and _finish(store, done, located)
        if same is not None:
            return same, finished
        located = None  # a cancel finished by another correction id: the record is gone
    if located is None:
        if cancel is None:
            raise NotFoundError(f"record {request.record_id!r} not found")
        if request.kind is CorrectionKind.CANCEL:
            return cancel, finished
        raise ConflictError(
            f"record {request.record_id!r} was cancelled (correction {cancel.id!r}):"
            " a cancelled record cannot be amended; record a new one instead"
        )
    tags, values = located
    record = row_of(tags, values, store.transport.precisions)
    if record.ts < not_before:
        from tsmeter.adapters.sqlite.corrections import window_error

        raise window_error(request.record_id, record.ts, not_before)
    after = 0 if request.kind is CorrectionKind.CANCEL else request.units
    row = CorrectionRow(request.id, request.record_id, request.kind, record.quantity, after,
                        request.actor, request.reason, request.at, record.metric_key,
                        record.subject_type, record.subject_id, record.org_id,
                        record.ts)  # fmt: skip
    store.transport.write(f"{audit_line(row)}\n{_log_line(store, record)}\n".encode())
    _finish(store, row, located)
    return row, True


def _finish(store: InfluxStore, row: CorrectionRow, located: Point) -> bool:
    """Make the point say what ``row`` says (delete it, or give it ``units_after``), then log
    the change; whether anything had to change."""
    tags, values = located
    at = int(values["time"])
    if row.kind is CorrectionKind.CANCEL:
        store.transport.corrections.delete(tags, at)
    elif values.get("units") is None or int(values["units"]) != row.units_after:
        point_tags = {k: decode_tag(v) for k, v in tags.items() if v}
        line = encode_point(RAW, point_tags, {"units": row.units_after}, at)
        store.transport.write(f"{line}\n".encode())
    else:
        return False
    record = row_of(tags, values, store.transport.precisions)
    store.transport.write(f"{_log_line(store, record)}\n".encode())
    store.forget_record(row.record_id)
    return True


def _log_line(store: InfluxStore, record: RecordRow) -> str:
    """A change-log entry for the record's (metric, org, UTC hour), by the correcting writer."""
    now = store.log_stamp()
    tags = {"metric": record.metric_key, "org": record.org_id or "",
            "w": f"{store.writer}{CORRECTED}"}  # fmt: skip
    return encode_point(DIRTY, tags, {"hour": record.ts // _HOUR}, now)


def _locate(store: InfluxStore, record_id: str) -> Point | None:
    """The record's point with its full tag set: where the ledger (or this store's reads)
    say it was sent, else where a scan of record ids finds it."""
    near = store.places(record_id)
    found = store.transport.corrections.point(record_id, near) if near else None
    if found is None:
        scanned = store.transport.find_record(record_id)
        if scanned is not None:
            found = store.transport.corrections.point(record_id, [scanned])
    return found


def refuse_cancelled(
    store: InfluxStore, again: list[RecordRow], sent: dict[str, RecordRow]
) -> set[str]:
    """The ids of ``again`` (known to the ledger, their point not found) that were
    cancelled: the write path drops them instead of writing them anew."""
    if not again:
        return set()
    return store.transport.corrections.cancelled([sent[row.id] for row in again])


# -- roll-ups -----------------------------------------------------------------------------
def tombstones(
    source: Source,
    period: PeriodType,
    calendar: Calendar,
    entries: Iterable[Entry],
    rows: Mapping[tuple[SeriesKey, int], SummaryRow],
) -> dict[tuple[SeriesKey, int], SummaryRow]:
    """Empty summaries (count 0, which readers skip) for the stored summaries of the periods
    that correction entries among ``entries`` touched and that ``rows`` (what the run
    recomputed) no longer has: a cancel took their last record. Only correction entries
    are looked at, so runs without corrections read nothing more."""
    hours: dict[int, set[Scope]] = {}
    for series, _, hour in entries:
        if decode_tag(series[2]).endswith(CORRECTED):
            hours.setdefault(hour, set()).add(scope_of(series))
    if not hours:
        return {}
    measurement = summary_measurement(period, calendar.timezone)
    out: dict[tuple[SeriesKey, int], SummaryRow] = {}
    for (lo, hi), scopes in calendar.periods_of_hours(period, hours).items():
        for metric, org in sorted(scopes, key=lambda s: (s[0], s[1] or "")):
            query = SummaryQuery(metric, period, lo, hi, org_id=org)
            for row in source.stored(query, measurement, lo, hi):
                key = (row.metric_key, row.subject_type, row.subject_id, row.org_id)
                if (key, row.period_start) not in rows:
                    out[(key, row.period_start)] = row._replace(
                        period_end=hi, record_count=0, sum=0, min=0, max=0, last_ts=0,
                        last_value=0,
                    )  # fmt: skip
    return out
