"""The durable delivery log: one row per (alert, event, channel, target), in SQLite.

The table lives in the file the caller names (usually the Meter's state file) and is
created if missing. Several processes may share it: a delivery is *claimed* for a
short lease before it is attempted, so two workers never send it at once, and a
worker that dies mid-attempt only delays it until the lease runs out.
"""

from __future__ import annotations

from collections.abc import Sequence

from tsmeter._sqlite import DELIVERIES_DDL, StateFile
from tsmeter.domain import Model
from tsmeter.domain.deliveries import (
    DELIVERY_COLUMNS,
    Channel,
    Claimed,
    Delivery,
    DeliveryStatus,
    delivery_from_row,
    status_filter,
)
from tsmeter.ports import DeliveryRow

__all__ = [
    "Channel",
    "Claimed",
    "Delivery",
    "DeliveryCounts",
    "DeliveryLog",
    "DeliveryStatus",
    "NewDelivery",
]

# The table is part of the store's schema: the monitor queues deliveries in the transaction
# that opens the alert (see tsmeter.ports.Catalog.open_alert).
DDL = DELIVERIES_DDL


class DeliveryCounts(Model):
    """What one delivery pass did: sent, scheduled for another attempt, given up on, and
    left alone because their channel is not configured here (email without an SMTP host)."""

    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    skipped: int = 0


#: A delivery to enqueue (``error`` set: recorded as failed at once, never attempted).
NewDelivery = DeliveryRow


class DeliveryLog(StateFile):
    """The ``notify_deliveries`` table in the SQLite file at ``path``: the
    :class:`~tsmeter.ports.DeliveryQueue` of one host (a fleet's is on PostgreSQL).

    Example: ``DeliveryLog("state.db").list("pending")``.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, DDL, "delivery log")

    def enqueue(self, items: Sequence[NewDelivery], now: int) -> int:
        """Add the deliveries not logged yet (by alert, event, channel, target); return how
        many were new."""
        added = 0
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            for d in items:
                status = DeliveryStatus.FAILED if d.error else DeliveryStatus.PENDING
                cursor = conn.execute(
                    "INSERT INTO notify_deliveries (id, alert_id, event, channel, target,"
                    " metric_key, subject_type, subject_id, payload, status, last_error,"
                    " next_attempt_at, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (d.id, d.alert_id, d.event, Channel(d.channel).value, d.target, d.metric_key,
                     d.subject_type, d.subject_id, d.payload, status.value, d.error, now, now,
                     now),
                )  # fmt: skip
                added += cursor.rowcount
            conn.execute("COMMIT")
        return added

    def claim_due(
        self, now: int, clock: int, lease: int, limit: int, channels: Sequence[Channel]
    ) -> list[Claimed]:
        """Claim up to ``limit`` pending deliveries on ``channels`` that are due at ``now`` and
        not claimed by another worker at ``clock`` (the real time), until ``clock + lease``."""
        if not channels:
            return []
        marks = ", ".join("?" for _ in channels)
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                "SELECT id, event, channel, target, payload, attempts FROM notify_deliveries"
                f" WHERE status = 'pending' AND next_attempt_at <= ? AND channel IN ({marks})"
                " AND (claimed_until IS NULL OR claimed_until <= ?)"
                " ORDER BY next_attempt_at, rowid LIMIT ?",
                (now, *[c.value for c in channels], clock, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE notify_deliveries SET claimed_until = ? WHERE id = ?",
                [(clock + lease, row[0]) for row in rows],
            )
            conn.execute("COMMIT")
        return [Claimed(r[0], r[1], Channel(r[2]), r[3], r[4], r[5]) for r in rows]

    def count_due(self, now: int, channel: Channel) -> int:
        """How many pending deliveries on ``channel`` are due at ``now``."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM notify_deliveries"
                " WHERE status = 'pending' AND channel = ? AND next_attempt_at <= ?",
                (channel.value, now),
            ).fetchone()
        return int(row[0])

    def finish(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        now: int,
        *,
        error: str | None = None,
        next_attempt_at: int | None = None,
    ) -> None:
        """Record one attempt's outcome and release the claim."""
        with self._write() as conn:
            conn.execute(
                "UPDATE notify_deliveries SET status = ?, attempts = attempts + 1,"
                " last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at),"
                " claimed_until = NULL, updated_at = ?,"
                " delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END"
                " WHERE id = ?",
                (status.value, error, next_attempt_at, now, status.value, now, delivery_id),
            )

    def requeue_failed(self, now: int, ids: Sequence[str] | None = None) -> int:
        """Make failed deliveries (all, or those in ``ids``) pending again with a fresh
        attempt count; return how many."""
        sql = (
            "UPDATE notify_deliveries SET status = 'pending', attempts = 0,"
            " next_attempt_at = ?, updated_at = ? WHERE status = 'failed'"
        )
        with self._write() as conn:
            if ids is None:
                return conn.execute(sql, (now, now)).rowcount
            conn.execute("BEGIN IMMEDIATE")
            count = sum(conn.execute(sql + " AND id = ?", (now, now, i)).rowcount for i in ids)
            conn.execute("COMMIT")
            return count

    def next_due(self, channels: Sequence[Channel]) -> int | None:
        """When the earliest pending delivery on ``channels`` is due (ns), or None."""
        if not channels:
            return None
        marks = ", ".join("?" for _ in channels)
        with self._write() as conn:
            row = conn.execute(
                "SELECT MIN(MAX(next_attempt_at, COALESCE(claimed_until, 0)))"
                f" FROM notify_deliveries WHERE status = 'pending' AND channel IN ({marks})",
                [c.value for c in channels],
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def entries(
        self, status: DeliveryStatus | str | None = None, limit: int | None = None
    ) -> list[Delivery]:
        """Deliveries, oldest first; only those with ``status`` if given."""
        sql = f"SELECT {DELIVERY_COLUMNS} FROM notify_deliveries"
        params: list[object] = []
        if status is not None:
            params.append(status_filter(status).value)
            sql += " WHERE status = ?"
        sql += " ORDER BY created_at, rowid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._write() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [delivery_from_row(row) for row in rows]
