"""SQLite helpers shared by core and adapters: opening a private WAL connection, the small
state files kept beside a store, and the notification table they share.

Internal: the outbox, the notification log, the PostHog journal and the SQLite adapters all
open files through here, so none of them needs to import another's module.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tsmeter.errors import StorageUnavailableError
from tsmeter.files import private_file

__all__ = ["DELIVERIES_DDL", "StateFile", "open_wal"]

# The notifications of threshold alerts (tsmeter.integrations.notify.log), queued in the
# transaction that opens or resolves the alert: an alert never exists without its deliveries.
# The embedded store's schema includes it; a state file beside another store creates it.
DELIVERIES_DDL = """
CREATE TABLE IF NOT EXISTS notify_deliveries (
    id TEXT PRIMARY KEY,            -- the delivery id (X-Tsmeter-Delivery), stable across retries
    alert_id TEXT NOT NULL,
    event TEXT NOT NULL,            -- threshold.approaching | threshold.exceeded | ...resolved
    channel TEXT NOT NULL,          -- email | webhook
    target TEXT NOT NULL,           -- the address or the URL
    metric_key TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    payload TEXT NOT NULL,          -- what is sent, rendered at enqueue time (JSON)
    status TEXT NOT NULL,           -- pending | delivered | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at INTEGER NOT NULL,   -- ns since the epoch
    claimed_until INTEGER,          -- ns: a worker is attempting it until then
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    delivered_at INTEGER,
    UNIQUE (alert_id, event, channel, target)
);
CREATE INDEX IF NOT EXISTS notify_deliveries_due ON notify_deliveries (status, next_attempt_at);
"""


def open_wal(path: str, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection to ``path`` (created if missing) in WAL mode, in autocommit mode, usable
    from several threads under the caller's lock.

    A missing file is created with mode 0600 (its missing directories 0700) before SQLite
    opens it, so the file and its ``-wal``/``-shm`` companions are private (see
    :mod:`tsmeter.files`); an existing file keeps its mode.

    Switching a new file to WAL needs a moment of exclusive access, and SQLite answers
    "database is locked" at once (without waiting) when another process is doing the same:
    that step is retried for up to 30 s.
    """
    if path != ":memory:":
        try:
            private_file(path)
        except OSError as exc:
            raise sqlite3.OperationalError(f"cannot create {path!r}: {exc.strerror}") from exc
        except ValueError as exc:  # a NUL in the path
            raise sqlite3.OperationalError(f"cannot create {path!r}: {exc}") from exc
    conn = sqlite3.connect(
        str(Path(path).expanduser()) if path != ":memory:" else path,
        isolation_level=None,
        check_same_thread=False,
        timeout=30.0,
    )
    conn.execute("PRAGMA busy_timeout = 30000")
    deadline = time.monotonic() + 30
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.01 + random.random() * 0.05)
    # FULL: a commit is on disk before it returns, so what was acknowledged survives a
    # crash of the process or of the machine.
    conn.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'FULL' else 'NORMAL'}")
    return conn


class StateFile:
    """One SQLite connection (WAL) shared by threads under a lock, for the small tables kept
    in a state file beside the store (the notification log, the PostHog journal): ``ddl``
    runs in one transaction on open, and SQLite errors become StorageUnavailableError
    naming ``what`` and the file."""

    def __init__(self, path: str, ddl: str, what: str) -> None:
        self.path = path
        self._what = what
        self._lock = threading.Lock()
        try:
            self._conn: sqlite3.Connection | None = open_wal(path)
            with self._write() as conn:
                conn.executescript(f"BEGIN IMMEDIATE;{ddl}COMMIT;")
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"{what} {path!r}: {exc}") from exc

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock, with SQLite errors translated."""
        with self._lock:
            if self._conn is None:
                raise StorageUnavailableError(f"{self._what} {self.path!r} is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StorageUnavailableError(f"{self._what} {self.path!r}: {exc}") from exc
