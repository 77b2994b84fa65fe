"""SQLiteStore: the embedded implementation of the UsageStore and Catalog ports.

One file in WAL mode; safe to share between processes (the CLI, a scheduler,
an application). Every write is one ``BEGIN IMMEDIATE`` transaction with
``synchronous = FULL``: once a call returns, its records survive a crash.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import chain, pairwise
from pathlib import Path
from typing import Any

from tsmeter.adapters.sqlite import corrections, dimensions
from tsmeter.adapters.sqlite import rollup as rollups
from tsmeter.adapters.sqlite.schema import connect
from tsmeter.domain import (
    AlertStatus,
    MetricDefinition,
    PeriodType,
    RecordRow,
    UsageAlert,
    UsageThreshold,
)
from tsmeter.domain.corrections import CorrectionRequest, CorrectionRow
from tsmeter.domain.models import STORED
from tsmeter.domain.periods import Calendar
from tsmeter.domain.properties import stored_values
from tsmeter.domain.quantities import MAX_UNITS
from tsmeter.domain.validation import to_ns
from tsmeter.errors import ConflictError, SeriesError, StorageUnavailableError, ValidationError
from tsmeter.ports import (
    AlertOpening,
    AlertResolution,
    ApiKeyRow,
    Capabilities,
    CorrectionQuery,
    DeliveryRow,
    EventRow,
    RecordQuery,
    RollupStats,
    SummaryQuery,
    SummaryRow,
)

__all__ = ["SQLiteStore"]

SeriesKey = tuple[str, str, str, str | None]  # (metric_key, subject_type, subject_id, org_id)
_HOUR = 3_600_000_000_000
_MIN_TS, _MAX_TS = -(1 << 63) + 1, (1 << 63) - 1
#: what SeriesError (a StorageUnavailableError) says of a series whose stored units cannot
#: be summed in a period
OVERFLOW = (
    "cannot be summed: its total in a period is beyond the 64-bit range of a stored total"
    f" (±{MAX_UNITS} units of the metric)"
)
# ON CONFLICT (id), not OR IGNORE: a row breaking the units CHECK is an error, never skipped
_INSERT_PLAIN = "INSERT INTO usage_records (id, series_id, ts, units, recorded_at)"
_INSERT_FULL = "INSERT INTO usage_records (id, series_id, ts, units, recorded_at, metadata, source)"
_ON_CONFLICT = " ON CONFLICT (id) DO NOTHING"
ROWS_PER_STATEMENT = 100  # rows per INSERT statement in insert_many
# reading records: a long read's page cache, rows per fetch, and when a sorted scan of the
# whole table beats one index look-up (a random read) per record: past this many records,
# and when they are at least a share of the table of 1 / _LOOKUP_COST
_READER_CACHE_KIB = 8192
_CHUNK = 2000
_SCAN_AT_LEAST = 20_000
_LOOKUP_COST = 3
_SELECT = "SELECT id, series_id, units, ts, metadata, source FROM usage_records"
_COUNT = "SELECT count(*) FROM usage_records"
_WHERE = " WHERE series_id IN (SELECT value FROM json_each(?)) AND ts >= ? AND ts < ?"


def insert_many(
    conn: sqlite3.Connection,
    head: str,
    width: int,
    values: Sequence[tuple[Any, ...]],
    per: int = ROWS_PER_STATEMENT,
    tail: str = "",
) -> None:
    """``head VALUES (...), (...), ... tail`` with ``per`` rows per statement (the rest in one
    more), since most of the cost of an insert is per statement, not per row."""
    full = len(values) // per * per
    if full:
        sql = f"{head} VALUES " + ",".join([f"({','.join('?' * width)})"] * per) + tail
        conn.executemany(
            sql, [tuple(chain.from_iterable(values[i : i + per])) for i in range(0, full, per)]
        )
    if full < len(values):
        rest = values[full:]
        sql = f"{head} VALUES " + ",".join([f"({','.join('?' * width)})"] * len(rest)) + tail
        conn.execute(sql, tuple(chain.from_iterable(rest)))


class SQLiteStore:
    """Records, summaries, metrics and thresholds in one SQLite file.

    Quantities are integer units of their metric (:class:`~tsmeter.domain.RecordRow`); sums
    are exact, and a sum beyond the 64-bit range is a :class:`~tsmeter.errors.SeriesError`
    (a StorageUnavailableError) naming the series, never a wrapped or float result.

    >>> store = SQLiteStore(":memory:")
    >>> store.append([RecordRow("r1", "api_calls", "org", "o1", None, 1_000_000, 0, None, None)], 0)
    1
    >>> store.append([RecordRow("r1", "api_calls", "org", "o1", None, 1_000_000, 0, None, None)], 0)
    0
    """

    #: one file, one clock: incremental roll-ups need not look back
    recheck_window = 0

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn = connect(path)
        self._lock = threading.RLock()
        self._series: dict[SeriesKey, int] = {}
        self._series_purges = 0  # the purge count the cache was built under

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageUnavailableError(f"store {self.path!r} is unavailable: {exc}") from exc
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StorageUnavailableError(f"commit to {self.path!r} failed: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StorageUnavailableError(f"reading {self.path!r} failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection (every acknowledged write is already on disk)."""
        with self._lock:
            self._conn.close()

    def capabilities(self) -> Capabilities:
        """What this store offers beyond the ports it implements: its file is the state
        file, and keeps the API keys. Example:
        ``Meter(store, store, capabilities=store.capabilities())``."""
        return Capabilities(state_path=self.path, keys=self, dimension_values=self)

    # -- series -----------------------------------------------------------------------
    def _series_ids(self, conn: sqlite3.Connection, keys: set[SeriesKey]) -> dict[SeriesKey, int]:
        """Ids for ``keys``, creating missing series (inside the caller's transaction)."""
        # a purge through any connection deletes series and frees their ids for reuse, so
        # cached ids are only trusted while the purge count is the one they were read under
        row = conn.execute("SELECT value FROM meta WHERE key = 'series_purges'").fetchone()
        purges = 0 if row is None else int(row[0])
        if purges != self._series_purges:
            self._series.clear()
            self._series_purges = purges
        found = {k: self._series[k] for k in keys if k in self._series}
        missing = [(*k[:3], k[3] or "") for k in keys if k not in found]
        if missing:
            conn.executemany(
                "INSERT OR IGNORE INTO series (metric_key, subject_type, subject_id, org_key)"
                " VALUES (?, ?, ?, ?)",
                missing,
            )
            for key in missing:
                found[(*key[:3], key[3] or None)] = conn.execute(
                    "SELECT id FROM series WHERE metric_key = ? AND subject_type = ?"
                    " AND subject_id = ? AND org_key = ?",
                    key,
                ).fetchone()[0]
        return found

    def _matching_series(
        self,
        conn: sqlite3.Connection,
        metric_key: str,
        org_id: str | None,
        subject_type: str | None,
        subject_id: str | None,
    ) -> dict[int, tuple[str, str]]:
        sql = "SELECT id, subject_type, subject_id FROM series WHERE org_key = ? AND metric_key = ?"
        params: list[Any] = [org_id or "", metric_key]
        if subject_type is not None:
            sql += " AND subject_type = ?"
            params.append(subject_type)
        if subject_id is not None:
            sql += " AND subject_id = ?"
            params.append(subject_id)
        return {sid: (st, si) for sid, st, si in conn.execute(sql, params)}

    # -- records ----------------------------------------------------------------------
    def append(self, rows: Sequence[RecordRow], recorded_at: int) -> int:
        """Store rows whose id is new, in one transaction; return how many were new. A
        quantity that is not an int of units within ±MAX_UNITS is a ValidationError naming
        its row (nothing is stored)."""
        if not rows:
            return 0
        if not all(type(r[5]) is int for r in rows):  # a float would make every sum a float
            raise _bad_units(rows)
        keys = {r[1:5] for r in rows}
        plain = all(r.metadata is None and r.source is None for r in rows)
        with self._write() as conn:
            ids = self._series_ids(conn, keys)
            values: list[tuple[Any, ...]]
            if plain:
                values = [(r[0], ids[r[1:5]], r[6], r[5], recorded_at) for r in rows]
            else:
                values = [(r[0], ids[r[1:5]], r[6], r[5], recorded_at, r[7], r[8]) for r in rows]
            before = conn.total_changes
            try:
                if plain:
                    insert_many(conn, _INSERT_PLAIN, 5, values, tail=_ON_CONFLICT)
                else:
                    insert_many(conn, _INSERT_FULL, 7, values, tail=_ON_CONFLICT)
            except (sqlite3.IntegrityError, OverflowError):
                raise _bad_units(rows) from None
            inserted = conn.total_changes - before
            inserted -= corrections.drop_cancelled(conn, rows)  # cancelled ids stay cancelled
            conn.executemany(
                "INSERT INTO dirty (series_id, hour) VALUES (?, ?)",
                {(v[1], v[2] // _HOUR) for v in values},
            )
        self._series.update(ids)  # only after the commit: a rollback must not leave ids behind
        return inserted

    _RECORD_COLUMNS = (
        "u.id, s.metric_key, s.subject_type, s.subject_id, s.org_key, u.units, u.ts,"
        " u.metadata, u.source"
    )

    @staticmethod
    def _row(values: tuple[Any, ...]) -> RecordRow:
        rid, mk, st, si, org, q, ts, md, src = values
        return RecordRow(rid, mk, st, si, org or None, q, ts, md, src)

    def get_record(self, record_id: str) -> RecordRow | None:
        """The stored record with this id, or None."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {self._RECORD_COLUMNS} FROM usage_records u"
                " JOIN series s ON s.id = u.series_id WHERE u.id = ?",
                (record_id,),
            ).fetchone()
        return None if row is None else self._row(row)

    def iter_records(self, query: RecordQuery) -> Iterator[RecordRow]:
        """Records matching ``query`` ordered by (time, id), streamed from one snapshot.

        One statement on a connection of its own, read in chunks inside one read transaction:
        records written meanwhile are not seen, none are skipped or repeated, and the sort
        spills to temporary files rather than growing in memory. A large share of the store
        is read in key order and sorted once (looking each row up from the index would cost
        a random read per record); a small one through the (series, time) index.
        """
        if self.path == ":memory:":  # no second connection can see it: read it whole
            with self._snapshot() as conn:
                rows = list(self._select_records(conn, query))
            yield from rows
            return
        with self._snapshot() as conn:
            yield from self._select_records(conn, query)

    def count_records(self, query: RecordQuery) -> int:
        """How many records match ``query`` (its limit ignored), counted on the covering
        (series, time) index without reading the records."""
        with self._snapshot() as conn:
            series = self._matching_series(
                conn, query.metric_key, query.org_id, query.subject_type, query.subject_id
            )
            if not series:
                return 0
            return int(conn.execute(_COUNT + _WHERE, _where_args(series, query)).fetchone()[0])

    def readings_before(
        self, query: RecordQuery, at: int, dimensions: Sequence[str]
    ) -> list[RecordRow]:
        """The latest record before ``at`` of each series of ``query`` and combination of
        the values of ``dimensions`` (see the port), from one snapshot: without dimensions
        one look-up per series on the (series, time) index; with them, one pass over the
        series' records before ``at``, partitioned by the properties' JSON type and value
        (finer than the values as read, so the latest of each is merged after)."""
        at = min(_MAX_TS, at)
        with self._snapshot() as conn:
            conn.execute("BEGIN")
            try:
                series = self._matching_series(
                    conn, query.metric_key, query.org_id, query.subject_type, query.subject_id
                )
                keys = {sid: (query.metric_key, st, si, query.org_id)
                        for sid, (st, si) in series.items()}  # fmt: skip
                found: list[tuple[Any, ...]] = []
                if not dimensions:
                    for sid in sorted(series):
                        found += conn.execute(
                            f"{_SELECT} WHERE series_id = ? AND ts < ? ORDER BY ts DESC, id DESC"
                            " LIMIT 1",
                            (sid, at),
                        ).fetchall()
                elif series:
                    paths = [f"$.{name}" for name in dimensions]
                    parts = ", ".join(
                        "CASE WHEN json_valid(metadata) THEN json_type(metadata, ?) END,"
                        " CASE WHEN json_valid(metadata) THEN json_extract(metadata, ?) END"
                        for _ in paths
                    )
                    args = [p for path in paths for p in (path, path)]
                    found = conn.execute(
                        "SELECT id, series_id, units, ts, metadata, source FROM ("
                        "SELECT id, series_id, units, ts, metadata, source, row_number()"
                        f" OVER (PARTITION BY series_id, {parts} ORDER BY ts DESC, id DESC) AS n"
                        " FROM usage_records WHERE series_id IN (SELECT value FROM json_each(?))"
                        " AND ts < ?) WHERE n = 1",
                        (*args, json.dumps(sorted(series)), at),
                    ).fetchall()
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        latest: dict[tuple[Any, ...], RecordRow] = {}
        for rid, sid, units, ts, md, src in found:
            row = RecordRow(rid, *keys[sid], units, ts, md, src)
            key = (sid, *stored_values(dimensions, md))
            held = latest.get(key)
            if held is None or (ts, rid) > (held.ts, held.id):
                latest[key] = row
        return sorted(latest.values(), key=lambda r: (r.ts, r.id))

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A connection for a long read: one of its own (closed after) with a bounded page
        cache and the sorter's overflow in temporary files; for an in-memory store, the
        store's own under its lock."""
        if self.path == ":memory:":
            with self._read() as conn:
                yield conn
            return
        try:
            conn = sqlite3.connect(
                str(Path(self.path).expanduser()), isolation_level=None, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"store {self.path!r} is unavailable: {exc}") from exc
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA cache_size = -{_READER_CACHE_KIB}")
            conn.execute("PRAGMA temp_store = FILE")
            yield conn
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"reading {self.path!r} failed: {exc}") from exc
        finally:
            conn.close()  # ends its read transaction

    def _select_records(self, conn: sqlite3.Connection, query: RecordQuery) -> Iterator[RecordRow]:
        """The rows of ``query`` read through ``conn`` in one transaction, in (time, id) order."""
        conn.execute("BEGIN")
        try:
            series = self._matching_series(
                conn, query.metric_key, query.org_id, query.subject_type, query.subject_id
            )
            if not series:
                return
            keys = {
                sid: (query.metric_key, st, si, query.org_id) for sid, (st, si) in series.items()
            }
            args = _where_args(series, query)
            if query.limit is not None:  # sort the narrow index, then read only what is kept
                sql = (
                    f"{_SELECT} WHERE id IN (SELECT id FROM usage_records{_WHERE}"
                    " ORDER BY ts, id LIMIT ?) ORDER BY ts, id"
                )
                args = (*args, query.limit)
            elif self._scan_whole(conn, args):
                sql = f"{_SELECT} INDEXED BY {_pk_index(conn)}{_WHERE} ORDER BY ts, id"
            else:
                sql = f"{_SELECT}{_WHERE} ORDER BY ts, id"
            cursor = conn.execute(sql, args)
            while chunk := cursor.fetchmany(_CHUNK):
                for rid, sid, units, ts, md, src in chunk:
                    yield RecordRow(rid, *keys[sid], units, ts, md, src)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    @staticmethod
    def _scan_whole(conn: sqlite3.Connection, args: tuple[Any, ...]) -> bool:
        """Whether reading the whole table in key order costs less than one index look-up per
        matching record: the matching records are many, and a large share of the table."""
        matching = conn.execute(_COUNT + _WHERE, args).fetchone()[0]
        if matching < _SCAN_AT_LEAST:
            return False
        total = conn.execute(_COUNT).fetchone()[0]
        return bool(matching * _LOOKUP_COST >= total)

    def purge_metric(self, metric_key: str, org_id: str | None) -> int:
        """Delete every record and summary of a metric; return the records deleted."""
        with self._write() as conn:
            series = self._matching_series(conn, metric_key, org_id, None, None)
            sjson = json.dumps(sorted(series))
            where = "series_id IN (SELECT value FROM json_each(?))"
            deleted = conn.execute(f"DELETE FROM usage_records WHERE {where}", (sjson,)).rowcount
            conn.execute(f"DELETE FROM summaries WHERE {where}", (sjson,))
            conn.execute(f"DELETE FROM dirty WHERE {where}", (sjson,))
            corrections.forget_metric(conn, metric_key, org_id)
            conn.execute(
                "DELETE FROM series WHERE id IN (SELECT value FROM json_each(?))", (sjson,)
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('series_purges', '1') ON CONFLICT (key)"
                " DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
        self._series = {k: v for k, v in self._series.items() if v not in series}
        return int(deleted)

    # -- corrections ------------------------------------------------------------------
    def correct(self, request: CorrectionRequest, not_before: int) -> tuple[CorrectionRow, bool]:
        """Cancel or amend a stored record with its audit row, in one transaction (see the
        UsageStore port and :mod:`tsmeter.adapters.sqlite.corrections`)."""
        with self._write() as conn:
            return corrections.correct(conn, request, not_before)

    def list_corrections(self, query: CorrectionQuery) -> list[CorrectionRow]:
        """The corrections ``query`` asks for, oldest first."""
        with self._read() as conn:
            return corrections.list_corrections(conn, query)

    # -- summaries --------------------------------------------------------------------
    def rollup(
        self,
        period: PeriodType,
        calendar: Calendar,
        start: int | None = None,
        end: int | None = None,
    ) -> RollupStats:
        """Bring summaries of ``period`` up to date (see the port)."""
        overflowed: set[int] = set()
        try:
            with self._write() as conn:
                stats: RollupStats = rollups.rollup(conn, period, calendar, start, end, overflowed)
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"aggregation in {self.path!r} failed: {exc}") from exc
        if overflowed:  # the other series' summaries are written; reads of these fail alone
            with self._read() as conn:
                keys = self._series_keys(conn, overflowed)
            raise SeriesError.naming(keys, f"{OVERFLOW}; the other series' summaries were written")
        return stats

    def summaries(self, query: SummaryQuery, calendar: Calendar) -> list[SummaryRow]:
        """Fresh summaries: stored where nothing arrived since, recomputed from raw where it did."""
        period, tz = query.period_type, calendar.timezone
        with self._read() as conn:
            conn.execute("BEGIN")  # one consistent snapshot for every read below
            try:
                series = self._matching_series(
                    conn, query.metric_key, query.org_id, query.subject_type, query.subject_id
                )
                if not series:
                    return []
                sjson = json.dumps(sorted(series))
                mark = rollups.watermark(conn, period, calendar)
                if mark is None:  # never aggregated in this zone: everything is fresh from raw
                    edges = calendar.boundaries(period, query.start, query.end)
                    touched = {(a, b): set(series) for a, b in pairwise(edges)}
                else:
                    touched = rollups.touched_periods(
                        conn, period, calendar, mark, rollups.log_position(conn), series
                    )
                found: dict[tuple[int, int], tuple[Any, ...]] = {}
                for values in conn.execute(
                    "SELECT series_id, period_start, period_end, cnt, total, min, max, last_ts,"
                    " last_value FROM summaries WHERE period_type = ? AND tz = ?"
                    " AND series_id IN (SELECT value FROM json_each(?))"
                    " AND period_start < ? AND period_end > ?",
                    (period.value, tz, sjson, query.end, query.start),
                ):
                    found[(values[0], values[1])] = values
                touched = {
                    (a, b): sids for (a, b), sids in touched.items()
                    if a < query.end and b > query.start
                }  # fmt: skip
                for (start, _end), sids in touched.items():
                    for sid in sids:
                        found.pop((sid, start), None)
                for _span, _series, rows in rollups.compute_touched(
                    conn, period, calendar, touched, from_raw=True
                ):
                    for values in rows:
                        found[(values[0], values[1])] = values
            finally:
                conn.execute("COMMIT")
        out, failed = [], []
        for values in sorted(found.values(), key=lambda v: (v[1], series[v[0]])):
            st, si = series[values[0]]
            key = (query.metric_key, st, si, query.org_id)
            if not rollups.finite(values):
                failed += [] if key in failed else [key]
                continue
            out.append(SummaryRow(*key, *values[1:]))
        if failed:  # only these series fail; the others' summaries travel with the error
            out = [row for row in out if row[:4] not in failed]
            raise SeriesError.naming(failed, OVERFLOW, out)
        return out

    def _series_keys(self, conn: sqlite3.Connection, ids: set[int]) -> list[SeriesKey]:
        """The (metric, subject type, subject id, org) of series ids."""
        rows = conn.execute(
            "SELECT metric_key, subject_type, subject_id, org_key FROM series"
            " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY metric_key, subject_id",
            (json.dumps(sorted(ids)),),
        ).fetchall()
        return [(m, st, si, org or None) for m, st, si, org in rows]

    # -- catalog ----------------------------------------------------------------------
    def add_metric(self, metric: MetricDefinition) -> None:
        """Store a new metric; ConflictError if its key exists in its org scope."""
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO metrics (id, org_key, key, doc) VALUES (?, ?, ?, ?)",
                    (metric.id, metric.org_id or "", metric.key, metric.model_dump_json()),
                )
        except sqlite3.IntegrityError:
            scope = f"org {metric.org_id!r}" if metric.org_id else "the global scope"
            raise ConflictError(f"metric {metric.key!r} already exists in {scope}") from None

    def replace_metric(self, metric: MetricDefinition) -> None:
        """Overwrite a stored metric (same id)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE metrics SET doc = ? WHERE id = ?", (metric.model_dump_json(), metric.id)
            )

    def remove_metric(self, metric_id: str) -> None:
        """Delete a metric definition by id."""
        with self._write() as conn:
            conn.execute("DELETE FROM metrics WHERE id = ?", (metric_id,))

    def find_metric(self, key: str, org_id: str | None) -> MetricDefinition | None:
        """The metric with this key in exactly this org scope."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT doc FROM metrics WHERE org_key = ? AND key = ?", (org_id or "", key)
            ).fetchone()
        return None if row is None else MetricDefinition.model_validate_json(row[0])

    def list_metrics(self) -> list[MetricDefinition]:
        """Every metric, ordered by org then key."""
        with self._read() as conn:
            rows = conn.execute("SELECT doc FROM metrics ORDER BY org_key, key").fetchall()
        return [MetricDefinition.model_validate_json(r[0]) for r in rows]

    def add_threshold(self, threshold: UsageThreshold) -> None:
        """Store a new threshold."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO thresholds (id, doc) VALUES (?, ?)",
                (threshold.id, threshold.model_dump_json()),
            )

    def replace_threshold(self, threshold: UsageThreshold) -> None:
        """Overwrite a stored threshold (same id)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE thresholds SET doc = ? WHERE id = ?",
                (threshold.model_dump_json(), threshold.id),
            )

    def remove_threshold(self, threshold_id: str) -> bool:
        """Delete a threshold; False if there was none."""
        with self._write() as conn:
            return conn.execute("DELETE FROM thresholds WHERE id = ?", (threshold_id,)).rowcount > 0

    def get_threshold(self, threshold_id: str) -> UsageThreshold | None:
        """The threshold with this id, or None."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT doc FROM thresholds WHERE id = ?", (threshold_id,)
            ).fetchone()
        return None if row is None else UsageThreshold.model_validate_json(row[0], context=STORED)

    def list_thresholds(self) -> list[UsageThreshold]:
        """Every threshold, oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT doc FROM thresholds ORDER BY rowid").fetchall()
        return [UsageThreshold.model_validate_json(r[0], context=STORED) for r in rows]

    # -- alerts -----------------------------------------------------------------------
    def open_alert(
        self, alert: UsageAlert, window_start: int, deliveries: Sequence[DeliveryRow] = ()
    ) -> bool:
        """Store a new alert unless one is open, or was resolved by hand, for its key; queue
        its ``deliveries`` in the same transaction (a batch of one)."""
        return self.open_alert_batch([AlertOpening(alert, window_start, deliveries)])[0]

    def set_alert_status(
        self,
        alert_id: str,
        status: AlertStatus,
        at: datetime,
        *,
        automatic: bool = False,
        deliveries: Sequence[DeliveryRow] = (),
    ) -> UsageAlert | None:
        """Acknowledge or resolve an alert, queueing ``deliveries`` in the same transaction;
        the updated alert, or None if there is none."""
        field = "acknowledged_at" if status is AlertStatus.ACKNOWLEDGED else "resolved_at"
        with self._write() as conn:
            row = conn.execute("SELECT doc FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                return None
            alert = UsageAlert.model_validate_json(row[0])
            alert = alert.model_copy(update={"status": status, field: at})
            conn.execute(
                "UPDATE alerts SET status = ?, automatic = ?, doc = ? WHERE id = ?",
                (status.value, int(automatic), alert.model_dump_json(), alert_id),
            )
            _queue(conn, deliveries)
        return alert

    def open_alert_batch(self, openings: Sequence[AlertOpening]) -> list[bool]:
        """:meth:`open_alert` for each of ``openings``, in one transaction: the keys that block
        are read once per (threshold, window), not once per alert."""
        if not openings:
            return []
        stored: list[bool] = []
        rows: list[tuple[Any, ...]] = []
        queued: list[DeliveryRow] = []
        now = time.time_ns()
        with self._write() as conn:
            blocked: dict[tuple[str, int], set[tuple[str, str, str]]] = {}
            ids: set[str] = set()  # an alert id twice in the batch is stored once
            for alert, window_start, deliveries in openings:
                family = (alert.threshold_id, window_start)
                taken = blocked.get(family)
                if taken is None:
                    taken = blocked[family] = {
                        (st, si, level) for st, si, level in conn.execute(
                            "SELECT subject_type, subject_id, level FROM alerts"
                            " WHERE threshold_id = ? AND window_start = ?"
                            " AND (status != 'RESOLVED' OR automatic = 0)",
                            family,
                        )
                    }  # fmt: skip
                key = (alert.subject_type, alert.subject_id, alert.level)
                if key in taken or alert.id in ids:
                    stored.append(False)
                    continue
                taken.add(key)
                ids.add(alert.id)
                stored.append(True)
                created = to_ns(alert.created_at) if alert.created_at else now
                rows.append((alert.id, alert.threshold_id, *key[:2], window_start, key[2],
                             alert.status.value, created, alert.model_dump_json()))  # fmt: skip
                queued.extend(deliveries)
            conn.executemany(
                "INSERT INTO alerts (id, threshold_id, subject_type, subject_id, window_start,"
                " level, status, created_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            _queue(conn, queued)
        return stored

    def resolve_alert_batch(
        self, resolutions: Sequence[AlertResolution]
    ) -> list[UsageAlert | None]:
        """Resolve the alerts of ``resolutions`` that are still open (by the monitor), queueing
        their deliveries, in one transaction; None for the others."""
        out: list[UsageAlert | None] = []
        updates: list[tuple[str, str]] = []
        queued: list[DeliveryRow] = []
        if not resolutions:
            return out
        with self._write() as conn:
            docs = dict(
                conn.execute(
                    "SELECT id, doc FROM alerts WHERE status != 'RESOLVED'"
                    " AND id IN (SELECT value FROM json_each(?))",
                    (json.dumps([r.alert_id for r in resolutions]),),
                ).fetchall()
            )
            for alert_id, at, deliveries in resolutions:
                doc = docs.pop(alert_id, None)
                if doc is None:  # unknown, resolved already, or twice in the batch
                    out.append(None)
                    continue
                alert = UsageAlert.model_validate_json(doc)
                alert = alert.model_copy(update={"status": AlertStatus.RESOLVED, "resolved_at": at})
                out.append(alert)
                updates.append((alert.model_dump_json(), alert_id))
                queued.extend(deliveries)
            conn.executemany(
                "UPDATE alerts SET status = 'RESOLVED', automatic = 1, doc = ? WHERE id = ?",
                updates,
            )
            _queue(conn, queued)
        return out

    def open_alerts(self, threshold_id: str, window_start: int) -> list[UsageAlert]:
        """The alerts of a threshold and window that are not resolved."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT doc FROM alerts WHERE threshold_id = ? AND window_start = ?"
                " AND status != 'RESOLVED' ORDER BY created_at",
                (threshold_id, window_start),
            ).fetchall()
        return [UsageAlert.model_validate_json(r[0]) for r in rows]

    def get_alert(self, alert_id: str) -> UsageAlert | None:
        """The alert with this id, or None."""
        with self._read() as conn:
            row = conn.execute("SELECT doc FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else UsageAlert.model_validate_json(row[0])

    def list_alerts(self, status: AlertStatus | None = None) -> list[UsageAlert]:
        """Alerts (optionally of one status), newest first."""
        with self._read() as conn:
            if status is None:
                rows = conn.execute("SELECT doc FROM alerts ORDER BY created_at DESC, id DESC")
            else:
                rows = conn.execute(
                    "SELECT doc FROM alerts WHERE status = ? ORDER BY created_at DESC, id DESC",
                    (status.value,),
                )
            return [UsageAlert.model_validate_json(r[0]) for r in rows.fetchall()]

    # -- metering events --------------------------------------------------------------
    def append_events(self, events: Sequence[EventRow]) -> None:
        """Store metering events."""
        if not events:
            return
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO metering_events (ts, name, metric_key, subject_type, subject_id,"
                " org_key, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.ts,
                        e.name,
                        e.metric_key,
                        e.subject_type,
                        e.subject_id,
                        e.org_id or "",
                        e.data,
                    )
                    for e in events
                ],
            )

    def list_events(
        self, start: int | None = None, end: int | None = None, name: str | None = None
    ) -> list[EventRow]:
        """Events in ``[start, end)``, optionally of one name or name family, oldest first."""
        sql = (
            "SELECT ts, name, metric_key, subject_type, subject_id, org_key, data"
            " FROM metering_events WHERE ts >= ? AND ts < ?"
        )
        args: list[Any] = [start if start is not None else -(2**63), end if end is not None
                           else 2**63 - 1]  # fmt: skip
        if name is not None:
            sql += " AND (name = ? OR substr(name, 1, ?) = ?)"
            args += [name, len(name) + 1, name + "."]
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY ts, seq", args).fetchall()
        return [EventRow(ts, n, mk, st, si, org or None, data) for ts, n, mk, st, si, org, data
                in rows]  # fmt: skip

    # -- API keys (the KeyStore port) -------------------------------------------------
    _KEY_COLUMNS = "SELECT id, name, scopes, secret_hash, created_at, revoked_at FROM api_keys"

    def add_key(self, row: ApiKeyRow) -> None:
        """Store a new API key; ConflictError if its id exists."""
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO api_keys (id, name, scopes, secret_hash, created_at, revoked_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (row.id, row.name, row.scopes, row.secret_hash, row.created_at,
                     row.revoked_at),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            raise ConflictError(f"API key {row.id!r} already exists") from None

    def get_key(self, key_id: str) -> ApiKeyRow | None:
        """The API key with this id, or None."""
        with self._read() as conn:
            found = conn.execute(self._KEY_COLUMNS + " WHERE id = ?", (key_id,)).fetchone()
        return None if found is None else _key_row(found)

    def list_keys(self) -> list[ApiKeyRow]:
        """Every API key, oldest first."""
        with self._read() as conn:
            rows = conn.execute(self._KEY_COLUMNS + " ORDER BY created_at, id").fetchall()
        return [_key_row(r) for r in rows]

    def revoke_key(self, key_id: str, at: int) -> ApiKeyRow | None:
        """Revoke an API key at ``at`` (kept if revoked before); the key now, or None."""
        with self._write() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                (at, key_id),
            )
            found = conn.execute(self._KEY_COLUMNS + " WHERE id = ?", (key_id,)).fetchone()
        return None if found is None else _key_row(found)

    # -- dimension values (the DimensionValues port) -----------------------------------
    def admit(self, metric_id: str, name: str, values: Collection[str], limit: int) -> set[str]:
        """Admit the values of a metric's open dimension, at most ``limit`` (see the port)."""
        with self._write() as conn:
            return dimensions.admit(conn, metric_id, name, values, limit)

    def known(self, metric_id: str, name: str) -> set[str]:
        """The values of a metric's open dimension admitted so far."""
        with self._read() as conn:
            return dimensions.known(conn, metric_id, name)


def _key_row(values: tuple[Any, ...]) -> ApiKeyRow:
    key_id, name, scopes, secret_hash, created_at, revoked_at = values
    return ApiKeyRow(key_id, name, scopes, bytes(secret_hash), created_at, revoked_at)


def _where_args(series: dict[int, Any], query: RecordQuery) -> tuple[Any, ...]:
    """The arguments of ``_WHERE``: the series ids, and the time range clamped to what
    SQLite's signed 64-bit integers hold."""
    lo = max(_MIN_TS, query.start) if query.start is not None else _MIN_TS
    hi = min(_MAX_TS, query.end) if query.end is not None else _MAX_TS
    return json.dumps(sorted(series)), lo, hi


def _pk_index(conn: sqlite3.Connection) -> str:
    """The name of the index that is the records table itself (its primary key)."""
    for row in conn.execute("PRAGMA index_list(usage_records)"):
        if row[3] == "pk":
            return str(row[1])
    raise StorageUnavailableError("the usage_records table has no primary key index")


def _bad_units(rows: Sequence[RecordRow]) -> ValidationError:
    """The error for rows of which one's quantity is not an integer of units in 64 bits."""
    for n, r in enumerate(rows):
        if type(r.quantity) is not int or not -MAX_UNITS <= r.quantity <= MAX_UNITS:
            return ValidationError(
                f"records[{n}].quantity",
                f"must be an integer of units within ±{MAX_UNITS}, got {r.quantity!r}",
            )
    return ValidationError("records", "a quantity is not an integer of units")


def _queue(conn: sqlite3.Connection, deliveries: Sequence[DeliveryRow]) -> None:
    """Queue notifications inside the caller's transaction; one already queued for the same
    (alert, event, channel, target) stays as it is."""
    now = time.time_ns()
    conn.executemany(
        "INSERT INTO notify_deliveries (id, alert_id, event, channel, target, metric_key,"
        " subject_type, subject_id, payload, status, last_error, next_attempt_at, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [(d.id, d.alert_id, d.event, d.channel, d.target, d.metric_key, d.subject_type,
          d.subject_id, d.payload, "failed" if d.error else "pending", d.error, now, now, now)
         for d in deliveries],
    )  # fmt: skip
