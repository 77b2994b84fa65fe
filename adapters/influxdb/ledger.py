"""The id ledger: which record ids this host sent to an InfluxDB database, and where.

InfluxDB has no index on a field, so "is record id X stored?" cannot be asked
of the server cheaply. The ledger answers it locally: before a batch is
written, its ids and their (series, time) go into a SQLite table (the state
store's file, shared by the processes of the host). A later record with a
known id is a duplicate if the server holds that id where the ledger says, and
is written (again) if an earlier write never landed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence

from tsmeter.adapters.embedded.schema import open_wal
from tsmeter.adapters.embedded.store import insert_many
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError

__all__ = ["IdLedger"]

_DDL = """
CREATE TABLE IF NOT EXISTS influx_ledger (
    target TEXT NOT NULL,        -- base URL and database
    id TEXT NOT NULL,
    metric_key TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    org_key TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (target, id)
) WITHOUT ROWID
"""


class IdLedger:
    """Record ids sent to one InfluxDB target, kept in a SQLite file."""

    def __init__(self, path: str, target: str) -> None:
        self.target = target
        try:
            self._conn = open_wal(path)
            self._conn.execute(_DDL)
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"cannot open the id ledger {path!r}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def known(self, ids: Iterable[str]) -> dict[str, RecordRow]:
        """Where each known id was sent: a row with its series and time (quantity unknown)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, metric_key, subject_type, subject_id, org_key, ts FROM influx_ledger"
                " WHERE target = ? AND id IN (SELECT value FROM json_each(?))",
                (self.target, json.dumps(list(ids))),
            ).fetchall()
        return {
            rid: RecordRow(rid, mk, st, si, org or None, 0.0, ts, None, None)
            for rid, mk, st, si, org, ts in rows
        }

    def add(self, rows: Sequence[RecordRow]) -> None:
        """Remember that ``rows`` are being sent (their location replaces an older one)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                target = self.target
                insert_many(
                    self._conn,
                    "INSERT OR REPLACE INTO influx_ledger (target, id, metric_key, subject_type,"
                    " subject_id, org_key, ts)",
                    7,
                    [(target, r[0], r[1], r[2], r[3], r[4] or "", r[6]) for r in rows],
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StorageUnavailableError(f"the id ledger failed: {exc}") from exc

    def forget_series(self, metric_key: str, org_id: str | None) -> None:
        """Drop the entries of a purged metric."""
        with self._lock:
            self._conn.execute(
                "DELETE FROM influx_ledger WHERE target = ? AND metric_key = ? AND org_key = ?",
                (self.target, metric_key, org_id or ""),
            )
