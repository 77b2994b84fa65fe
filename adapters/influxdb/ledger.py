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
from tsmeter.adapters.embedded.store import insert_many
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

#: rows per INSERT statement: each statement hands the interpreter lock back to the ledger's
#: thread, which can wait milliseconds for it while other threads run; SQLite 3.32 and later
#: take 32,766 parameters per statement, older ones 999
_PER = 1_000 if sqlite3.sqlite_version_info >= (3, 32) else 999 // 5
_Series = tuple[str, str, str, str | None]  # metric key, subject type, subject id, org
_INSERT = "INSERT OR REPLACE INTO influx_ids (target_no, id, series_no, ts)"
# results come as one JSON row: each row fetched makes the reading thread wait for the
# interpreter lock again, milliseconds each while other threads run
_KNOWN = (
    "SELECT json_group_array(json_array(i.id, s.metric_key, s.subject_type, s.subject_id,"
    " s.org_key, i.ts)) FROM influx_ids i JOIN influx_series s ON s.series_no = i.series_no"
    " WHERE i.target_no = ? AND i.id IN (SELECT value FROM json_each(?))"
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
                (near,) = self._reader.execute(
                    "SELECT json_group_array(id) FROM (SELECT id FROM influx_ids"
                    " WHERE target_no = ? AND id BETWEEN ? AND ? LIMIT ?)",
                    (self._target_no, min(wanted), max(wanted), 2 * len(wanted) + 1),
                ).fetchone()
                ranged: list[str] = json.loads(near)
                if len(ranged) > 2 * len(wanted):  # ids in random order
                    self._crowded = self.CROWDED_SKIP
                else:
                    hits = [rid for rid in ranged if rid in wanted]
            if not hits:
                return {}
            (found,) = self._reader.execute(_KNOWN, (self._target_no, json.dumps(hits))).fetchone()
        return {
            rid: RecordRow(rid, mk, st, si, org or None, 0.0, ts, None, None)
            for rid, mk, st, si, org, ts in json.loads(found)
        }

    def add(self, rows: Sequence[RecordRow]) -> None:
        """Remember that ``rows`` are being sent (their location replaces an older one)."""
        with self._lock:
            if len(self._series) > 100_000:  # the series numbers cached
                self._series.clear()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                if native is not None and type(rows) is list:
                    self._add_fast(rows)
                else:
                    numbers, target = self._series, self._target_no
                    keys = [(r[1], r[2], r[3], r[4]) for r in rows]
                    missing = list(dict.fromkeys(k for k in keys if k not in numbers))
                    if missing:
                        self._number(missing)
                    entries = [(target, r[0], numbers[k], r[6])
                               for r, k in zip(rows, keys, strict=True)]  # fmt: skip
                    insert_many(self._conn, _INSERT, 4, entries, _PER)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StorageUnavailableError(f"the id ledger failed: {exc}") from exc

    def _add_fast(self, rows: list[RecordRow]) -> None:
        """``add`` with the entries made by the compiled fast path (inside its transaction)."""
        assert native is not None
        groups, rest, missing = native.ledger_params(rows, self._series, self._target_no, _PER)
        if missing:  # number the new series, then make the entries
            self._number(missing)
            groups, rest, missing = native.ledger_params(rows, self._series, self._target_no,
                                                         _PER)  # fmt: skip
            assert not missing
        if groups:
            self._conn.executemany(f"{_INSERT} VALUES {','.join(['(?,?,?,?)'] * _PER)}", groups)
        if rest:
            self._conn.execute(f"{_INSERT} VALUES {','.join(['(?,?,?,?)'] * len(rest))}",
                               [value for entry in rest for value in entry])  # fmt: skip

    def _number(self, keys: list[_Series]) -> None:
        """Number new series (inside the caller's transaction) and cache their numbers, which
        never change. A few statements for any number of series: each statement hands the
        interpreter lock to this thread again, which can take milliseconds while others run.
        (CROSS JOIN keeps SQLite's loop over the keys, each found through the unique index.)
        """
        stored = {(*key[:3], key[3] or ""): key for key in keys}
        insert_many(self._conn, "INSERT OR IGNORE INTO influx_series (target_no, metric_key,"
                    " subject_type, subject_id, org_key)", 5,
                    [(self._target_no, *key) for key in stored], _PER // 2)  # fmt: skip
        (found,) = self._conn.execute(  # one row: each row fetched is another hand-over
            "SELECT json_group_array(json_array(s.series_no, s.metric_key, s.subject_type,"
            " s.subject_id, s.org_key)) FROM json_each(?) j CROSS JOIN influx_series s"
            " ON s.target_no = ? AND s.metric_key = json_extract(j.value, '$[0]')"
            " AND s.subject_type = json_extract(j.value, '$[1]')"
            " AND s.subject_id = json_extract(j.value, '$[2]')"
            " AND s.org_key = json_extract(j.value, '$[3]')",
            (json.dumps(list(stored)), self._target_no),
        ).fetchone()
        numbered = json.loads(found)
        for number, *key in numbered:
            self._series[stored[tuple(key)]] = number
        if len(numbered) != len(stored):
            raise sqlite3.DatabaseError(f"{len(stored) - len(numbered)} series were not numbered")

    def forget_series(self, metric_key: str, org_id: str | None) -> None:
        """Drop the entries of a purged metric (series numbers stay: other processes cache
        them)."""
        with self._lock:
            self._conn.execute(
                "DELETE FROM influx_ids WHERE target_no = ? AND series_no IN (SELECT series_no"
                " FROM influx_series WHERE target_no = ? AND metric_key = ? AND org_key = ?)",
                (self._target_no, self._target_no, metric_key, org_id or ""),
            )
