"""The SQLite schema and how a connection to it is opened."""

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

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    id TEXT PRIMARY KEY,
    org_key TEXT NOT NULL,          -- '' for global metrics
    key TEXT NOT NULL,
    doc TEXT NOT NULL,              -- the definition as camelCase JSON
    UNIQUE (org_key, key)
);
CREATE TABLE IF NOT EXISTS thresholds (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
-- One row per (metric, subject): records and summaries refer to it by number.
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    org_key TEXT NOT NULL,
    metric_key TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    UNIQUE (org_key, metric_key, subject_type, subject_id)
);
-- Clustered by id (the idempotency key), so de-duplication costs no extra index.
CREATE TABLE IF NOT EXISTS usage_records (
    id TEXT PRIMARY KEY,
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,            -- ns since the epoch, UTC
    quantity REAL NOT NULL,
    metadata TEXT,
    source TEXT,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Covers the roll-up queries (the id rides along as the key suffix: LAST tie-break).
CREATE INDEX IF NOT EXISTS usage_records_series_ts ON usage_records (series_id, ts, quantity);
-- Which (series, UTC hour) received records, in write order. seq only grows
-- (AUTOINCREMENT never reuses a number) so roll-ups keep a watermark on it.
CREATE TABLE IF NOT EXISTS dirty (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    series_id INTEGER NOT NULL,
    hour INTEGER NOT NULL           -- ts // 3600e9
);
CREATE TABLE IF NOT EXISTS summaries (
    period_type TEXT NOT NULL,
    tz TEXT NOT NULL,
    series_id INTEGER NOT NULL,
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    cnt INTEGER NOT NULL,
    total REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    last_ts INTEGER NOT NULL,
    last_value REAL NOT NULL,
    computed_at INTEGER NOT NULL,
    PRIMARY KEY (period_type, tz, series_id, period_start)
) WITHOUT ROWID;
-- Threshold alerts. At most one open (not RESOLVED) alert per threshold, subject, window and
-- level. automatic = 1: resolved by the monitor (usage fell), so the level may fire again.
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    threshold_id TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,  -- ns, 0 for a lifetime window
    level TEXT NOT NULL,
    status TEXT NOT NULL,
    automatic INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL               -- the UsageAlert as camelCase JSON
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open
    ON alerts (threshold_id, subject_type, subject_id, window_start, level)
    WHERE status != 'RESOLVED';
CREATE INDEX IF NOT EXISTS alerts_window ON alerts (threshold_id, window_start);
-- Metering events (threshold crossings, aggregation runs), for dashboards and audits.
CREATE TABLE IF NOT EXISTS metering_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    name TEXT NOT NULL,
    metric_key TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    org_key TEXT NOT NULL,
    data TEXT NOT NULL              -- JSON object
);
CREATE INDEX IF NOT EXISTS metering_events_ts ON metering_events (ts);
CREATE TABLE IF NOT EXISTS rollup_state (
    period_type TEXT NOT NULL,
    tz TEXT NOT NULL,
    watermark INTEGER NOT NULL,     -- every dirty row with seq <= watermark is summarised
    PRIMARY KEY (period_type, tz)
);
"""

# The notifications of threshold alerts (tsmeter.integrations.notify.log), queued in the
# transaction that
# opens or resolves the alert: an alert never exists without its deliveries.
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
DDL += DELIVERIES_DDL


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


def connect(path: str) -> sqlite3.Connection:
    """Open (and create if needed, privately) the store file in WAL mode with full
    durability."""
    try:
        conn = open_wal(path)
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise StorageUnavailableError(
                    f"{path}: schema version {row[0]} is newer than this tsmeter "
                    f"understands ({SCHEMA_VERSION}); upgrade tsmeter"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StorageUnavailableError(f"cannot open store {path!r}: {exc}") from exc
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
