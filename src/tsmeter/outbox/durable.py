"""The durable outbox: validated records wait in a local SQLite file until the store has them.

Why SQLite in WAL mode rather than an append-only log of our own: a committed
transaction survives a killed process (and, with ``synchronous=FULL``, a power
cut), several processes can share one file safely, and removing delivered
batches, deferring failed ones and quarantining rejected records are single
statements instead of a log format, compaction and recovery code.

Records enter through :meth:`Outbox.put`. A committer thread writes what
arrived while its previous commit was on its way to disk as one transaction
(group commit), so concurrent callers share one fsync and a lone caller waits
for one. ``put(wait=True)`` returns once the caller's records are committed; when
that commit fails, every caller in it gets the error and nothing of their calls is
in the file (a retry cannot double them). ``wait=False`` returns at once (a crash
loses at most the last commit interval); such records are committed again after a
failed commit, since nobody is left to tell. A flusher thread (one per outbox file,
across processes: it holds a file lock) takes committed batches oldest first, hands them to the
``deliver`` callback (the store's ``append``; ids make a repeat harmless) and
deletes them once delivered. The batches this process committed itself, up to
``cache_rows`` records, are handed over as the rows that were put, not read back and
unpacked: from the start if the store answers the ``reachable`` probe when the flusher
starts, otherwise once the store has taken part of a delivery; until one fails. A store
that takes a stream (the ``stream`` callback: InfluxDB's ``append_stream``) gets the due
batches, and those that come due meanwhile, as one stream of up to ``stream_rows``
records, so the server does not wait between deliveries; each batch is deleted as soon as
the store reports its records stored.

* a :class:`~tsmeter.errors.RejectedError` (the store refused the data itself)
  splits the batch in halves until the offending records are alone; those are
  moved to the quarantine with the server's message, the rest is delivered;
* any other :class:`~tsmeter.errors.TsmeterError` (server down, timeout, 5xx)
  defers the batch with exponential backoff and jitter; nothing is dropped.

Rows hold quantities in units of their metric. Batches an earlier version wrote hold the
plain values instead (see :mod:`tsmeter.outbox.batches`): each is converted by the ``upgrade``
hook before it is delivered, never delivered as it is (see :class:`Outbox`).

The outbox holds at most ``max_pending`` records (in memory and committed, counting
what every process sharing the file committed); ``put`` blocks while it is full, up to
``timeout``, then raises :class:`~tsmeter.errors.OutboxFullError`. ``drain`` waits for this
process's own records and for what was in the file when it was opened, not for records
other processes add later. An outbox still open at interpreter exit is closed then
(delivering for up to ``exit_timeout`` seconds).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import random
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TextIO

from tsmeter._sqlite import open_wal
from tsmeter.domain import RecordRow
from tsmeter.errors import (
    OutboxFullError,
    RejectedError,
    StorageUnavailableError,
    TsmeterError,
    ValidationError,
)
from tsmeter.files import open_private
from tsmeter.outbox.admin import OutboxAdmin, OutboxStatus, QuarantinedRecord
from tsmeter.outbox.batches import HeldBatches, insert, legacy, pack, pack_legacy, unpack

__all__ = ["Outbox", "OutboxStatus", "QuarantinedRecord"]

log = logging.getLogger("tsmeter.outbox")

#: delivers a stream of parts, calling its second argument with how many of the rows taken
#: from the stream are stored so far (see ``InfluxStore.append_stream``)
Stream = Callable[[Iterator[list[RecordRow]], Callable[[int], None]], object]

_DDL = """
CREATE TABLE IF NOT EXISTS outbox_batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    n INTEGER NOT NULL,                 -- records in the batch
    rows BLOB NOT NULL,                 -- see tsmeter.outbox.batches
    created_at INTEGER NOT NULL,        -- ns
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS outbox_quarantine (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL,
    row BLOB NOT NULL,
    error TEXT NOT NULL,
    quarantined_at INTEGER NOT NULL
);
"""


class _Commit:
    """The records of one transaction, by caller, and how the transaction went: the callers
    that wait block on ``settled`` and read ``error``."""

    __slots__ = ("error", "n", "parts", "settled", "waiters")

    def __init__(self) -> None:
        self.parts: list[tuple[Sequence[RecordRow], bool]] = []  # (rows, a caller waits)
        self.n = 0
        self.waiters = 0
        self.error: BaseException | None = None
        self.settled = threading.Event()

    def add(self, rows: Sequence[RecordRow], waited: bool) -> None:
        self.parts.append((rows, waited))
        self.n += len(rows)
        self.waiters += waited

    def rows(self) -> list[RecordRow]:
        if len(self.parts) == 1:
            return list(self.parts[0][0])
        return [row for part, _ in self.parts for row in part]


class Outbox(OutboxAdmin):
    """Records waiting for the store, in the SQLite file ``path`` (see the module docstring).

    ``deliver`` stores rows and returns normally once they are stored (raising a
    TsmeterError otherwise); ``after`` is called with rows once delivered; ``reachable``
    (optional) tells whether the store answers at all, asked once when the flusher starts.

    ``upgrade`` converts the rows of a batch an earlier version wrote, whose quantities are
    the plain values (a float, or an int, as that version stored them), to rows whose
    quantities are units (an int: the value times ``10 ** precision`` of the row's metric).
    Its contract:

    * it is given the rows of one batch (or a part of it) and returns as many rows, in the
      same order, each the row given with only its quantity replaced by an int;
    * it raises :class:`~tsmeter.errors.ValidationError` where a row cannot be converted (a
      value beyond 64 bits at its metric's precision): the outbox then converts the batch in
      halves until those rows are alone, quarantines them as they were queued (``retry``
      converts them again) and delivers the rest;
    * any other exception (a catalog that cannot be read) defers the whole batch, which is
      converted again at its next attempt: the hook may be called again with the same rows,
      and must give the same result (no side effects).

    A legacy batch is never delivered unconverted nor dropped: without a hook, or where the
    hook returns something else than units, it is deferred (and ``status`` says why).
    """

    def __init__(
        self,
        path: str,
        deliver: Callable[[list[RecordRow]], object],
        *,
        after: Callable[[list[RecordRow]], None] | None = None,
        stream: Stream | None = None,
        reachable: Callable[[], bool] | None = None,
        upgrade: Callable[[list[RecordRow]], list[RecordRow]] | None = None,
        stream_rows: int = 1_000_000,
        max_pending: int = 1_000_000,
        commit_interval: float = 0.0,
        batch_rows: int = 200_000,
        cache_rows: int = 1_000_000,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if path == ":memory:":
            raise ValidationError("outbox", "must be a file: a memory database is not durable")
        self.path = path
        self._deliver = deliver
        self._after = after
        self._stream = stream
        self._reachable = reachable
        self._upgrade = upgrade
        self.stream_rows = stream_rows
        self._acks: ThreadPoolExecutor | None = None  # removes what a stream stored
        self.max_pending = max_pending
        self.commit_interval = commit_interval
        self.batch_rows = batch_rows
        # this process's committed batches, handed to the store without being read back
        # (held only while this process holds the flush lock)
        self._held = HeldBatches(cache_rows)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._db = threading.Lock()  # the connection
        self._read = threading.Lock()  # the reading connection
        try:
            self._conn = open_wal(path)
            self._conn.executescript(_DDL)
            # a new process is a new attempt: what waited for a retry is due now
            self._conn.execute("UPDATE outbox_batches SET next_attempt_at = 0")
            # the flusher's and drain()'s reads: they never wait for a commit (WAL)
            self._reader = open_wal(path)
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"cannot open the outbox {path!r}: {exc}") from exc
        mutex = threading.Lock()
        self._cond = threading.Condition(mutex)  # state below; room in the outbox; drain
        self._work = threading.Condition(mutex)  # records for the committer
        self._open = _Commit()  # the next transaction: callers join it until it begins
        self._want = 1  # waiting callers in _open that the committer waits for
        self._queued = 0  # records accepted, not committed yet (in _open or being committed)
        #: transactions this process committed (each holds every caller that joined it)
        self.commits = 0
        self._pending = self._count_pending()
        # the newest batch drain() waits for: what the file held at open, then our own commits
        self._mine = self._max_seq()
        self._delivered = 0
        self._last_error: str | None = None
        self._closing = False
        self._stop = False
        self._wake = threading.Event()  # a commit, or a drain: something to deliver
        self._hurry = threading.Event()  # a drain (or close) waits: deliver without lingering
        self._drains = 0  # drain() calls waiting
        self._lock_file: TextIO | None = None
        self._final: OutboxStatus | None = None  # what close() returned
        self._committer = threading.Thread(target=self._commit_loop, name="tsmeter-outbox-commit",
                                           daemon=True)  # fmt: skip
        self._flusher = threading.Thread(target=self._flush_loop, name="tsmeter-outbox-flush",
                                         daemon=True)  # fmt: skip
        self._committer.start()
        self._flusher.start()
        _OPEN.add(self)
        _register_exit_hook()

    #: how long the interpreter's exit lets an outbox that was not closed deliver
    exit_timeout = 10.0

    # -- accepting records ------------------------------------------------------------
    def put(self, rows: Sequence[RecordRow], *, wait: bool = True, timeout: float = 30.0) -> None:
        """Queue ``rows``; with ``wait``, return once they are committed to the file (together
        with whatever other callers queued meanwhile: one transaction, one fsync).

        Blocks while the outbox is full, then raises OutboxFullError after ``timeout``.
        Raises StorageUnavailableError when the commit fails; nothing of ``rows`` is then
        queued.
        """
        if not rows:
            return
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._closing:
                raise StorageUnavailableError("the outbox is closed")
            while self._pending + self._queued + len(rows) > self.max_pending and (
                self._pending + self._queued > 0
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OutboxFullError(
                        f"the outbox {self.path!r} held {self._pending + self._queued:,}"
                        f" records (max_pending {self.max_pending:,}) for {timeout:g} s;"
                        f" {len(rows):,} records were not queued"
                    )
                self._cond.wait(min(left, 0.5))
            commit = self._open
            commit.add(rows, wait)
            self._queued += len(rows)
            if not wait or commit.waiters >= self._want:  # wake the committer only then
                self._work.notify()
        if not wait:
            return
        while not commit.settled.wait(1.0):
            if not self._committer.is_alive():  # never wait for a commit that cannot come
                raise StorageUnavailableError(f"the outbox {self.path!r} stopped committing")
        if commit.error is not None:
            raise StorageUnavailableError(
                f"the outbox {self.path!r} could not commit: {commit.error}; nothing of this"
                " call was queued"
            ) from commit.error

    def _commit_loop(self) -> None:
        rejoin, took = 0, 0.0  # callers expected back for the next commit; the last one's time
        while True:
            with self._cond:
                while not self._open.parts and not self._closing:
                    self._work.wait()
                if not self._open.parts:
                    return  # closing, and everything accepted is committed
                self._gather(rejoin, took)
            if self.commit_interval:  # let more records join this commit
                time.sleep(self.commit_interval)
            with self._cond:
                commit, self._open = self._open, _Commit()
            started = time.monotonic()
            try:
                last, parts = self._insert(commit.rows())
            except Exception as exc:
                self._failed(commit, exc)
                rejoin = 0
                continue
            took = time.monotonic() - started
            with self._cond:  # the callers just committed, and those who came meanwhile
                rejoin = commit.waiters + self._open.waiters
            commit.settled.set()
            if self._lock_file is not None:  # numbered last - len(parts) + 1 to last
                self._held.hold(last - len(parts) + 1, parts)
            self._wake.set()

    def _gather(self, rejoin: int, took: float) -> None:
        """Under ``_cond``: wait for the callers of the last commit to come back, so that
        callers recording in a loop share one commit instead of splitting into two that
        alternate; at most as long as the last commit took (capped at ``gather_max``). A
        lone caller is back already: it never waits here."""
        if self._open.waiters >= rejoin or self._closing:
            return
        deadline = time.monotonic() + min(took, self.gather_max)
        self._want = rejoin
        try:
            while self._open.waiters < rejoin and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._work.wait(left)
        finally:
            self._want = 1

    #: the longest a commit waits for the callers of the one before to come back (seconds)
    gather_max = 0.01

    def _failed(self, commit: _Commit, exc: Exception) -> None:
        """A commit failed (the transaction rolled back): its waiting callers get ``exc`` and
        their records are dropped (they may retry); records nobody waits for go first into
        the next commit, after a pause."""
        log.error("outbox commit of %d records failed: %s", commit.n, exc)
        loose = [row for part, waited in commit.parts if not waited for row in part]
        with self._cond:
            self._queued -= commit.n - len(loose)
            if loose:
                self._open.parts.insert(0, (loose, False))
                self._open.n += len(loose)
            self._cond.notify_all()  # room for blocked callers, news for drain()
        commit.error = exc
        commit.settled.set()
        if loose:
            time.sleep(0.5)

    def _insert(self, rows: list[RecordRow]) -> tuple[int, list[list[RecordRow]]]:
        """Commit ``rows`` as one transaction; return the number of its last batch, and its
        batches. Raises whatever failed: then nothing of ``rows`` is in the file."""
        now = time.time_ns()
        parts = _parts(rows, self.batch_rows)
        batches = [(len(part), pack(part), now) for part in parts]  # before taking the lock
        with self._db:
            last = insert(self._conn, batches)
            with self._cond:  # still under the connection lock: no recount slips in between
                self._pending += len(rows)
                self._queued -= len(rows)
                self._mine = max(self._mine, last)
                self.commits += 1
                self._cond.notify_all()
        return last, parts

    # -- delivering -------------------------------------------------------------------
    def _flush_loop(self) -> None:
        while not self._stop:
            if not self._hold_flush_lock():
                self._wake.wait(0.25)
                self._wake.clear()
                self._refresh_pending()
                continue
            before = self._delivered
            try:
                progressed = self.flush_once()
            except Exception:  # never let the flusher die; the next pass tries again
                log.exception("outbox flush failed")
                progressed = False
            if progressed and self._delivered - before < self.linger_rows:
                self._linger()
            elif not progressed:
                woken = self._wake.wait(0.2)
                self._wake.clear()
                if not woken:  # other processes' commits count towards max_pending
                    self._refresh_pending()

    #: after a delivery of fewer records than ``linger_rows``, the flusher lets records gather
    #: for up to ``linger`` seconds, unless drain() waits: a delivery has a fixed cost (for
    #: InfluxDB two requests and a ledger commit) that callers recording one record at a
    #: time would otherwise pay for every few records, in CPU they need themselves
    linger = 0.05
    linger_rows = 10_000

    def _linger(self) -> None:
        self._hurry.clear()
        with self._cond:
            if self._drains:
                return
        self._hurry.wait(self.linger)

    def _hold_flush_lock(self) -> bool:
        """One flusher per outbox file, across processes: a lock on ``<path>.flush.lock``."""
        if self._lock_file is not None:
            return True
        handle = open_private(f"{self.path}.flush.lock")  # held while flushing
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        try:  # a store that answers: hold this process's batches from the first one
            self._held.on = self._reachable is not None and bool(self._reachable())
        except Exception:
            log.exception("outbox: asking whether the store is reachable failed")
        self._lock_file = handle
        return True

    def _due(self, after: int = 0) -> list[tuple[int, int, list[RecordRow]]]:
        """The oldest due batches numbered above ``after`` that fit in one delivery of
        ``batch_rows`` records (at least one): ``(seq, attempts, rows)``. Sizes are read
        first, so only the batches taken are read and unpacked (unless held: ``_held``)."""
        with self._read:
            found = self._reader.execute(
                "SELECT seq, attempts, n FROM outbox_batches WHERE next_attempt_at <= ?"
                " AND seq > ? ORDER BY seq LIMIT 64",
                (time.time_ns(), after),
            ).fetchall()
            taken: list[tuple[int, int, bytes | list[RecordRow]]] = []
            total = 0
            for seq, attempts, n in found:
                if taken and total + n > self.batch_rows:
                    break
                rows = self._held.take(seq)
                if rows is None:
                    blob = self._reader.execute(
                        "SELECT rows FROM outbox_batches WHERE seq = ?", (seq,)
                    ).fetchone()
                    if blob is None:
                        continue
                    rows = blob[0]
                taken.append((seq, attempts, rows))
                total += n
            if found and after == 0:  # older batches held are gone (purged): forget them
                self._held.drop_below(found[0][0])
        due = []
        for seq, attempts, stored in taken:
            if isinstance(stored, list):
                due.append((seq, attempts, stored))
                continue
            read = unpack(stored)
            if legacy(stored):  # plain quantities of an earlier version: units, or deferred
                upgraded = self._upgraded(seq, attempts, read)
                if upgraded is None:
                    continue
                read = upgraded
            due.append((seq, attempts, read))
        return due

    def _upgraded(self, seq: int, attempts: int, rows: list[RecordRow]) -> list[RecordRow] | None:
        """The rows of legacy batch ``seq`` in units (see ``upgrade``), without those the hook
        refuses (quarantined as they were queued); None where the batch was deferred."""
        try:
            if self._upgrade is None:
                raise StorageUnavailableError(
                    "the batch was queued by an earlier version (plain quantities, not units)"
                    " and this outbox has no upgrade hook to convert it"
                )
            return self._convert(rows)
        except Exception as exc:
            self._defer([(seq, attempts)], len(rows), exc)
            return None

    def _convert(self, rows: list[RecordRow]) -> list[RecordRow]:
        """``rows`` through the upgrade hook, checked; rows it refuses with a ValidationError
        are found by halving and quarantined. Raises where the whole batch must wait."""
        assert self._upgrade is not None
        try:
            converted = list(self._upgrade(list(rows)))
        except ValidationError as exc:
            if len(rows) == 1:
                self._quarantine(rows[0], f"cannot convert its quantity to units: {exc}",
                                 legacy=True)  # fmt: skip
                return []
            half = len(rows) // 2
            return self._convert(rows[:half]) + self._convert(rows[half:])
        if len(converted) != len(rows) or not all(
            type(new) is RecordRow and type(new.quantity) is int and new[:5] == old[:5]
            and new[6:] == old[6:]
            for new, old in zip(converted, rows, strict=False)
        ):  # fmt: skip
            raise StorageUnavailableError(
                "the outbox's upgrade hook did not return the rows given with units (ints)"
            )
        return converted

    def flush_once(self) -> bool:
        """Deliver the batches that are due (up to ``batch_rows`` records in one call of
        ``deliver``, or a stream of them); return whether anything was delivered or
        quarantined."""
        due = self._due()
        if not due:
            return False
        if self._stream is not None:
            return self._flush_stream(due)
        return self._flush(due)

    def _flush(self, batches: list[tuple[int, int, list[RecordRow]]]) -> bool:
        """Deliver ``(seq, attempts, rows)`` batches in one call of ``deliver`` and remove
        them, or defer them after a failure; return whether they were delivered."""
        taken = [(seq, attempts) for seq, attempts, _ in batches]
        rows = [row for _, _, part in batches for row in part]
        try:
            quarantined = self._deliver_all(rows)
        except Exception as exc:  # a store error, or a bug: either way wait and try again
            self._defer(taken, len(rows), exc)
            return False
        self._remove(taken, len(rows) - quarantined)
        return True

    def _flush_stream(self, due: list[tuple[int, int, list[RecordRow]]]) -> bool:
        """Deliver the due batches, and those that come due meanwhile, as one stream (up to
        ``stream_rows`` records): the store is never left waiting between deliveries, and a
        batch is removed as soon as the store reports its records stored. After a rejection,
        the batches not reported stored are delivered one by one to find the records."""
        waiting: deque[tuple[int, int, int, list[RecordRow]]] = deque()  # and rows through it
        pulled, progressed = 0, False

        def parts() -> Iterator[list[RecordRow]]:
            nonlocal pulled
            batches = due
            while batches:
                for seq, attempts, rows in batches:
                    pulled += len(rows)
                    waiting.append((seq, attempts, pulled, rows))
                    yield rows
                if pulled >= self.stream_rows or self._stop:
                    return
                batches = self._due(after=waiting[-1][0])

        acks: list[Future[None]] = []

        def stored(upto: int) -> None:
            nonlocal progressed
            self._held.on = True  # the store is taking this stream: hold what is committed
            done = []
            while waiting and waiting[0][2] <= upto:
                done.append(waiting.popleft())
            if done:  # removed on the outbox's own thread: the stream goes on meanwhile
                progressed = True
                acks.append(self._acker().submit(self._acknowledge, done))

        assert self._stream is not None
        try:
            try:
                self._stream(parts(), stored)
                stored(pulled)  # returned: everything taken is stored
            finally:
                wait(acks)
                for ack in acks:
                    if ack.exception() is not None:  # those batches are delivered again later
                        log.error("outbox: removing delivered batches failed: %s",
                                  ack.exception())  # fmt: skip
        except RejectedError:
            left = list(waiting)
            waiting.clear()
            for seq, attempts, _, rows in left:
                if not self._flush([(seq, attempts, rows)]):
                    break  # deferred; the rest is due again at the next pass
            return True
        except Exception as exc:
            if waiting:
                self._defer([(seq, attempts) for seq, attempts, _, _ in waiting],
                            sum(len(rows) for *_, rows in waiting), exc)  # fmt: skip
            return progressed
        return True

    def _acknowledge(self, done: list[tuple[int, int, int, list[RecordRow]]]) -> None:
        """Remove batches a stream stored, then hand their records to ``after``."""
        self._remove([(seq, attempts) for seq, attempts, _, _ in done],
                     sum(len(rows) for *_, rows in done))  # fmt: skip
        for *_, rows in done:
            self._delivered_hook(rows)

    def _acker(self) -> ThreadPoolExecutor:
        if self._acks is None:
            self._acks = ThreadPoolExecutor(1, thread_name_prefix="tsmeter-outbox-ack")
        return self._acks

    def _defer(self, taken: list[tuple[int, int]], n: int, exc: Exception) -> None:
        """After a failed delivery of ``n`` records: try the batches again after a backoff."""
        if not isinstance(exc, TsmeterError):
            log.error("outbox: delivering %d records failed unexpectedly", n, exc_info=exc)
        attempts = max(a for _, a in taken) + 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1))
        delay *= 0.5 + random.random() / 2
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._held.stop()  # hold nothing more in memory until a delivery succeeds
        log.warning("outbox: %d records wait %.1f s after: %s", n, delay, exc)
        with self._db:  # one statement: one transaction
            self._conn.execute(
                "UPDATE outbox_batches SET attempts = attempts + 1, next_attempt_at = ?,"
                " last_error = ? WHERE seq IN (SELECT value FROM json_each(?))",
                (time.time_ns() + int(delay * 1e9), str(exc),
                 json.dumps([seq for seq, _ in taken])),
            )  # fmt: skip

    def _remove(self, taken: list[tuple[int, int]], delivered: int) -> None:
        """Remove delivered batches: one statement, so one transaction, and without an fsync
        of its own (``synchronous = NORMAL``): the next commit's fsync makes it durable, and a
        power cut that undoes it only delivers those batches again, which ids make harmless;
        meanwhile commits do not wait for a second fsync."""
        with self._db:
            self._conn.execute("PRAGMA synchronous = NORMAL")
            try:
                self._conn.execute(
                    "DELETE FROM outbox_batches WHERE seq IN (SELECT value FROM json_each(?))",
                    (json.dumps([seq for seq, _ in taken]),),
                )
            finally:
                self._conn.execute("PRAGMA synchronous = FULL")
        for seq, _ in taken:  # a batch read from the file while it was being held
            self._held.take(seq)
        with self._cond:
            self._delivered += delivered
        self._held.on = True
        # recounted, not decremented: the batches may have been committed by another process
        self._refresh_pending()

    def _delivered_hook(self, rows: list[RecordRow]) -> None:
        if self._after is not None:
            try:
                self._after(rows)
            except Exception:
                log.exception("outbox: the after-delivery hook failed on %d records", len(rows))

    def _deliver_all(self, rows: list[RecordRow]) -> int:
        """Deliver ``rows``; records the store rejects are found by halving and quarantined.
        Returns how many were quarantined."""
        try:
            self._deliver(rows)
        except RejectedError as exc:
            if len(rows) == 1:
                self._quarantine(rows[0], str(exc))
                return 1
            half = len(rows) // 2
            return self._deliver_all(rows[:half]) + self._deliver_all(rows[half:])
        self._delivered_hook(rows)
        return 0

    def _quarantine(self, row: RecordRow, error: str, *, legacy: bool = False) -> None:
        """Keep ``row`` (a row of a legacy batch, not converted, where ``legacy``) aside."""
        log.error("outbox: record %r quarantined: %s", row.id, error)
        with self._db:  # a batch delivered again (after a crash or outage) replaces its entry
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM outbox_quarantine WHERE record_id = ?", (row.id,))
                self._conn.execute(
                    "INSERT INTO outbox_quarantine (record_id, row, error, quarantined_at)"
                    " VALUES (?, ?, ?, ?)",
                    (row.id, (pack_legacy if legacy else pack)([row]), error, time.time_ns()),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # -- administration ---------------------------------------------------------------
    def _count_pending(self) -> int:
        with self._db:
            (n,) = self._conn.execute("SELECT coalesce(sum(n), 0) FROM outbox_batches").fetchone()
        return int(n)

    def _max_seq(self) -> int:
        with self._db:
            (seq,) = self._conn.execute(
                "SELECT coalesce(max(seq), 0) FROM outbox_batches"
            ).fetchone()
        return int(seq)

    def _refresh_pending(self) -> None:
        """Recount the records in the file (all processes'), under the connection lock so that
        a commit's own increment cannot be counted twice."""
        with self._db:
            (n,) = self._conn.execute("SELECT coalesce(sum(n), 0) FROM outbox_batches").fetchone()
            with self._cond:
                self._pending = int(n)
                self._cond.notify_all()

    def _waiting(self, upto: int) -> bool:
        """Whether a batch numbered ``upto`` or lower is still in the file."""
        with self._read:
            found = self._reader.execute(
                "SELECT 1 FROM outbox_batches WHERE seq <= ? LIMIT 1", (upto,)
            ).fetchone()
        return found is not None

    def drain(self, timeout: float) -> bool:
        """Wait until everything this process accepted so far, and what the file held when it
        was opened, was delivered (or quarantined), by whichever process holds the flush lock;
        at most ``timeout`` seconds. Return whether it was."""
        if self._final is not None:  # closed: what close() left is in the file
            return self._final.pending == 0 and self._final.in_memory == 0
        deadline = time.monotonic() + timeout
        with self._cond:
            self._drains += 1
        self._hurry.set()
        self._wake.set()
        try:
            while True:
                with self._cond:  # nothing in memory and no commit half done: _mine is final
                    busy = self._queued > 0
                    mine = self._mine
                if not busy and not self._waiting(mine):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                with self._cond:
                    self._cond.wait(min(left, 0.05))
        finally:
            with self._cond:
                self._drains -= 1

    def close(self, timeout: float = 30.0) -> OutboxStatus:
        """Stop accepting records, commit what is in memory, deliver for up to ``timeout``
        seconds, and return what remains (it stays in the file for the next process).
        Closing again returns the same status."""
        if self._final is not None:
            return self._final
        _OPEN.discard(self)
        started = time.monotonic()
        self.drain(timeout)
        with self._cond:
            self._closing = True
            self._work.notify_all()
        self._committer.join(timeout=max(1.0, timeout - (time.monotonic() - started)))
        self._stop = True
        self._wake.set()
        self._hurry.set()
        self._flusher.join(timeout=max(1.0, timeout - (time.monotonic() - started)))
        if self._acks is not None and not self._flusher.is_alive():
            self._acks.shutdown()
        status = self.status()
        if status.pending or status.in_memory:
            left = status.pending + status.in_memory
            log.warning("outbox closed with %d records pending in %r", left, self.path)
        self._final = status
        if not self._flusher.is_alive() and not self._committer.is_alive():
            with self._db, self._read:
                self._conn.close()
                self._reader.close()
        if self._lock_file is not None and not self._flusher.is_alive():
            self._lock_file.close()
        return status


#: outboxes not closed yet; the interpreter's exit closes them (see Outbox.exit_timeout)
_OPEN: weakref.WeakSet[Outbox] = weakref.WeakSet()
_hooked = False


def _register_exit_hook() -> None:
    global _hooked
    if not _hooked:
        _hooked = True
        atexit.register(_close_at_exit)


def _close_at_exit() -> None:
    """Close every outbox left open: records in memory are committed, and delivery gets up
    to ``exit_timeout`` seconds (what remains stays in the file, with a warning)."""
    for box in list(_OPEN):
        try:
            box.close(box.exit_timeout)
        except Exception:
            log.exception("outbox %r: closing at exit failed", box.path)


def _parts(rows: list[RecordRow], size: int) -> list[list[RecordRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]
