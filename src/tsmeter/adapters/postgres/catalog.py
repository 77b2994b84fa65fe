"""The catalog in the PostgreSQL state database: metric definitions, thresholds and alerts,
shared by every host of a fleet.

Implements :class:`tsmeter.ports.Catalog` on the tables of ``sql/0001_catalog.sql`` with the
behaviour of the embedded :class:`~tsmeter.adapters.sqlite.store.SQLiteStore`. Opening an
alert is once fleet-wide: a transaction-scoped advisory lock on the alert's threshold and
window serialises the monitors (and people) that open or resolve its alerts, so the check "no
open alert, none resolved by hand" and the insert are one step, for one alert or for a whole
batch (one lock, however many subjects); the partial unique index on open alerts stands
behind it. An alert's deliveries are queued in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from tsmeter.adapters.postgres.database import StateTables
from tsmeter.adapters.postgres.deliveries import queue_deliveries
from tsmeter.domain import AlertStatus, MetricDefinition, UsageAlert, UsageThreshold
from tsmeter.domain.models import STORED
from tsmeter.domain.validation import to_ns
from tsmeter.errors import ConflictError
from tsmeter.ports import AlertOpening, AlertResolution, DeliveryRow

__all__ = ["PostgresCatalog"]

#: the first half of the two-key advisory locks on alert windows ("alrt" in ASCII), apart
#: from the one-key locks others take (migrations)
_ALERT_LOCKS = 0x616C7274
AlertKey = tuple[str, str, str, int, str]  # threshold, subject type, subject id, window, level
Family = tuple[str, int]  # threshold, window: the alerts one lock covers


def _lock_key(family: Family) -> int:
    """A signed 32-bit number for a (threshold, window); two that share one only wait for
    each other, which costs time, never correctness."""
    digest = hashlib.blake2b(json.dumps(family).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresCatalog(StateTables):
    """Metrics, thresholds and alerts in the state database ``db``.

    The database is shared with the other PostgreSQL adapters and is not closed here.
    Example: ``PostgresCatalog(StateDatabase(url)).list_metrics()``.
    """

    holds = "catalog"

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
    def _serialise(conn: psycopg.Connection[Any], families: Iterable[Family]) -> None:
        """Wait for every other transaction on the alerts of these (threshold, window) pairs,
        until this one ends (locks taken in one order, so two batches never deadlock)."""
        keys = sorted({_lock_key(f) for f in families})
        if keys:
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) AS k ORDER BY k",
                (_ALERT_LOCKS, keys),
            )

    def open_alert(
        self, alert: UsageAlert, window_start: int, deliveries: Sequence[DeliveryRow] = ()
    ) -> bool:
        """Store a new alert unless one is open, or was resolved by hand, for its key; queue
        its ``deliveries`` in the same transaction; once across every host that tries (a
        batch of one)."""
        return self.open_alert_batch([AlertOpening(alert, window_start, deliveries)])[0]

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
            self._serialise(conn, [(found[0], found[3])])
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

    def open_alert_batch(self, openings: Sequence[AlertOpening]) -> list[bool]:
        """:meth:`open_alert` for each of ``openings``, in one transaction under one lock per
        (threshold, window): once across every host that tries."""
        if not openings:
            return []
        families = {(o.alert.threshold_id, o.window_start) for o in openings}
        now = time.time_ns()
        with self._transaction() as conn:
            self._serialise(conn, families)
            taken: set[AlertKey] = set()
            for threshold_id, window_start in families:
                rows = conn.execute(
                    "SELECT subject_type, subject_id, level FROM alerts"
                    " WHERE threshold_id = %s AND window_start = %s"
                    " AND (status <> 'RESOLVED' OR NOT automatic)",
                    (threshold_id, window_start),
                ).fetchall()
                taken.update((threshold_id, st, si, window_start, lv) for st, si, lv in rows)
            chosen: list[AlertOpening] = []
            decided: list[bool] = []  # per opening: whether it is tried (its key was free)
            ids: set[str] = set()  # an alert id twice in the batch is tried once
            for opening in openings:
                a = opening.alert
                key = (a.threshold_id, a.subject_type, a.subject_id, opening.window_start, a.level)
                free = key not in taken and a.id not in ids
                decided.append(free)
                if free:
                    taken.add(key)
                    ids.add(a.id)
                    chosen.append(opening)
            columns: list[list[Any]] = [[] for _ in range(9)]
            for a, window_start, _ in chosen:
                created = to_ns(a.created_at) if a.created_at else now
                values = (a.id, a.threshold_id, a.subject_type, a.subject_id, window_start,
                          a.level, a.status.value, created, a.model_dump_json())  # fmt: skip
                for column, value in zip(columns, values, strict=True):
                    column.append(value)
            inserted = {
                row[0] for row in conn.execute(
                    "INSERT INTO alerts (id, threshold_id, subject_type, subject_id,"
                    " window_start, level, status, created_at, doc)"
                    " SELECT a, b, c, d, e, f, g, h, i FROM unnest(%s::text[], %s::text[],"
                    " %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],"
                    " %s::bigint[], %s::text[]) WITH ORDINALITY AS t(a, b, c, d, e, f, g, h, i, n)"
                    " ORDER BY n ON CONFLICT DO NOTHING RETURNING id",
                    columns,
                ).fetchall()
            }  # fmt: skip
            queue_deliveries(
                conn, [d for o in chosen if o.alert.id in inserted for d in o.deliveries], now
            )
        return [free and o.alert.id in inserted for free, o in zip(decided, openings, strict=True)]

    def resolve_alert_batch(
        self, resolutions: Sequence[AlertResolution]
    ) -> list[UsageAlert | None]:
        """Resolve the alerts of ``resolutions`` that are still open (by the monitor), queueing
        their deliveries, in one transaction under the locks of their (threshold, window)."""
        if not resolutions:
            return []
        ids = [r.alert_id for r in resolutions]
        out: list[UsageAlert | None] = []
        with self._transaction() as conn:
            families = conn.execute(
                "SELECT DISTINCT threshold_id, window_start FROM alerts WHERE id = ANY(%s)",
                (ids,),
            ).fetchall()
            self._serialise(conn, [(f[0], f[1]) for f in families])
            docs: dict[str, str] = dict(
                conn.execute(
                    "SELECT id, doc FROM alerts WHERE id = ANY(%s) AND status <> 'RESOLVED'"
                    " FOR UPDATE",
                    (ids,),
                ).fetchall()
            )
            updated: list[tuple[str, str]] = []
            queued: list[DeliveryRow] = []
            for alert_id, at, deliveries in resolutions:
                doc = docs.pop(alert_id, None)
                if doc is None:  # unknown, resolved already, or twice in the batch
                    out.append(None)
                    continue
                alert = UsageAlert.model_validate_json(doc)
                alert = alert.model_copy(update={"status": AlertStatus.RESOLVED, "resolved_at": at})
                out.append(alert)
                updated.append((alert.model_dump_json(), alert_id))
                queued.extend(deliveries)
            if updated:
                conn.execute(
                    "UPDATE alerts SET status = 'RESOLVED', automatic = true, doc = u.doc"
                    " FROM unnest(%s::text[], %s::text[]) AS u(doc, id) WHERE alerts.id = u.id",
                    ([u[0] for u in updated], [u[1] for u in updated]),
                )
            queue_deliveries(conn, queued, time.time_ns())
        return out

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
