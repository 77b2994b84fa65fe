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

Adds of ids at least CLUSTERED per block (tsmeter's own are time-ordered, a
client's numbered ids lie near each other) whose range in the index is empty go
to blocks (``influx_id_blocks``): one row per block of ids that differ only in
their last two characters, its entries packed in a blob, since a B-tree insert
per id was a large share of the delivering process's CPU. Other adds whose ids
lie together in the index go straight into it (``influx_ids``); the rest, such
as UUIDv4 ids from a client, are written in the order they come to a log
(``influx_ids_log``), which is moved into the index in sorted batches of
MERGE_ROWS, since random ids inserted straight into the index touch a page per
record at each commit (figures in docs/benchmarks/RESULTS.md). A
lookup reads the blocks, the index and the log, the newest last: an add goes to
blocks only while none of its ids is in the index or the log, so an id's entry
there is newer than any in its block, and a block's later entries are newer
than its earlier ones. Each ledger keeps the log's entries in
memory (at most MERGE_ROWS), its own as it adds them and other processes' read
from where it last read (``writer`` tells them apart), and starts over after a
merge.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import struct
import threading
from collections.abc import Iterable, Sequence
from itertools import chain, groupby, repeat
from operator import itemgetter

from tsmeter.adapters.sqlite.schema import open_wal
from tsmeter.adapters.sqlite.store import insert_many
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError

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
CREATE TABLE IF NOT EXISTS influx_ids_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target_no INTEGER NOT NULL,
    id TEXT NOT NULL,
    series_no INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    writer INTEGER NOT NULL           -- the IdLedger that added it
);
CREATE TABLE IF NOT EXISTS influx_id_blocks (
    target_no INTEGER NOT NULL,
    block TEXT NOT NULL,              -- its ids without their last two characters
    n INTEGER NOT NULL,               -- entries in it (an id sent again has one more)
    entries BLOB NOT NULL,            -- packed (see _ENTRY), in the order they were added
    PRIMARY KEY (target_no, block)
);
CREATE TABLE IF NOT EXISTS influx_ledger_state (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    merges INTEGER NOT NULL,          -- merges of the log into influx_ids so far
    merged_upto INTEGER NOT NULL      -- the last log entry merged
);
INSERT OR IGNORE INTO influx_ledger_state VALUES (1, 0, 0);
"""

#: rows per INSERT statement: each statement hands the interpreter lock back to the ledger's
#: thread, which can wait milliseconds for it while other threads run; SQLite 3.32 and later
#: take 32,766 parameters per statement, older ones 999
_PER = 1_000 if sqlite3.sqlite_version_info >= (3, 32) else 999 // 5
_Series = tuple[str, str, str, str | None]  # metric key, subject type, subject id, org
#: characters of an id in its block's entry (the rest is the block's name)
_TAIL_CHARS = 2
#: an entry of a block: the id's last characters (their UTF-8 length, then the bytes), the
#: series number and the time
_ENTRY = struct.Struct("<B8sqq")
_BLOCKS_HEAD = "INSERT INTO influx_id_blocks (target_no, block, n, entries) VALUES "
_BLOCKS_TAIL = (
    " ON CONFLICT (target_no, block) DO UPDATE SET n = n + excluded.n,"
    " entries = CAST(entries || excluded.entries AS BLOB)"
)
# the index's entries of the target in an add's id range (counted up to a limit), the
# log's last entry and the last one merged
_STATE = (
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM influx_ids WHERE target_no = ?"
    " AND id BETWEEN ? AND ? LIMIT ?)), (SELECT coalesce(max(seq), 0) FROM"
    " influx_ids_log), merged_upto, merges FROM influx_ledger_state"
)
# the blocks of some names, as one JSON row
_BLOCKS = (
    "SELECT json_group_array(json_array(block, hex(entries))) FROM influx_id_blocks"
    " WHERE target_no = ? AND block IN (SELECT value FROM json_each(?))"
)
_ID = itemgetter(0)  # a row's id
_SERIES = itemgetter(1, 2, 3, 4)  # a row's series: metric key, subject type, subject id, org
_TS = itemgetter(6)  # a row's time
_BLOCK = itemgetter(slice(None, -_TAIL_CHARS))  # an id's block name
_TAIL_OF = itemgetter(slice(-_TAIL_CHARS, None))  # the rest of the id (all of a short one)
_INDEX = "INSERT OR REPLACE INTO influx_ids (target_no, id, series_no, ts)"
_LOG = "INSERT INTO influx_ids_log (target_no, id, series_no, ts, writer)"
_MERGE = (
    "INSERT OR REPLACE INTO influx_ids (target_no, id, series_no, ts) SELECT target_no, id,"
    " series_no, ts FROM influx_ids_log ORDER BY target_no, id, seq"  # the newest last
)
# the log's entries of other writers after a point, with their series
_TAIL = (
    "SELECT (SELECT merges FROM influx_ledger_state), (SELECT coalesce(max(seq), 0) FROM"
    " influx_ids_log), json_group_array(json_array("
    "l.seq, l.id, s.metric_key, s.subject_type, s.subject_id, s.org_key, l.ts))"
    " FROM influx_ids_log l JOIN influx_series s ON s.series_no = l.series_no"
    " WHERE l.seq > ? AND l.target_no = ? AND l.writer != ?"
)
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
    #: log entries (of every target) that are moved into the index together
    MERGE_ROWS = 100_000
    #: an add goes straight into the index when the range its ids span there holds at most
    #: NEAR times as many entries as it has ids (else to the log)
    NEAR = 2
    #: an add that is new to the index goes to blocks when it has at least CLUSTERED ids
    #: per block it touches
    CLUSTERED = 4
    #: a block holding this many entries takes no more (they go to the index)
    BLOCK_ENTRIES = 4_096

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
        # the log's entries of the target, in memory: id -> (log seq, where it was sent)
        self._writer = secrets.randbits(62)
        self._tail: dict[str, tuple[int, RecordRow]] = {}
        self._tail_lock = threading.Lock()
        self._tail_seq = 0  # the log is read up to here
        self._merges = -1  # merges seen (-1: read the whole log next time)
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
        with self._tail_lock:
            self._tail.clear()
            self._merges = -1

    def close(self) -> None:
        """Close the file."""
        with self._lock:
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
        ids = ids if type(ids) is list else list(ids)
        if not ids:
            return {}
        span = (min(ids), max(ids))  # from the list: a set's order makes this much slower
        with self._read_lock:
            self._reader.execute("BEGIN")  # the log and the index as of one moment
            try:
                self._catch_up()
                found = self._in_blocks(ids)
                found.update(self._indexed(ids, span))  # newer than the blocks' entries
            finally:
                self._reader.execute("COMMIT")
        with self._tail_lock:  # the log's entries are newer than the index's
            tail = self._tail
            if tail:
                for rid in (tail.keys() & ids) if len(tail) < len(ids) else ids:
                    hit = tail.get(rid)
                    if hit is not None:
                        found[rid] = hit[1]
        return found

    def _catch_up(self) -> None:
        """Read the log's entries that other writers added since the last read (all of them,
        after a merge), inside the reader's transaction."""
        with self._tail_lock:
            after, seen = (self._tail_seq, self._merges)
        merges, top, found = self._reader.execute(
            _TAIL, (after, self._target_no, self._writer)
        ).fetchone()
        reset = merges != seen
        if reset:  # a merge since the last read (or none yet): the whole log, own entries too
            merges, top, found = self._reader.execute(_TAIL, (0, self._target_no, -1)).fetchone()
        entries = json.loads(found) if top else []
        with self._tail_lock:
            if self._merges != seen:  # an add merged meanwhile: this read is out of date
                return
            tail = self._tail
            if reset:
                tail.clear()
                self._merges = merges
            for seq, rid, mk, st, si, org, ts in entries:
                held = tail.get(rid)
                if held is None or held[0] < seq:
                    tail[rid] = (seq, RecordRow(rid, mk, st, si, org or None, 0, ts, None, None))
            self._tail_seq = max(self._tail_seq if not reset else 0, top)

    def _in_blocks(self, ids: list[str]) -> dict[str, RecordRow]:
        """``known`` in the blocks (under the reader's lock): each id's last entry there. New
        ids usually fall in blocks that do not exist yet, and nothing is unpacked."""
        names = list(set(map(_BLOCK, ids)))
        (got,) = self._reader.execute(_BLOCKS, (self._target_no, json.dumps(names))).fetchone()
        hits: dict[str, tuple[int, int]] = {}
        blocks = json.loads(got)
        if not blocks:  # the usual case for new ids
            return {}
        asked = set(ids)
        for name, packed in blocks:
            for size, tail, number, ts in _ENTRY.iter_unpack(bytes.fromhex(packed)):
                rid = name + tail[:size].decode()
                if rid in asked:
                    hits[rid] = (number, ts)
        if not hits:
            return {}
        (named,) = self._reader.execute(
            "SELECT json_group_array(json_array(series_no, metric_key, subject_type, subject_id,"
            " org_key)) FROM influx_series WHERE series_no IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted({number for number, _ in hits.values()})),),
        ).fetchone()
        series = {
            number: (mk, st, si, org or None) for number, mk, st, si, org in json.loads(named)
        }
        return {
            rid: RecordRow(rid, *series[number], 0, ts, None, None)
            for rid, (number, ts) in hits.items()
        }

    def _indexed(self, ids: list[str], span: tuple[str, str]) -> dict[str, RecordRow]:
        """``known`` in the index (under the reader's lock); ``span``: the smallest and the
        largest of ``ids``. The set of ``ids`` is built only when an entry was found."""
        hits: list[str] | None = None
        if self._crowded:  # the last ranges were crowded: look every id up for a while
            self._crowded -= 1
        else:
            (near,) = self._reader.execute(
                "SELECT json_group_array(id) FROM (SELECT id FROM influx_ids"
                " WHERE target_no = ? AND id BETWEEN ? AND ? LIMIT ?)",
                (self._target_no, *span, 2 * len(ids) + 1),
            ).fetchone()
            ranged: list[str] = json.loads(near)
            if len(ranged) > 2 * len(ids):  # ids in random order
                self._crowded = self.CROWDED_SKIP
            elif ranged:
                asked = set(ids)
                hits = [rid for rid in ranged if rid in asked]
            else:  # the usual case for new ids
                return {}
        if hits is None:
            hits = list(set(ids))
        if not hits:
            return {}
        (found,) = self._reader.execute(_KNOWN, (self._target_no, json.dumps(hits))).fetchone()
        return {
            rid: RecordRow(rid, mk, st, si, org or None, 0, ts, None, None)
            for rid, mk, st, si, org, ts in json.loads(found)
        }

    def add(self, rows: Sequence[RecordRow]) -> None:
        """Remember that ``rows`` are being sent (their location replaces an older one).

        Ids at least CLUSTERED per block (tsmeter's time-ordered ids, a client's numbered
        ones) go to blocks when the range they span in the index is empty and the log too.
        Else ids that lie together in the index (the range they span holds at most twice
        as many entries) go straight into it, touching few pages, after whatever the log
        holds; others go to the log, which is merged into the index once it holds
        MERGE_ROWS entries. So the log's entries are always newer than the index's, and
        the index's than the blocks'."""
        if not rows:
            return
        with self._lock:
            if len(self._series) > 100_000:  # the series numbers cached
                self._series.clear()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                ids = list(map(_ID, rows))
                near, logged, merged_upto, merges = self._conn.execute(
                    _STATE, (self._target_no, min(ids), max(ids), self.NEAR * len(ids) + 1)
                ).fetchone()
                ordered = near <= self.NEAR * len(ids)  # few of the index's entries among them
                if not near and logged == merged_upto:  # blocks, if they come clustered
                    names = list(map(_BLOCK, ids))
                    blocks = set(names)
                    if len(blocks) * self.CLUSTERED <= len(rows) and not self._full(blocks):
                        self._insert_blocks(rows, ids, names)
                        self._conn.execute("COMMIT")
                        return
                merge = ordered and logged > merged_upto  # the log first: it holds older ones
                if merge:
                    self._merge(logged)
                self._insert(rows, into_log=not ordered)
                if not ordered:  # this transaction's entries are numbered last - n + 1 to last
                    (logged,) = self._conn.execute("SELECT last_insert_rowid()").fetchone()
                    merge = logged - merged_upto >= self.MERGE_ROWS
                    if merge:
                        self._merge(logged)
                with self._tail_lock:  # before the commit: a lookup may follow it at once
                    if merge:
                        self._tail.clear()
                        self._tail_seq, self._merges = logged, merges + 1
                    elif not ordered:
                        self._remember(rows, logged - len(rows) + 1)
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                with self._tail_lock:
                    self._merges = -1  # read the log again
                if isinstance(exc, sqlite3.Error):
                    raise StorageUnavailableError(f"the id ledger failed: {exc}") from exc
                raise

    def _full(self, blocks: set[str]) -> bool:
        """Whether one of these blocks holds BLOCK_ENTRIES entries already (inside ``add``'s
        transaction)."""
        (full,) = self._conn.execute(
            "SELECT count(*) FROM influx_id_blocks WHERE target_no = ? AND n >= ?"
            " AND block IN (SELECT value FROM json_each(?))",
            (self._target_no, self.BLOCK_ENTRIES, json.dumps(list(blocks))),
        ).fetchone()
        return bool(full)

    def _insert_blocks(self, rows: Sequence[RecordRow], ids: list[str], names: list[str]) -> None:
        """Append the entries of ``rows`` (their ``ids`` and block ``names``) to their blocks,
        numbering new series first (inside ``add``'s transaction). Entries are made a column
        at a time; a block's keep the order of ``rows``."""
        numbers = self._numbers(rows)
        tails = list(map(str.encode, map(_TAIL_OF, ids)))
        entries = list(map(_ENTRY.pack, map(len, tails), tails, numbers, map(_TS, rows)))
        order = sorted(range(len(names)), key=names.__getitem__)  # stable: rows' order kept
        params = []
        for name, members in groupby(order, key=names.__getitem__):
            packed = list(map(entries.__getitem__, members))
            params.append((self._target_no, name, len(packed), b"".join(packed)))
        per = _PER // 4  # blocks per statement: each hands the interpreter lock over
        for i in range(0, len(params), per):
            some = params[i : i + per]
            values = ",".join(["(?,?,?,?)"] * len(some))
            self._conn.execute(
                _BLOCKS_HEAD + values + _BLOCKS_TAIL, list(chain.from_iterable(some))
            )

    def _numbers(self, rows: Sequence[RecordRow]) -> list[int]:
        """The series number of each row, numbering new series first (inside ``add``'s
        transaction, in the order they first come)."""
        numbers = self._series
        try:  # usually every series is numbered already: one pass
            return list(map(numbers.__getitem__, map(_SERIES, rows)))
        except KeyError:
            keys = list(map(_SERIES, rows))
            self._number([key for key in dict.fromkeys(keys) if key not in numbers])
            return list(map(numbers.__getitem__, keys))

    def _merge(self, upto: int) -> None:
        """Move the log into the index, sorted by id so the index takes it page by page
        (inside ``add``'s transaction)."""
        self._conn.execute(_MERGE)
        self._conn.execute("DELETE FROM influx_ids_log")
        self._conn.execute(
            "UPDATE influx_ledger_state SET merges = merges + 1, merged_upto = ?", (upto,)
        )

    def _remember(self, rows: Sequence[RecordRow], first: int) -> None:
        """Keep this ledger's own log entries in memory (under the tail's lock); they are the
        newest in the log."""
        seqs = range(first, first + len(rows))
        self._tail.update(zip(map(_ID, rows), zip(seqs, rows, strict=True), strict=True))

    def _insert(self, rows: Sequence[RecordRow], *, into_log: bool) -> None:
        """Write the entries of ``rows`` to the log or the index, numbering new series first
        (inside ``add``'s transaction)."""
        head, row = (_LOG, f"(?,?,?,?,{self._writer})") if into_log else (_INDEX, "(?,?,?,?)")
        # (the writer is this ledger's own number, not input)
        numbers = self._numbers(rows)
        values = list(chain.from_iterable(
            zip(repeat(self._target_no), map(_ID, rows), numbers, map(_TS, rows))
        ))  # fmt: skip
        step = 4 * _PER
        full = len(values) // step * step
        groups = [tuple(values[i : i + step]) for i in range(0, full, step)]
        rest = values[full:]
        if groups:
            self._conn.executemany(f"{head} VALUES {','.join([row] * _PER)}", groups)
        if rest:
            self._conn.execute(f"{head} VALUES {','.join([row] * (len(rest) // 4))}", rest)

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
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                gone = {number for (number,) in self._conn.execute(
                    "SELECT series_no FROM influx_series WHERE target_no = ? AND metric_key = ?"
                    " AND org_key = ?", (self._target_no, metric_key, org_id or ""))}  # fmt: skip
                for table in ("influx_ids", "influx_ids_log"):
                    self._conn.execute(
                        f"DELETE FROM {table} WHERE target_no = ? AND series_no IN (SELECT"
                        " value FROM json_each(?))", (self._target_no, json.dumps(sorted(gone))),
                    )  # fmt: skip
                self._forget_in_blocks(gone)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            with self._tail_lock:
                self._tail.clear()
                self._merges = -1  # read the log again

    def _forget_in_blocks(self, gone: set[int]) -> None:
        """Drop the blocks' entries of the series numbered ``gone`` (inside the caller's
        transaction): every block of the target is read, and those holding any are
        written again."""
        if not gone:
            return
        changed: list[tuple[int, bytes, int, str]] = []
        for name, packed in self._conn.execute(
            "SELECT block, entries FROM influx_id_blocks WHERE target_no = ?", (self._target_no,)
        ):
            entries = list(_ENTRY.iter_unpack(packed))
            kept = [entry for entry in entries if entry[2] not in gone]
            if len(kept) < len(entries):
                changed.append((len(kept), b"".join(_ENTRY.pack(*e) for e in kept),
                                self._target_no, name))  # fmt: skip
        self._conn.executemany(
            "UPDATE influx_id_blocks SET n = ?, entries = ? WHERE target_no = ? AND block = ?",
            changed,
        )
        self._conn.execute("DELETE FROM influx_id_blocks WHERE target_no = ? AND n = 0",
                           (self._target_no,))  # fmt: skip
