"""PostgresDedupe: the dedupe port on the fleet's PostgreSQL, so an id sent through any host
counts once.

The tables are those of ``sql/0003_dedupe.sql``: one row per (target, id) with its series
number and time, its writer and when it was entered; targets and series are numbered in side
tables, and series numbers, which never change, are cached in memory by each instance.

The store enters a chunk of up to 10,000 ids before writing its points and asks for 2,000
to 50,000 ids before each window, so both go in one round trip of bulk data:

* ``claim`` (the store's ids that the lookup did not find) COPYs the chunk (sorted by id)
  straight into ``dedupe_ids``, inside a savepoint. New ids are the usual case, and a plain
  COPY costs about half of an upsert. When an id is there already (another host claimed it
  since the lookup), the savepoint is rolled back and the chunk goes through a temporary
  staging table and one ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``; the ids it left
  are read back. The next few entries skip the COPY (retries come in runs).
* ``take_over`` (ids found without their point) is one ``INSERT ... ON CONFLICT DO UPDATE
  ... WHERE`` the entry is the writer's own or older than the time a write can take, on the
  database's clock (``entered_at``); ``add`` is the same upsert without the condition.
* ``known`` binds the ids as one ``text[]`` (``id = ANY(...)``) and reads the answer in
  binary.

Each entry keeps a hash of the writer (host) that made it and when. Two hosts entering
overlapping ids take their row locks in the same (id) order, so they wait
for each other rather than deadlock; a deadlock or serialization failure that happens anyway
(a purge running beside an add) is retried a few times.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors

from tsmeter.adapters.postgres.database import StateDatabase
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError, ValidationError

__all__ = ["PostgresDedupe"]

_T = TypeVar("_T")
_Series = tuple[str, str, str, str | None]  # metric key, subject type, subject id, org
_Conn = psycopg.Connection[tuple[Any, ...]]
_Entry = tuple[int, str, int, int, int]  # target, id, series, time, writer

_COPY_IDS = "COPY dedupe_ids (target_no, id, series_no, ts, writer_no) FROM STDIN (FORMAT BINARY)"
_ID_TYPES = ("int4", "text", "int8", "int8", "int8")
# the staging table lives as long as the pooled connection; its rows go at each commit
_STAGE = (
    'CREATE TEMP TABLE IF NOT EXISTS tsmeter_dedupe_stage (id text COLLATE "C" NOT NULL,'
    " series_no bigint NOT NULL, ts bigint NOT NULL, writer_no bigint NOT NULL)"
    " ON COMMIT DELETE ROWS"
)
_COPY_STAGE = "COPY tsmeter_dedupe_stage (id, series_no, ts, writer_no) FROM STDIN (FORMAT BINARY)"
_STAGED = (
    "INSERT INTO dedupe_ids (target_no, id, series_no, ts, writer_no)"
    " SELECT %s, id, series_no, ts, writer_no FROM tsmeter_dedupe_stage ORDER BY id"
    " ON CONFLICT (target_no, id)"
)
_MOVE = (
    " DO UPDATE SET series_no = excluded.series_no, ts = excluded.ts,"
    " writer_no = excluded.writer_no, entered_at = now()"
)
_UPSERT = _STAGED + _MOVE
_CLAIM = _STAGED + " DO NOTHING RETURNING id"
# another writer's entry moves only once its write has ended, whichever way
_TAKE_OVER = (
    _STAGED + _MOVE + " WHERE dedupe_ids.writer_no = %s"
    " OR dedupe_ids.entered_at < now() - make_interval(secs => %s) RETURNING id"
)
_KNOWN = "SELECT id, series_no, ts FROM dedupe_ids WHERE target_no = %s AND id = ANY(%b)"
_NUMBER = (
    "INSERT INTO dedupe_series (target_no, metric_key, subject_type, subject_id, org_key)"
    " SELECT %s, m, t, s, o FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[])"
    " WITH ORDINALITY AS k(m, t, s, o, n) ORDER BY n ON CONFLICT DO NOTHING"
)
_NUMBERED = (
    "SELECT s.series_no, s.metric_key, s.subject_type, s.subject_id, s.org_key"
    " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[]) AS k(m, t, s, o)"
    " JOIN dedupe_series s ON s.target_no = %s AND s.metric_key = k.m"
    " AND s.subject_type = k.t AND s.subject_id = k.s AND s.org_key = k.o"
)
_SERIES_OF = (
    "SELECT series_no, metric_key, subject_type, subject_id, org_key FROM dedupe_series"
    " WHERE series_no = ANY(%b::bigint[])"
)
_FORGET = (
    "DELETE FROM dedupe_ids WHERE target_no = %s AND series_no IN (SELECT series_no FROM"
    " dedupe_series WHERE target_no = %s AND metric_key = %s AND org_key = %s)"
)
_ID = itemgetter(0)  # a row's id
_SERIES = itemgetter(1, 2, 3, 4)  # a row's series: metric key, subject type, subject id, org
_TS = itemgetter(6)  # a row's time
#: errors after which a transaction may simply be run again
_TRANSIENT = (pgerrors.DeadlockDetected, pgerrors.SerializationFailure)


class PostgresDedupe:
    """Record ids sent to ``target`` (a base URL and database), kept in the state database
    ``db``, which the caller opened and closes (it is shared by the PostgreSQL adapters).

    Example: ``PostgresDedupe(StateDatabase(url), transport.target)``.
    """

    #: claims are atomic in the database: hosts need no lock in common
    shared = True

    #: times a transaction is tried when it ends in a deadlock or serialization failure
    ATTEMPTS = 5
    #: adds that skip the plain COPY after one found an id there already (retries come in runs)
    UPSERT_RUN = 4
    #: series cached before the cache starts over
    SERIES_CACHED = 200_000

    def __init__(self, db: StateDatabase, target: str) -> None:
        self._db = db
        self.target = target
        self._closed = False
        self._lock = threading.Lock()  # the series cache
        self._numbers: dict[_Series, int] = {}
        self._keys: dict[int, _Series] = {}
        self._upserts = 0  # adds left that go straight to the upsert
        _check_text("target", [target])

        def number_target(conn: _Conn) -> int:
            conn.execute(
                "INSERT INTO dedupe_targets (target) VALUES (%s) ON CONFLICT (target) DO NOTHING",
                (target,),
            )
            found = conn.execute(
                "SELECT target_no FROM dedupe_targets WHERE target = %s", (target,)
            ).fetchone()
            if found is None:
                raise StorageUnavailableError(f"state store {db.where}: target not numbered")
            number: int = found[0]
            return number

        self._target_no = self._retrying("cannot number the target", number_target)

    def known(self, ids: Iterable[str]) -> dict[str, RecordRow]:
        """Where each known id was sent (see the port); the quantity is not kept."""
        self._open()
        asked = [rid for rid in ids if "\x00" not in rid]  # no text holds NUL: never stored
        if not asked:
            return {}
        with self._db.transaction() as conn, conn.cursor(binary=True) as cur:
            cur.execute(_KNOWN, (self._target_no, asked))
            found: list[tuple[str, int, int]] = cur.fetchall()
        return self._located(found)

    def claim(self, rows: Sequence[RecordRow], writer: str) -> dict[str, RecordRow]:
        """Remember the ids of ``rows`` that no host has sent (the first row of an id
        counts), entered by ``writer``; return where the others were sent, as one host
        claimed them first.

        All new, the usual case, costs what ``add`` costs: one COPY. Else ``INSERT ... ON
        CONFLICT DO NOTHING`` inserts the new ones (an id another transaction is inserting
        waits for it to end) and the ids it did not insert are read back in a statement of
        their own, which sees the rows of the transactions that won."""
        self._open()
        if not rows:
            return {}
        if len({row.id for row in rows}) < len(rows):  # an id twice: its first row counts
            rows = list({row.id: row for row in reversed(rows)}.values())
        entries = self._entries(rows, _writer_no(writer))

        def claim(conn: _Conn) -> list[tuple[str, int, int]]:
            if self._copied(conn, entries):
                return []
            return self._staged(conn, entries, _CLAIM, (self._target_no,))

        return self._located(self._retrying("cannot claim ids", claim))

    def take_over(
        self, rows: Sequence[RecordRow], writer: str, after_s: float
    ) -> dict[str, RecordRow]:
        """Move ids to the rows' locations (the last row of an id counts) where ``writer``
        entered them or they were entered more than ``after_s`` seconds ago on the
        database's clock; return where the others are (see the port). One ``INSERT ... ON
        CONFLICT DO UPDATE ... WHERE``: of writers taking one id over at once, one does."""
        self._open()
        if not rows:
            return {}
        if len({row.id for row in rows}) < len(rows):
            rows = list({row.id: row for row in rows}.values())
        number = _writer_no(writer)
        entries = self._entries(rows, number)

        def take(conn: _Conn) -> list[tuple[str, int, int]]:
            return self._staged(conn, entries, _TAKE_OVER, (self._target_no, number, after_s))

        return self._located(self._retrying("cannot take ids over", take))

    def add(self, rows: Sequence[RecordRow]) -> None:
        """Remember that ``rows`` are being sent, each id at its series and time; the last row
        of an id in ``rows`` wins, and so does this add over an earlier one (see the port)."""
        self._open()
        if not rows:
            return
        if len({row.id for row in rows}) < len(rows):  # an id twice: its last row counts
            rows = list({row.id: row for row in rows}.values())
        entries = self._entries(rows, 0)

        def write(conn: _Conn) -> None:
            if self._copied(conn, entries):
                return
            with conn.cursor() as cur:
                cur.execute(_STAGE)
                _copy(cur, _COPY_STAGE, _ID_TYPES[1:], [entry[1:] for entry in entries])
                cur.execute(_UPSERT, (self._target_no,))

        self._retrying("cannot add ids", write)

    def forget_series(self, metric_key: str, org_id: str | None) -> None:
        """Forget every id sent to a metric of one org scope (series numbers stay: other
        instances cache them)."""
        self._open()
        _check_text("metric_key", [metric_key, org_id or ""])

        def forget(conn: _Conn) -> None:
            conn.execute(_FORGET, (self._target_no, self._target_no, metric_key, org_id or ""))

        self._retrying("cannot forget ids", forget)

    def close(self) -> None:
        """Stop using the state database (which stays open for the other adapters)."""
        self._closed = True

    # -- helpers ----------------------------------------------------------------------
    def _entries(self, rows: Sequence[RecordRow], writer_no: int) -> list[_Entry]:
        """The entries of ``rows`` (one per id), sorted by id: the one order every host
        locks rows in."""
        _check_text("id", ["".join(map(_ID, rows))])
        rows = sorted(rows, key=_ID)
        return list(zip(repeat(self._target_no), map(_ID, rows), self._series_numbers(rows),
                        map(_TS, rows), repeat(writer_no), strict=False))  # fmt: skip

    def _staged(
        self, conn: _Conn, entries: list[_Entry], statement: str, params: tuple[object, ...]
    ) -> list[tuple[str, int, int]]:
        """Stage ``entries`` and run ``statement`` (an insert from the stage returning the ids
        it entered); return the (id, series number, time) of those it left, read in a
        statement of its own (it sees what the transactions that won committed)."""
        lost: list[tuple[str, int, int]] = []
        rest = entries
        with conn.cursor(binary=True) as cur:
            cur.execute(_STAGE)
            for _ in range(self.ATTEMPTS):  # again for ids purged between the statements
                _copy(cur, _COPY_STAGE, _ID_TYPES[1:], [entry[1:] for entry in rest])
                cur.execute(statement, params)
                entered = {rid for (rid,) in cur.fetchall()}
                others = [entry[1] for entry in rest if entry[1] not in entered]
                if not others:
                    return lost
                cur.execute(_KNOWN, (self._target_no, others))
                found: list[tuple[str, int, int]] = cur.fetchall()
                lost += found
                held = {rid for rid, _, _ in found}
                rest = [entry for entry in rest if entry[1] not in entered and entry[1] not in held]
                if not rest:
                    return lost
                cur.execute("DELETE FROM tsmeter_dedupe_stage")
        raise StorageUnavailableError(
            f"state store {self._db.where}: {len(rest)} ids were neither entered nor found"
        )

    def _copied(self, conn: _Conn, entries: list[_Entry]) -> bool:
        """COPY ``entries`` straight into the table, in a savepoint, unless a recent one
        found an id there; False when one is there (the savepoint is rolled back)."""
        if self._upserts:
            self._upserts -= 1
            return False
        try:
            with conn.transaction(), conn.cursor() as cur:  # a savepoint
                _copy(cur, _COPY_IDS, _ID_TYPES, entries)
            return True
        except pgerrors.UniqueViolation:  # some id is there already
            self._upserts = self.UPSERT_RUN
            return False

    def _located(self, found: list[tuple[str, int, int]]) -> dict[str, RecordRow]:
        """Rows for (id, series number, time) entries, learning the series not cached."""
        if not found:
            return {}
        keys = self._keys
        missing = {number for _, number, _ in found if number not in keys}
        learned = self._learn(missing) if missing else {}
        result = {}
        for rid, number, ts in found:
            metric, subject_type, subject_id, org = keys.get(number) or learned[number]
            result[rid] = RecordRow(rid, metric, subject_type, subject_id, org, 0, ts, None, None)
        return result

    def _open(self) -> None:
        if self._closed:
            raise StorageUnavailableError(f"state store {self._db.where}: the dedupe is closed")

    def _retrying(self, doing: str, work: Callable[[_Conn], _T]) -> _T:
        """``work`` in a transaction of its own, run again after a deadlock or serialization
        failure (up to ATTEMPTS times, after a short random pause)."""
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                with self._db.transaction() as conn:
                    return work(conn)
            except StorageUnavailableError as exc:
                cause = exc.__cause__
                if not isinstance(cause, _TRANSIENT):
                    raise
                if attempt == self.ATTEMPTS:
                    raise self._db.unavailable(
                        f"{doing} after {attempt} attempts", cause
                    ) from cause
                time.sleep(random.uniform(0.005, 0.02) * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _series_numbers(self, rows: Sequence[RecordRow]) -> list[int]:
        """The series number of each row, numbering new series first."""
        keys = list(map(_SERIES, rows))
        numbers = self._numbers
        try:  # usually every series is numbered already
            return list(map(numbers.__getitem__, keys))
        except KeyError:  # (the cache may start over meanwhile: the new numbers are kept apart)
            numbered = self._number(sorted({k for k in keys if k not in numbers}, key=_sort_key))
            return [numbered.get(key) or numbers[key] for key in keys]

    def _number(self, keys: list[_Series]) -> dict[_Series, int]:
        """Number new series (in one order on every host, so two numbering the same ones lock
        them alike) in a transaction of their own, and cache their numbers."""
        _check_text("series", [part or "" for key in keys for part in key])
        columns = [list(column) for column in zip(*keys, strict=True)]
        columns[3] = [org or "" for org in columns[3]]

        def number(conn: _Conn) -> list[tuple[int, str, str, str, str]]:
            with conn.cursor(binary=True) as cur:
                cur.execute(_NUMBER, (self._target_no, *columns))
                cur.execute(_NUMBERED, (*columns, self._target_no))
                got: list[tuple[int, str, str, str, str]] = cur.fetchall()
                return got

        found = self._retrying("cannot number series", number)
        if len(found) != len(keys):
            raise StorageUnavailableError(
                f"state store {self._db.where}: {len(keys) - len(found)} series were not numbered"
            )
        return {key: number for number, key in self._cache(found).items()}

    def _learn(self, numbers: set[int]) -> dict[int, _Series]:
        """Read and cache the series of ``numbers`` (numbered by another instance)."""
        with self._db.transaction() as conn, conn.cursor(binary=True) as cur:
            cur.execute(_SERIES_OF, (sorted(numbers),))
            found: list[tuple[int, str, str, str, str]] = cur.fetchall()
        if len(found) != len(numbers):
            raise StorageUnavailableError(
                f"state store {self._db.where}: {len(numbers) - len(found)} series are missing"
            )
        return self._cache(found)

    def _cache(self, found: Iterable[tuple[int, str, str, str, str]]) -> dict[int, _Series]:
        """Remember series numbers both ways (readers only index the dicts; a full cache is
        replaced, not cleared); return the series of ``found`` by number."""
        got: dict[int, _Series] = {
            number: (metric, subject_type, subject_id, org or None)
            for number, metric, subject_type, subject_id, org in found
        }
        with self._lock:
            if len(self._keys) + len(got) > self.SERIES_CACHED:
                self._numbers, self._keys = {}, {}
            numbers, keys = self._numbers, self._keys
            for number, key in got.items():
                numbers[key] = number
                keys[number] = key
        return got


def _copy(
    cur: psycopg.Cursor[tuple[Any, ...]],
    statement: str,
    types: Sequence[str],
    rows: Iterable[Sequence[object]],
) -> None:
    """COPY ``rows`` in binary with the given column types."""
    with cur.copy(statement) as copy:
        copy.set_types(list(types))
        for entry in rows:
            copy.write_row(entry)


def _sort_key(key: _Series) -> tuple[str, str, str, str]:
    return (key[0], key[1], key[2], key[3] or "")


def _check_text(field: str, values: Iterable[str]) -> None:
    """PostgreSQL's text cannot hold NUL: say so rather than fail in the driver."""
    if any("\x00" in value for value in values):
        raise ValidationError(field, "must not contain NUL characters")


def _writer_no(writer: str) -> int:
    """A writer's number in the entries: a 63-bit hash of its name (never 0, which ``add``
    enters)."""
    digest = hashlib.blake2b(writer.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1 or 1
