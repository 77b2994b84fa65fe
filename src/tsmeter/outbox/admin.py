"""The outbox's side for the admin commands (``tsmeter outbox status|retry|purge``): what it
holds, what was quarantined, and making deferred and quarantined records due again."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass

from tsmeter.domain import RecordRow
from tsmeter.outbox.batches import legacy, pack, pack_legacy, unpack

__all__ = ["OutboxAdmin", "OutboxStatus", "QuarantinedRecord"]


@dataclass(frozen=True)
class OutboxStatus:
    """What the outbox holds."""

    in_memory: int  # records accepted but not committed yet
    pending: int  # committed records waiting for the store
    batches: int
    deferred: int  # batches waiting for a retry after a failure
    oldest_ns: int | None  # when the oldest pending batch was committed
    quarantined: int
    last_error: str | None
    delivered: int  # records delivered by this process's flusher


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record the store rejected, with the store's message; or a record of a batch an
    earlier version queued whose quantity could not be converted to units (``legacy``: its
    quantity is the plain value as queued, converted again when retried)."""

    seq: int
    row: RecordRow
    error: str
    quarantined_at: int
    legacy: bool = False


class OutboxAdmin:
    """Status and management of an outbox file (a part of
    :class:`~tsmeter.outbox.durable.Outbox`)."""

    _db: threading.Lock
    _conn: sqlite3.Connection
    _cond: threading.Condition
    _queued: int
    _last_error: str | None
    _delivered: int
    _mine: int
    _wake: threading.Event

    def _refresh_pending(self) -> None:
        raise NotImplementedError

    def status(self) -> OutboxStatus:
        """Counts of what is waiting, deferred and quarantined."""
        now = time.time_ns()
        with self._db:
            n, batches, deferred, oldest = self._conn.execute(
                "SELECT coalesce(sum(n), 0), count(*), coalesce(sum(next_attempt_at > ?), 0),"
                " min(created_at) FROM outbox_batches",
                (now,),
            ).fetchone()
            (quarantined,) = self._conn.execute("SELECT count(*) FROM outbox_quarantine").fetchone()
            row = self._conn.execute(
                "SELECT last_error FROM outbox_batches WHERE last_error IS NOT NULL"
                " ORDER BY seq LIMIT 1"
            ).fetchone()
        with self._cond:
            in_memory = self._queued
        last = row[0] if row else self._last_error
        return OutboxStatus(in_memory, int(n), int(batches), int(deferred), oldest,
                            int(quarantined), last, self._delivered)  # fmt: skip

    def quarantined(self) -> list[QuarantinedRecord]:
        """The records the store rejected, oldest first."""
        with self._db:
            found = self._conn.execute(
                "SELECT seq, row, error, quarantined_at FROM outbox_quarantine ORDER BY seq"
            ).fetchall()
        return [QuarantinedRecord(seq, unpack(blob)[0], error, at, legacy(blob))
                for seq, blob, error, at in found]  # fmt: skip

    def retry(self) -> int:
        """Make every deferred batch due now and move quarantined records back into the outbox;
        return the records made due."""
        with self._db:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                (n,) = self._conn.execute(
                    "SELECT coalesce(sum(n), 0) FROM outbox_batches WHERE next_attempt_at > 0"
                ).fetchone()
                self._conn.execute("UPDATE outbox_batches SET next_attempt_at = 0")
                back = self._conn.execute("SELECT row FROM outbox_quarantine").fetchall()
                # rows of legacy batches (plain quantities) go back as such, to be converted
                rows = [r for (blob,) in back if not legacy(blob) for r in unpack(blob)]
                old = [r for (blob,) in back if legacy(blob) for r in unpack(blob)]
                now = time.time_ns()
                self._conn.executemany(
                    "INSERT INTO outbox_batches (n, rows, created_at) VALUES (?, ?, ?)",
                    [(len(part), packed(part), now)
                     for part, packed in ((rows, pack), (old, pack_legacy)) if part],
                )  # fmt: skip
                (last,) = self._conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM outbox_batches"
                ).fetchone()
                self._conn.execute("DELETE FROM outbox_quarantine")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            with self._cond:  # drain() waits for what was made due here too
                self._mine = max(self._mine, int(last))
        self._refresh_pending()
        self._wake.set()
        return int(n) + len(rows) + len(old)

    def purge_quarantine(self) -> int:
        """Delete the quarantined records (they are then lost: export them first)."""
        with self._db:
            return self._conn.execute("DELETE FROM outbox_quarantine").rowcount
