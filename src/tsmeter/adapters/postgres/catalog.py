"""The catalog in the PostgreSQL state database: metric definitions, thresholds and alerts,
shared by every host of a fleet.

Implements :class:`tsmeter.ports.Catalog` on the tables of ``sql/0001_catalog.sql`` with the
behaviour of the embedded :class:`~tsmeter.adapters.sqlite.store.SQLiteStore`. Opening an
alert is once fleet-wide: a transaction-scoped advisory lock on the alert's key (threshold,
subject, window, level) serialises the monitors that open or resolve it, so the check "no open
alert, none resolved by hand" and the insert are one step; the partial unique index on open
alerts stands behind it. An alert's deliveries are queued in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from tsmeter.adapters.postgres.database import StateDatabase
from tsmeter.adapters.postgres.deliveries import queue_deliveries
from tsmeter.domain import AlertStatus, MetricDefinition, UsageAlert, UsageThreshold
from tsmeter.domain.models import STORED
from tsmeter.domain.validation import to_ns
from tsmeter.errors import ConflictError, StorageUnavailableError
from tsmeter.ports import DeliveryRow

__all__ = ["PostgresCatalog"]

#: the first half of the two-key advisory locks on alert keys ("alrt" in ASCII), apart from
#: the one-key locks others take (migrations)
_ALERT_LOCKS = 0x616C7274
AlertKey = tuple[str, str, str, int, str]  # threshold, subject type, subject id, window, level


def _lock_key(key: AlertKey) -> int:
    """A signed 32-bit number for an alert key; two keys that share one only wait for each
    other, which costs time, never correctness."""
    digest = hashlib.blake2b(json.dumps(key).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresCatalog:
    """Metrics, thresholds and alerts in the state database ``db``.

    The database is shared with the other PostgreSQL adapters and is not closed here.
    Example: ``PostgresCatalog(StateDatabase(url)).list_metrics()``.
    """

    def __init__(self, db: StateDatabase) -> None:
        self.db = db
        self._closed = False
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StorageUnavailableError(f"catalog in {self.db.where} is closed")
        with self.db.transaction() as conn:
            yield conn

    def close(self) -> None:
        """Stop using the database (idempotent); the shared StateDatabase stays open."""
        with self._lock:
            self._closed = True

    # -- metrics ----------------------------------------------------------------------
    def add_metric(self, metric: MetricDefinition) -> None:
        """Store a new metric; ConflictError if its key exists in its org scope."""
        try:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT INTO metrics (id, org_key, key, doc) VALUES (%s, %s, %s, %s)",
                    (metric.id, metric.org_id or "", metric.key, metric.model_dump_json()),
                )
        except psycopg.IntegrityError:
            scope = f"org {metric.org_id!r}" if metric.org_id else "the global scope"
            raise ConflictError(f"metric {metric.key!r} already exists in {scope}") from None

    def replace_metric(self, metric: MetricDefinition) -> None:
        """Overwrite a stored metric (same id)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE metrics SET doc = %s WHERE id = %s", (metric.model_dump_json(), metric.id)
            )

    def remove_metric(self, metric_id: str) -> None:
        """Delete a metric definition by id."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM metrics WHERE id = %s", (metric_id,))

    def find_metric(self, key: str, org_id: str | None) -> MetricDefinition | None:
        """The metric with this key in exactly this org scope."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM metrics WHERE org_key = %s AND key = %s", (org_id or "", key)
            ).fetchone()
        return None if row is None else MetricDefinition.model_validate_json(row[0])

    def list_metrics(self) -> list[MetricDefinition]:
        """Every metric, ordered by org then key, in byte order whatever the database's
        collation (as the embedded store lists them)."""
        with self._transaction() as conn:
            rows = conn.execute(
                'SELECT doc FROM metrics ORDER BY org_key COLLATE "C", key COLLATE "C"'
            ).fetchall()
        return [MetricDefinition.model_validate_json(r[0]) for r in rows]

    # -- thresholds -------------------------------------------------------------------
    def add_threshold(self, threshold: UsageThreshold) -> None:
        """Store a new threshold."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO thresholds (id, doc) VALUES (%s, %s)",
                (threshold.id, threshold.model_dump_json()),
            )

    def replace_threshold(self, threshold: UsageThreshold) -> None:
        """Overwrite a stored threshold (same id)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE thresholds SET doc = %s WHERE id = %s",
                (threshold.model_dump_json(), threshold.id),
            )

    def remove_threshold(self, threshold_id: str) -> bool:
        """Delete a threshold; False if there was none."""
        with self._transaction() as conn:
            cursor = conn.execute("DELETE FROM thresholds WHERE id = %s", (threshold_id,))
            return cursor.rowcount > 0

    def get_threshold(self, threshold_id: str) -> UsageThreshold | None:
        """The threshold with this id, or None."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM thresholds WHERE id = %s", (threshold_id,)
            ).fetchone()
        return None if row is None else UsageThreshold.model_validate_json(row[0], context=STORED)

    def list_thresholds(self) -> list[UsageThreshold]:
        """Every threshold, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute("SELECT doc FROM thresholds ORDER BY seq").fetchall()
        return [UsageThreshold.model_validate_json(r[0], context=STORED) for r in rows]

    # -- alerts -----------------------------------------------------------------------
    @staticmethod
    def _serialise(conn: psycopg.Connection[Any], key: AlertKey) -> None:
        """Wait for every other transaction on this alert key, until this one ends."""
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_ALERT_LOCKS, _lock_key(key)))

    def open_alert(
        self, alert: UsageAlert, window_start: int, deliveries: Sequence[DeliveryRow] = ()
    ) -> bool:
        """Store a new alert unless one is open, or was resolved by hand, for its key; queue
        its ``deliveries`` in the same transaction. Once across every host that tries."""
        created = to_ns(alert.created_at) if alert.created_at else time.time_ns()
        key: AlertKey = (alert.threshold_id, alert.subject_type, alert.subject_id,
                         window_start, alert.level)  # fmt: skip
        with self._transaction() as conn:
            self._serialise(conn, key)
            blocked = conn.execute(
                "SELECT 1 FROM alerts WHERE threshold_id = %s AND subject_type = %s"
                " AND subject_id = %s AND window_start = %s AND level = %s"
                " AND (status <> 'RESOLVED' OR NOT automatic) LIMIT 1",
                key,
            ).fetchone()
            if blocked:
                return False
            inserted = conn.execute(
                "INSERT INTO alerts (id, threshold_id, subject_type, subject_id, window_start,"
                " level, status, created_at, doc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (alert.id, *key, alert.status.value, created, alert.model_dump_json()),
            ).rowcount
            if inserted != 1:  # the same alert id stored before: nothing new to queue
                return False
            queue_deliveries(conn, deliveries, time.time_ns())
        return True

    def set_alert_status(
        self,
        alert_id: str,
        status: AlertStatus,
        at: datetime,
        *,
        automatic: bool = False,
        deliveries: Sequence[DeliveryRow] = (),
    ) -> UsageAlert | None:
        """Acknowledge or resolve an alert, queueing ``deliveries`` in the same transaction;
        the updated alert, or None if there is none."""
        field = "acknowledged_at" if status is AlertStatus.ACKNOWLEDGED else "resolved_at"
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT threshold_id, subject_type, subject_id, window_start, level"
                " FROM alerts WHERE id = %s",
                (alert_id,),
            ).fetchone()
            if found is None:
                return None
            self._serialise(conn, (found[0], found[1], found[2], found[3], found[4]))
            row = conn.execute(
                "SELECT doc FROM alerts WHERE id = %s FOR UPDATE", (alert_id,)
            ).fetchone()
            if row is None:
                return None
            alert = UsageAlert.model_validate_json(row[0])
            alert = alert.model_copy(update={"status": status, field: at})
            conn.execute(
                "UPDATE alerts SET status = %s, automatic = %s, doc = %s WHERE id = %s",
                (status.value, automatic, alert.model_dump_json(), alert_id),
            )
            queue_deliveries(conn, deliveries, time.time_ns())
        return alert

    def open_alerts(self, threshold_id: str, window_start: int) -> list[UsageAlert]:
        """The alerts of a threshold and window that are not resolved, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT doc FROM alerts WHERE threshold_id = %s AND window_start = %s"
                " AND status <> 'RESOLVED' ORDER BY created_at, seq",
                (threshold_id, window_start),
            ).fetchall()
        return [UsageAlert.model_validate_json(r[0]) for r in rows]

    def get_alert(self, alert_id: str) -> UsageAlert | None:
        """The alert with this id, or None."""
        with self._transaction() as conn:
            row = conn.execute("SELECT doc FROM alerts WHERE id = %s", (alert_id,)).fetchone()
        return None if row is None else UsageAlert.model_validate_json(row[0])

    def list_alerts(self, status: AlertStatus | None = None) -> list[UsageAlert]:
        """Alerts (optionally of one status), newest first."""
        sql = "SELECT doc FROM alerts"
        params: list[Any] = []
        if status is not None:
            sql += " WHERE status = %s"
            params.append(status.value)
        sql += ' ORDER BY created_at DESC, id COLLATE "C" DESC'
        with self._transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [UsageAlert.model_validate_json(r[0]) for r in rows]
