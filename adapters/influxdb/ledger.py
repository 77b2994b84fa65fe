"""The id ledger: which record ids this host sent to an InfluxDB database, and where.

InfluxDB has no index on a field, so "is record id X stored?" cannot be asked
of the server cheaply. The ledger answers it locally: before a batch is
written, its ids and their (series, time) go into a SQLite table (the state
store's file, shared by the processes of the host). A later record with a
known id is a duplicate if the server holds that id where the ledger says, and
is written (again) if an earlier write never landed.

Entries are kept small, since one is written per record: the target database
and the series are numbered in side tables, so an entry is (target, id,
series number, time).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence

from tsmeter.adapters.embedded.schema import open_wal
from tsmeter.adapters.embedded.store import ROWS_PER_STATEMENT, insert_many
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError
from tsmeter.speedups import native

__all__ = ["IdLedger"]

_DDL = """
CREATE TABLE IF NOT EXISTS influx_targets (
    target_no INTEGER PRIMARY KEY,
    target TEXT NOT NULL UNIQUE       -- base URL and database
);
CREATE TABLE IF NOT EXISTS influx_series (
    series_no INTEGER PRIMARY KEY,
    target_no INTEGER NOT NULL,
    metric_key TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    org_key TEXT NOT NULL,
    UNIQUE (target_no, metric_key, subject_type, subject_id, org_key)
);
CREATE TABLE IF NOT EXISTS influx_ids (
    target_no INTEGER NOT NULL,
    id TEXT NOT NULL,
    series_no INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (target_no, id)
) WITHOUT ROWID;
"""

_Series = tuple[str, str, str, str | None]  # metric key, subject type, subject id, org
_INSERT = "INSERT OR REPLACE INTO influx_ids (target_no, id, series_no, ts)"
_KNOWN = (
    "SELECT i.id, s.metric_key, s.subject_type, s.subject_id, s.org_key, i.ts"
    " FROM influx_ids i JOIN influx_series s ON s.series_no = i.series_no"
    " WHERE i.target_no = ? AND"
)


class IdLedger:
    """Record ids sent to one InfluxDB target, kept in a SQLite file."""

    #: lookups that skip the range read after one found its range crowded
    CROWDED_SKIP = 16

    def __init__(self, path: str, target: str) -> None:
        self._lock = threading.Lock()
        try:
            self._conn = open_wal(path)
            self._conn.executescript(_DDL)
            # lookups get their own connection (WAL readers do not wait for the writer), so
            # the next window's lookup runs while this window's entries are written
            self._reader, self._read_lock = (
                (self._conn, self._lock)
                if path == ":memory:"
                else (open_wal(path), threading.Lock())
            )
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"cannot open the id ledger {path!r}: {exc}") from exc
        self._series: dict[_Series, int] = {}
        self._crowded = 0  # lookups left that skip the range read
        self.target = target

    @property
    def target(self) -> str:
        """The base URL and database the ids were sent to."""
        return self._target

    @target.setter
    def target(self, target: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("INSERT OR IGNORE INTO influx_targets VALUES (NULL, ?)", (target,))
            (self._target_no,) = self._conn.execute(
                "SELECT target_no FROM influx_targets WHERE target = ?", (target,)
            ).fetchone()
        self._target = target
        self._series.clear()

    def close(self) -> None:
        """Close the file."""
        self._conn.close()
        self._reader.close()

    def known(self, ids: Iterable[str]) -> dict[str, RecordRow]:
        """Where each known id was sent: a row with its series and time (quantity unknown).

        The ids entered between the smallest and the largest one asked for are read in key
        order first, and only those asked for are then looked up with their series; when
        the range holds more than twice as many ids as were asked for, every id is looked
        up. Ids made by tsmeter are time-ordered, so a new batch's range is usually empty
        (one seek instead of one per id); a retried batch's holds little more than its own
        ids, and so does a batch of a client's numbered ids ("r-100000" to "r-149999"
        range over "r-10000" to "r-14999" too). Ids in random order fall back to the
        lookups after reading at most twice their number of ids, and the next CROWDED_SKIP
        lookups go straight to them.
        """
        wanted = set(ids)
        if not wanted:
            return {}
        with self._read_lock:
            hits: list[str] = list(wanted)
            if self._crowded:  # the last ranges were crowded: look every id up for a while
                self._crowded -= 1
            else:
                near = self._reader.execute(
                    "SELECT id FROM influx_ids WHERE target_no = ? AND id BETWEEN ? AND ? LIMIT ?",
                    (self._target_no, min(wanted), max(wanted), 2 * len(wanted) + 1),
                ).fetchall()
                if len(near) > 2 * len(wanted):  # ids in random order
                    self._crowded = self.CROWDED_SKIP
                else:
                    hits = [rid for (rid,) in near if rid in wanted]
            if not hits:
                return {}
            rows = self._reader.execute(
                f"{_KNOWN} i.id IN (SELECT value FROM json_each(?))",
                (self._target_no, json.dumps(hits)),
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
                if native is not None and type(rows) is list:
                    self._add_fast(rows)
                else:
                    numbers, number_of = self._series, self._number
                    target = self._target_no
                    entries = []
                    for r in rows:
                        key = (r[1], r[2], r[3], r[4])
                        series = numbers.get(key)
                        if series is None:
                            series = number_of(key)
                        entries.append((target, r[0], series, r[6]))
                    insert_many(self._conn, _INSERT, 4, entries)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StorageUnavailableError(f"the id ledger failed: {exc}") from exc

    def _add_fast(self, rows: list[RecordRow]) -> None:
        """``add`` with the entries made by the compiled fast path (inside its transaction)."""
        assert native is not None
        per = ROWS_PER_STATEMENT
        groups, rest, missing = native.ledger_params(rows, self._series, self._target_no, per)
        while missing:  # number the new series, then make the entries
            for key in missing:
                self._number(key)
            groups, rest, missing = native.ledger_params(rows, self._series, self._target_no, per)
        if groups:
            self._conn.executemany(f"{_INSERT} VALUES {','.join(['(?,?,?,?)'] * per)}", groups)
        if rest:
            self._conn.executemany(f"{_INSERT} VALUES (?,?,?,?)", rest)

    def _number(self, key: _Series) -> int:
        """The series' number (inside the caller's transaction; cached, as numbers never
        change)."""
        stored = (self._target_no, *key[:3], key[3] or "")
        self._conn.execute(
            "INSERT OR IGNORE INTO influx_series"
            " (target_no, metric_key, subject_type, subject_id, org_key) VALUES (?, ?, ?, ?, ?)",
            stored,
        )
        (number,) = self._conn.execute(
            "SELECT series_no FROM influx_series WHERE target_no = ? AND metric_key = ?"
            " AND subject_type = ? AND subject_id = ? AND org_key = ?",
            stored,
        ).fetchone()
        if len(self._series) > 100_000:
            self._series.clear()
        self._series[key] = number
        return int(number)

    def forget_series(self, metric_key: str, org_id: str | None) -> None:
        """Drop the entries of a purged metric (series numbers stay: other processes cache
        them)."""
        with self._lock:
            self._conn.execute(
                "DELETE FROM influx_ids WHERE target_no = ? AND series_no IN (SELECT series_no"
                " FROM influx_series WHERE target_no = ? AND metric_key = ? AND org_key = ?)",
                (self._target_no, self._target_no, metric_key, org_id or ""),
            )
