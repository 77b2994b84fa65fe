"""The mirror's journal: what a running mirror did and what it could not send, in SQLite.

A mirror keeps its events in memory; the journal makes the part a user must act on
durable and visible to ``tsmeter posthog status`` from another process:

* ``posthog_mirror_runs``: one row per mirror instance (pid, host, start, last update,
  stop) with its counters, written about once a second and at shutdown;
* ``posthog_unsent``: events not delivered, by uuid: ``pending`` (still queued at
  shutdown; the next mirror on the file takes them back) or ``failed`` (gave up after its
  retries, or found no room in the buffer; ``tsmeter posthog retry`` re-queues them);
* ``posthog_dropped``: per metric, the time range and number of records the mirror had no
  room for; ``tsmeter posthog backfill`` over that range sends them (same uuids).

The tables live in the file the caller names (usually the Meter's state file).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from tsmeter._sqlite import StateFile
from tsmeter.domain import Model
from tsmeter.domain.validation import from_ns
from tsmeter.integrations.posthog.events import CaptureEvent

__all__ = ["DroppedRange", "Journal", "MirrorRun", "Unsent"]

DDL = """
CREATE TABLE IF NOT EXISTS posthog_mirror_runs (
    id TEXT PRIMARY KEY,            -- the mirror instance
    pid INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    started_at INTEGER NOT NULL,    -- ns since the epoch
    updated_at INTEGER NOT NULL,
    stopped_at INTEGER,
    mirrored INTEGER NOT NULL DEFAULT 0,
    retried INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at INTEGER,
    last_sent_at INTEGER
);
CREATE TABLE IF NOT EXISTS posthog_unsent (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,          -- the event as sent (JSON, CaptureEvent.to_json)
    status TEXT NOT NULL,           -- pending | failed
    attempts INTEGER NOT NULL,
    last_error TEXT,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS posthog_dropped (
    metric_key TEXT NOT NULL,
    org_id TEXT NOT NULL,           -- '' for records without an org
    first_ts INTEGER NOT NULL,      -- ns, the earliest record dropped
    last_ts INTEGER NOT NULL,       -- ns, the latest record dropped
    records INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (metric_key, org_id)
);
"""


class MirrorRun(Model):
    """The counters of one mirror instance, as last written to the journal."""

    id: str
    pid: int
    hostname: str
    started_at: datetime
    updated_at: datetime
    stopped_at: datetime | None
    mirrored: int
    retried: int
    failed: int
    dropped: int
    rejected: int
    pending: int
    last_error: str | None
    last_error_at: datetime | None
    last_sent_at: datetime | None


class Unsent(Model):
    """An event the journal holds: ``pending`` or ``failed``."""

    uuid: str
    name: str
    status: str
    attempts: int
    last_error: str | None
    updated_at: datetime


class DroppedRange(Model):
    """Records of one metric the mirror had no room for: when, and how many."""

    metric_key: str
    org_id: str | None
    first: datetime
    last: datetime
    records: int


@dataclass(frozen=True)
class RunCounts:
    """What a mirror writes about itself."""

    mirrored: int
    retried: int
    failed: int
    dropped: int
    rejected: int
    pending: int
    last_error: str | None
    last_error_at: int | None
    last_sent_at: int | None


def _dt(ns: int | None) -> datetime | None:
    return None if ns is None else from_ns(ns)


class Journal(StateFile):
    """The journal tables in the SQLite file at ``path`` (created if missing).

    Example: ``Journal("state.db").unsent_counts()`` → ``{"pending": 0, "failed": 3}``.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, DDL, "posthog journal")

    def start_run(self, run_id: str, now: int) -> None:
        """Record that the mirror ``run_id`` started in this process."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO posthog_mirror_runs (id, pid, hostname, started_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, os.getpid(), socket.gethostname(), now, now),
            )

    def update_run(
        self, run_id: str, counts: RunCounts, now: int, *, stopped: bool = False
    ) -> None:
        """Write a mirror's counters (and, with ``stopped``, that it stopped)."""
        c = counts
        with self._write() as conn:
            conn.execute(
                "UPDATE posthog_mirror_runs SET updated_at = ?, mirrored = ?, retried = ?,"
                " failed = ?, dropped = ?, rejected = ?, pending = ?, last_error = ?,"
                " last_error_at = ?, last_sent_at = ?,"
                " stopped_at = CASE WHEN ? THEN ? ELSE stopped_at END WHERE id = ?",
                (
                    now,
                    c.mirrored,
                    c.retried,
                    c.failed,
                    c.dropped,
                    c.rejected,
                    c.pending,
                    c.last_error,
                    c.last_error_at,
                    c.last_sent_at,
                    stopped,
                    now,
                    run_id,
                ),
            )

    def runs(self, limit: int = 10) -> list[MirrorRun]:
        """The latest mirror runs, newest first."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT id, pid, hostname, started_at, updated_at, stopped_at, mirrored, retried,"
                " failed, dropped, rejected, pending, last_error, last_error_at, last_sent_at"
                " FROM posthog_mirror_runs ORDER BY updated_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            MirrorRun(
                id=r[0],
                pid=r[1],
                hostname=r[2],
                started_at=from_ns(r[3]),
                updated_at=from_ns(r[4]),
                stopped_at=_dt(r[5]),
                mirrored=r[6],
                retried=r[7],
                failed=r[8],
                dropped=r[9],
                rejected=r[10],
                pending=r[11],
                last_error=r[12],
                last_error_at=_dt(r[13]),
                last_sent_at=_dt(r[14]),
            )
            for r in rows
        ]

    # -- unsent events ----------------------------------------------------------------
    def save_unsent(
        self, items: Sequence[tuple[CaptureEvent, str, int, str | None]], now: int
    ) -> None:
        """Store ``(event, status, attempts, error)`` items, replacing rows of the same uuid."""
        if not items:
            return
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR REPLACE INTO posthog_unsent (uuid, name, payload, status, attempts,"
                " last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e.uuid, e.name, e.to_json(), s, a, err, now) for e, s, a, err in items],
            )
            conn.execute("COMMIT")

    def take_pending(self, limit: int) -> list[tuple[CaptureEvent, int]]:
        """Remove and return up to ``limit`` pending events with their attempts (a mirror
        taking over what an earlier one left queued)."""
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                "SELECT uuid, payload, attempts FROM posthog_unsent WHERE status = 'pending'"
                " ORDER BY updated_at LIMIT ?",
                (limit,),
            ).fetchall()
            conn.executemany("DELETE FROM posthog_unsent WHERE uuid = ?", [(r[0],) for r in rows])
            conn.execute("COMMIT")
        return [(CaptureEvent.from_json(r[1]), r[2]) for r in rows]

    def requeue_failed(self, uuids: Sequence[str] | None, now: int) -> int:
        """Make failed events pending again (all, or those in ``uuids``), with a fresh attempt
        budget; return how many."""
        with self._write() as conn:
            if uuids is None:
                cur = conn.execute(
                    "UPDATE posthog_unsent SET status = 'pending', attempts = 0, updated_at = ?"
                    " WHERE status = 'failed'",
                    (now,),
                )
                return cur.rowcount
            conn.execute("BEGIN IMMEDIATE")
            count = 0
            for uid in uuids:
                count += conn.execute(
                    "UPDATE posthog_unsent SET status = 'pending', attempts = 0, updated_at = ?"
                    " WHERE status = 'failed' AND uuid = ?",
                    (now, uid),
                ).rowcount
            conn.execute("COMMIT")
            return count

    def unsent(self, status: str | None = None, limit: int | None = None) -> list[Unsent]:
        """Unsent events (optionally of one status), oldest first."""
        sql = "SELECT uuid, name, status, attempts, last_error, updated_at FROM posthog_unsent"
        params: list[object] = []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY updated_at, uuid LIMIT ?"
        params.append(-1 if limit is None else limit)
        with self._write() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [
            Unsent(
                uuid=r[0],
                name=r[1],
                status=r[2],
                attempts=r[3],
                last_error=r[4],
                updated_at=from_ns(r[5]),
            )
            for r in rows
        ]

    def unsent_counts(self) -> dict[str, int]:
        """How many events are ``pending`` and ``failed``."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT status, COUNT(*) FROM posthog_unsent GROUP BY status"
            ).fetchall()
        counts = {"pending": 0, "failed": 0}
        counts.update({str(s): int(n) for s, n in rows})
        return counts

    # -- dropped record ranges --------------------------------------------------------
    def add_dropped(
        self, ranges: Mapping[tuple[str, str | None], tuple[int, int, int]], now: int
    ) -> None:
        """Widen the dropped ranges by ``{(metric, org): (first_ts, last_ts, records)}``."""
        if not ranges:
            return
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO posthog_dropped (metric_key, org_id, first_ts, last_ts, records,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (metric_key, org_id) DO"
                " UPDATE SET first_ts = MIN(first_ts, excluded.first_ts),"
                " last_ts = MAX(last_ts, excluded.last_ts),"
                " records = records + excluded.records, updated_at = excluded.updated_at",
                [(m, o or "", lo, hi, n, now) for (m, o), (lo, hi, n) in ranges.items()],
            )
            conn.execute("COMMIT")

    def dropped(self) -> list[DroppedRange]:
        """Every dropped range, by metric."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT metric_key, org_id, first_ts, last_ts, records FROM posthog_dropped"
                " ORDER BY metric_key, org_id"
            ).fetchall()
        return [
            DroppedRange(
                metric_key=r[0],
                org_id=r[1] or None,
                first=from_ns(r[2]),
                last=from_ns(r[3]),
                records=r[4],
            )
            for r in rows
        ]

    def clear_dropped(self, metric_key: str, org_id: str | None, start: int, end: int) -> int:
        """Forget the dropped range of a metric that ``[start, end)`` covers (after a
        backfill of that range); return how many ranges were cleared."""
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM posthog_dropped WHERE metric_key = ? AND org_id = ?"
                " AND first_ts >= ? AND last_ts < ?",
                (metric_key, org_id or "", start, end),
            ).rowcount


def now_ns() -> int:
    """The current time in ns since the epoch."""
    return time.time_ns()
