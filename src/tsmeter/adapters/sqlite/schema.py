"""The embedded store's SQLite schema and how a connection to it is opened (the helpers
shared with the outbox and the state files are in :mod:`tsmeter._sqlite`).

Schema version 2 stores quantities as integer *units* (see :mod:`tsmeter.domain.quantities`):
``usage_records.units`` and the summaries' ``total``, ``min``, ``max`` and ``last_value``.
A version-1 file (``quantity REAL``) is converted when it is opened, in one transaction (see
:func:`convert_v1`).
"""

from __future__ import annotations

import json
import logging
import sqlite3

from tsmeter._sqlite import DELIVERIES_DDL
from tsmeter._sqlite import open_wal as open_wal
from tsmeter.adapters.sqlite.corrections import DDL as CORRECTIONS_DDL
from tsmeter.adapters.sqlite.dimensions import DIMENSIONS_DDL
from tsmeter.domain.quantities import (
    DEFAULT_PRECISION,
    MAX_PRECISION,
    MAX_UNITS,
    Rounding,
    from_units,
    parse_decimal,
    to_units,
)
from tsmeter.errors import StorageUnavailableError, ValidationError

log = logging.getLogger("tsmeter.store")
_EXACT = 2**53  # floats below this magnitude hold every integer exactly

SCHEMA_VERSION = 2

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
    -- the quantity in units of its metric (value * 10**precision), never a REAL (which
    -- would turn every sum over it into a float) nor -2**63 (beyond a total's range)
    units INTEGER NOT NULL
        CHECK (typeof(units) = 'integer' AND units >= -9223372036854775807),
    metadata TEXT,
    source TEXT,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Covers the roll-up queries (the id rides along as the key suffix: LAST tie-break).
CREATE INDEX IF NOT EXISTS usage_records_series_ts ON usage_records (series_id, ts, units);
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
    total INTEGER,                  -- units, NULL where the sum is beyond 64 bits
    min INTEGER NOT NULL,
    max INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    last_value INTEGER NOT NULL,
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
-- API keys of the HTTP API: only the SHA-256 of each key, never the key (see tsmeter.access).
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,           -- comma-separated: ingest, read, admin
    secret_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,    -- ns
    revoked_at INTEGER              -- ns, NULL while the key is valid
);
CREATE TABLE IF NOT EXISTS rollup_state (
    period_type TEXT NOT NULL,
    tz TEXT NOT NULL,
    watermark INTEGER NOT NULL,     -- every dirty row with seq <= watermark is summarised
    PRIMARY KEY (period_type, tz)
);
"""

DDL += DELIVERIES_DDL + CORRECTIONS_DDL
DDL += DIMENSIONS_DDL


def connect(path: str) -> sqlite3.Connection:
    """Open (and create if needed, privately) the store file in WAL mode with full
    durability; a version-1 file is converted to integer units first (:func:`convert_v1`)."""
    try:
        conn = open_wal(path)
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA temp_store = MEMORY")
        register(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _version(conn)
            if version is not None and version > SCHEMA_VERSION:
                raise StorageUnavailableError(
                    f"{path}: schema version {version} is newer than this tsmeter "
                    f"understands ({SCHEMA_VERSION}); upgrade tsmeter"
                )
            if version == 1:
                convert_v1(conn, path)
            for statement in DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StorageUnavailableError(f"cannot open store {path!r}: {exc}") from exc
    return conn


def _version(conn: sqlite3.Connection) -> int | None:
    """The schema version the file records (None: a new file)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


class ExactSum:
    """``tsm_sum(x)``: the exact sum of integers, NULL when it is beyond ±MAX_UNITS or when
    any input is NULL (a total that overflowed below). SQLite's own ``sum()`` stops with
    "integer overflow" as soon as a partial sum leaves the 64-bit range; roll-ups fall back
    to this aggregate then, so the series whose total does not fit get a NULL total (and an
    error when read) while every other series is summed."""

    def __init__(self) -> None:
        self.total: int | None = 0

    def step(self, value: int | None) -> None:
        if self.total is not None:
            self.total = None if value is None else self.total + value

    def finalize(self) -> int | None:
        total = self.total
        return total if total is not None and -MAX_UNITS <= total <= MAX_UNITS else None


def register(conn: sqlite3.Connection) -> None:
    """Register the SQL functions the store's statements use on ``conn``."""
    conn.create_aggregate("tsm_sum", 1, ExactSum)  # type: ignore[arg-type]


# -- version 1 (float quantities) to version 2 (integer units) --------------------------------
_V2_RECORDS = DDL[DDL.index("CREATE TABLE IF NOT EXISTS usage_records") :]
_V2_RECORDS = _V2_RECORDS[: _V2_RECORDS.index(";")].replace(
    "IF NOT EXISTS usage_records", "usage_records_v2"
)


def _sql_text(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def convert_v1(conn: sqlite3.Connection, path: str) -> int:
    """Convert a version-1 store to integer units inside the caller's transaction; return how
    many values were rounded.

    Each record's float becomes units at its metric's precision, read from the ``metrics``
    table of the same file (a definition without ``precision``, or a series whose metric is
    not defined in this file, has the default 6), rounded half to even from the float's
    shortest repr. Summaries are dropped and every roll-up state cleared, so the next reads
    and roll-ups recompute them from the records. A value that does not fit 64 bits at its
    precision stops the conversion (StorageUnavailableError naming the record), leaving the
    file as it was.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(usage_records)")}
    precisions: dict[tuple[str, str], int] = {}
    for org_key, key, doc in conn.execute("SELECT org_key, key, doc FROM metrics"):
        precision = json.loads(doc).get("precision", DEFAULT_PRECISION)
        if type(precision) is not int or not 0 <= precision <= MAX_PRECISION:
            raise StorageUnavailableError(
                f"{path}: metric {key!r} has precision {precision!r} (0 to {MAX_PRECISION})"
            )
        precisions[(org_key, key)] = precision
    rounded = 0
    if "quantity" in columns:
        conn.execute("DROP TABLE IF EXISTS temp.convert_precision")
        conn.execute(
            "CREATE TEMP TABLE convert_precision (series_id INTEGER PRIMARY KEY, precision INTEGER)"
        )
        conn.executemany(
            "INSERT INTO temp.convert_precision VALUES (?, ?)",
            [
                (sid, precisions.get((org_key, key), DEFAULT_PRECISION))
                for sid, org_key, key in conn.execute("SELECT id, org_key, metric_key FROM series")
            ],
        )
        failed: list[tuple[str, object, int]] = []
        counter = [0]

        def units(quantity: object, precision: int, record_id: str) -> int | None:
            try:
                value = to_units("quantity", quantity, precision, Rounding.HALF_EVEN)
            except ValidationError:
                failed.append((record_id, quantity, precision))
                return None  # the NOT NULL constraint stops the statement
            scale = 10**precision
            if type(quantity) is float and -_EXACT < value < _EXACT and value / scale == quantity:
                return value  # to_units took it as it is (its shortest repr fits)
            if parse_decimal("quantity", quantity) != from_units(value, precision):
                counter[0] += 1
            return value

        conn.create_function("tsm_v1_units", 3, units)
        conn.execute("DROP TABLE IF EXISTS usage_records_v2")
        conn.execute(_V2_RECORDS)
        try:
            conn.execute(
                "INSERT INTO usage_records_v2 (id, series_id, ts, units, metadata, source,"
                " recorded_at) SELECT u.id, u.series_id, u.ts,"
                " tsm_v1_units(u.quantity, coalesce(p.precision, 6), u.id), u.metadata,"
                " u.source, u.recorded_at FROM usage_records u"
                " LEFT JOIN temp.convert_precision p ON p.series_id = u.series_id"
            )
        except sqlite3.IntegrityError:
            if not failed:
                raise
            record_id, quantity, precision = failed[0]
            metric, subject_type, subject_id = conn.execute(
                "SELECT s.metric_key, s.subject_type, s.subject_id FROM usage_records u"
                " JOIN series s ON s.id = u.series_id WHERE u.id = ?",
                (record_id,),
            ).fetchone()
            raise StorageUnavailableError(
                f"{path}: cannot convert the store to integer units: record {record_id!r} of"
                f" {metric} for {subject_type} {subject_id!r} has quantity {quantity!r},"
                f" beyond the 64-bit range at precision {precision}; the file is unchanged."
                " Give the metric a smaller precision in this file (UPDATE metrics SET doc ="
                f" json_set(doc, '$.precision', 0) WHERE key = {_sql_text(metric)}) or delete"
                " the record, then open it again"
            ) from None
        finally:
            conn.create_function("tsm_v1_units", 3, None)
        rounded = counter[0]
        conn.execute("DROP TABLE usage_records")
        conn.execute("ALTER TABLE usage_records_v2 RENAME TO usage_records")
        conn.execute("DROP TABLE temp.convert_precision")
    # the caller recreates both empty: every period is recomputed from the records
    conn.execute("DROP TABLE IF EXISTS summaries")
    conn.execute("DROP TABLE IF EXISTS rollup_state")
    (records,) = conn.execute("SELECT count(*) FROM usage_records").fetchone()
    if rounded:
        log.warning(
            "%s: converted to integer units; %d of %d stored quantities had more decimal"
            " places than their metric's precision and were rounded half to even",
            path, rounded, records,
        )  # fmt: skip
    else:
        log.info("%s: converted %d stored quantities to integer units", path, records)
    return int(rounded)
