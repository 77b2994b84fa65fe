"""Corrections on the embedded store: the audit table ``usage_corrections`` and the
statements that cancel or amend a record inside the store's write transaction.

A cancel deletes the record's row and keeps the audit row, whose record id stays known:
:func:`drop_cancelled` takes a cancelled id out of every later ``append`` in the same
transaction, so recording it again counts nothing. An amend rewrites the row's units. Both
log the record's (series, hour) in ``dirty``, exactly as a late record does, so the next
roll-up recomputes its periods and fresh reads recompute them at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from tsmeter.domain import RecordRow
from tsmeter.domain.corrections import CorrectionKind, CorrectionRequest, CorrectionRow
from tsmeter.domain.validation import from_ns
from tsmeter.errors import ConflictError, NotFoundError, ValidationError
from tsmeter.ports import CorrectionQuery

__all__ = ["DDL", "correct", "drop_cancelled", "list_corrections", "window_error"]

_HOUR = 3_600_000_000_000

DDL = """
-- Corrections of stored records (the audit trail): one row per correction id. A cancelled
-- record's row is deleted from usage_records, its id stays here: it is never counted again.
CREATE TABLE IF NOT EXISTS usage_corrections (
    id TEXT PRIMARY KEY,
    record_id TEXT NOT NULL,
    kind TEXT NOT NULL,             -- CANCEL or AMEND
    units_before INTEGER NOT NULL,
    units_after INTEGER NOT NULL,   -- 0 for a cancel
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    corrected_at INTEGER NOT NULL,  -- ns
    metric_key TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    org_key TEXT NOT NULL,
    record_ts INTEGER NOT NULL      -- the record's time, ns
);
CREATE INDEX IF NOT EXISTS usage_corrections_record ON usage_corrections (record_id);
CREATE INDEX IF NOT EXISTS usage_corrections_cancelled ON usage_corrections (record_id)
    WHERE kind = 'CANCEL';
"""

_COLUMNS = (
    "id, record_id, kind, units_before, units_after, actor, reason, corrected_at, metric_key,"
    " subject_type, subject_id, org_key, record_ts"
)


def _row(values: Sequence[Any]) -> CorrectionRow:
    (cid, rid, kind, before, after, actor, reason, at, metric, st, si, org, ts) = values
    return CorrectionRow(cid, rid, CorrectionKind(kind), before, after, actor, reason, at,
                         metric, st, si, org or None, ts)  # fmt: skip


def window_error(record_id: str, record_ts: int, not_before: int) -> ValidationError:
    """The error for a record timed before the correction window (every store says it so)."""
    return ValidationError(
        "recordId",
        f"record {record_id!r} is timed {from_ns(record_ts).isoformat()}, before the correction"
        f" window: records timed from {from_ns(not_before).isoformat()} on can be corrected",
    )


def correct(
    conn: sqlite3.Connection, request: CorrectionRequest, not_before: int
) -> tuple[CorrectionRow, bool]:
    """Apply ``request`` inside the caller's write transaction (see ``UsageStore.correct``)."""
    found = conn.execute(
        f"SELECT {_COLUMNS} FROM usage_corrections WHERE id = ?", (request.id,)
    ).fetchone()
    if found is not None:
        return _row(found), False
    record = conn.execute(
        "SELECT u.units, u.ts, u.series_id, s.metric_key, s.subject_type, s.subject_id,"
        " s.org_key FROM usage_records u JOIN series s ON s.id = u.series_id WHERE u.id = ?",
        (request.record_id,),
    ).fetchone()
    if record is None:
        cancelled = conn.execute(
            f"SELECT {_COLUMNS} FROM usage_corrections WHERE record_id = ? AND kind = 'CANCEL'"
            " ORDER BY corrected_at, id LIMIT 1",
            (request.record_id,),
        ).fetchone()
        if cancelled is None:
            raise NotFoundError(f"record {request.record_id!r} not found")
        if request.kind is CorrectionKind.CANCEL:
            return _row(cancelled), False
        raise ConflictError(
            f"record {request.record_id!r} was cancelled (correction {cancelled[0]!r}):"
            " a cancelled record cannot be amended; record a new one instead"
        )
    units, ts, series_id, metric, subject_type, subject_id, org = record
    if ts < not_before:
        raise window_error(request.record_id, ts, not_before)
    after = 0 if request.kind is CorrectionKind.CANCEL else request.units
    row = CorrectionRow(request.id, request.record_id, request.kind, units, after, request.actor,
                        request.reason, request.at, metric, subject_type, subject_id,
                        org or None, ts)  # fmt: skip
    conn.execute(
        f"INSERT INTO usage_corrections ({_COLUMNS}) VALUES ({', '.join('?' * 13)})",
        (*row[:2], row.kind.value, *row[3:11], org, ts),
    )
    if request.kind is CorrectionKind.CANCEL:
        conn.execute("DELETE FROM usage_records WHERE id = ?", (request.record_id,))
    else:
        conn.execute(
            "UPDATE usage_records SET units = ? WHERE id = ?", (request.units, request.record_id)
        )
    conn.execute("INSERT INTO dirty (series_id, hour) VALUES (?, ?)", (series_id, ts // _HOUR))
    return row, True


def drop_cancelled(conn: sqlite3.Connection, rows: Sequence[RecordRow]) -> int:
    """Delete the rows of an ``append`` (inside its transaction, after its insert) whose id
    was cancelled; return how many. One look-up of the partial index when nothing was ever
    cancelled."""
    if (
        conn.execute("SELECT 1 FROM usage_corrections WHERE kind = 'CANCEL' LIMIT 1").fetchone()
        is None
    ):
        return 0
    return int(conn.execute(
        "DELETE FROM usage_records WHERE id IN (SELECT record_id FROM usage_corrections"
        " WHERE kind = 'CANCEL' AND record_id IN (SELECT value FROM json_each(?)))",
        (json.dumps([r[0] for r in rows]),),
    ).rowcount)  # fmt: skip


def list_corrections(conn: sqlite3.Connection, query: CorrectionQuery) -> list[CorrectionRow]:
    """The corrections ``query`` asks for, oldest first."""
    sql = f"SELECT {_COLUMNS} FROM usage_corrections WHERE 1"
    args: list[Any] = []
    if query.record_id is not None:
        sql += " AND record_id = ?"
        args.append(query.record_id)
    if query.metric_key is not None:
        sql += " AND metric_key = ? AND org_key = ?"
        args += [query.metric_key, query.org_id or ""]
    elif query.org_id is not None:
        sql += " AND org_key = ?"
        args.append(query.org_id)
    if query.start is not None:
        sql += " AND record_ts >= ?"
        args.append(query.start)
    if query.end is not None:
        sql += " AND record_ts < ?"
        args.append(query.end)
    rows = conn.execute(sql + " ORDER BY corrected_at, id", args).fetchall()
    return [_row(values) for values in rows]


def forget_metric(conn: sqlite3.Connection, metric_key: str, org_id: str | None) -> None:
    """Delete the corrections of a purged metric (inside the purge's transaction)."""
    conn.execute(
        "DELETE FROM usage_corrections WHERE metric_key = ? AND org_key = ?",
        (metric_key, org_id or ""),
    )
