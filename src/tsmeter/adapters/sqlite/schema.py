"""The embedded store's SQLite schema and how a connection to it is opened (the helpers
shared with the outbox and the state files are in :mod:`tsmeter._sqlite`)."""

from __future__ import annotations

import sqlite3

from tsmeter._sqlite import DELIVERIES_DDL
from tsmeter._sqlite import open_wal as open_wal
from tsmeter.errors import StorageUnavailableError

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

DDL += DELIVERIES_DDL


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
