"""The notification delivery queue in the PostgreSQL state database, shared by a fleet.

Implements :class:`tsmeter.ports.DeliveryQueue` on the ``notify_deliveries`` table
(``sql/0002_deliveries.sql``), with the behaviour of the SQLite
:class:`~tsmeter.integrations.notify.log.DeliveryLog`. Claiming is once across processes and
hosts: due rows are locked with ``FOR UPDATE SKIP LOCKED`` (a row another worker is claiming
is passed over, not waited for) and stamped with a lease, ``claimed_until``, measured on the
database's clock so hosts whose clocks disagree cannot shorten it; a worker that dies holding
claims releases them when the lease runs out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from tsmeter.adapters.postgres.database import StateTables
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

__all__ = ["PostgresDeliveryLog", "queue_deliveries"]

# now, in ns since the epoch, on the database's clock
_NOW = "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"

_INSERT = (
    "INSERT INTO notify_deliveries (id, alert_id, event, channel, target, metric_key,"
    " subject_type, subject_id, payload, status, last_error, next_attempt_at, created_at,"
    " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)

# The oldest due rows nobody holds a live claim on, locked so that a concurrent claim skips
# them; the lock's re-check of the WHERE clause drops a row a worker claimed meanwhile.
_CLAIM = f"""
WITH now AS (SELECT {_NOW} AS ns),
due AS (
    SELECT d.id FROM notify_deliveries d, now
    WHERE d.status = 'pending' AND d.next_attempt_at <= %(at)s AND d.channel = ANY(%(channels)s)
      AND (d.claimed_until IS NULL OR d.claimed_until <= now.ns)
    ORDER BY d.next_attempt_at, d.seq
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE notify_deliveries d SET claimed_until = now.ns + %(lease)s
FROM due, now WHERE d.id = due.id
RETURNING d.id, d.event, d.channel, d.target, d.payload, d.attempts, d.next_attempt_at, d.seq
"""


def queue_deliveries(
    conn: psycopg.Connection[Any], deliveries: Sequence[DeliveryRow], now: int
) -> int:
    """Queue notifications inside the caller's transaction (the catalog's alert change, or
    :meth:`PostgresDeliveryLog.enqueue`); one already queued for the same (alert, event,
    channel, target), or with the same id, stays as it is. Returns how many were new."""
    if not deliveries:
        return 0
    params = [
        (d.id, d.alert_id, d.event, Channel(d.channel).value, d.target, d.metric_key,
         d.subject_type, d.subject_id, d.payload,
         (DeliveryStatus.FAILED if d.error else DeliveryStatus.PENDING).value, d.error, now, now,
         now)
        for d in deliveries
    ]  # fmt: skip
    with conn.cursor() as cur:  # one pipeline, not a round trip per delivery
        cur.executemany(_INSERT, params)
        return max(cur.rowcount, 0)  # the rows inserted by every statement


class PostgresDeliveryLog(StateTables):
    """The ``notify_deliveries`` table of the state database ``db``.

    The database is shared with the other PostgreSQL adapters and is not closed here.
    Example: ``PostgresDeliveryLog(StateDatabase(url)).entries("pending")``.
    """

    holds = "delivery log"

    def enqueue(self, items: Sequence[DeliveryRow], now: int) -> int:
        """Add the deliveries not logged yet (by alert, event, channel, target); return how
        many were new."""
        if not items:
            return 0
        with self._transaction() as conn:
            return queue_deliveries(conn, items, now)

    def claim_due(
        self, now: int, clock: int, lease: int, limit: int, channels: Sequence[Channel]
    ) -> list[Claimed]:
        """Claim up to ``limit`` pending deliveries on ``channels`` that are due at ``now`` and
        not claimed by a live lease, for ``lease`` ns of the database's clock (``clock``, the
        caller's time, is not used: hosts' clocks may differ)."""
        if not channels or limit <= 0:
            return []
        params = {"at": now, "channels": [Channel(c).value for c in channels],
                  "limit": limit, "lease": lease}  # fmt: skip
        with self._transaction() as conn:
            rows = conn.execute(_CLAIM, params).fetchall()
        rows.sort(key=lambda r: (r[6], r[7]))  # RETURNING has no order: oldest due first
        return [Claimed(r[0], r[1], Channel(r[2]), r[3], r[4], r[5]) for r in rows]

    def count_due(self, now: int, channel: Channel) -> int:
        """How many pending deliveries on ``channel`` are due at ``now``."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT count(*) FROM notify_deliveries"
                " WHERE status = 'pending' AND channel = %s AND next_attempt_at <= %s",
                (Channel(channel).value, now),
            ).fetchone()
        return int(row[0]) if row else 0

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
        with self._transaction() as conn:
            conn.execute(
                "UPDATE notify_deliveries SET status = %(status)s, attempts = attempts + 1,"
                " last_error = %(error)s,"
                " next_attempt_at = COALESCE(%(next)s::bigint, next_attempt_at),"
                " claimed_until = NULL, updated_at = %(now)s,"
                " delivered_at = CASE WHEN %(status)s = 'delivered' THEN %(now)s::bigint"
                " ELSE delivered_at END WHERE id = %(id)s",
                {"status": DeliveryStatus(status).value, "error": error,
                 "next": next_attempt_at, "now": now, "id": delivery_id},
            )  # fmt: skip

    def requeue_failed(self, now: int, ids: Sequence[str] | None = None) -> int:
        """Make failed deliveries (all, or those in ``ids``) pending again with a fresh
        attempt count; return how many."""
        sql = (
            "UPDATE notify_deliveries SET status = 'pending', attempts = 0,"
            " next_attempt_at = %s, updated_at = %s WHERE status = 'failed'"
        )
        params: list[Any] = [now, now]
        if ids is not None:
            sql += " AND id = ANY(%s)"
            params.append(list(ids))
        with self._transaction() as conn:
            return max(conn.execute(sql, params).rowcount, 0)

    def next_due(self, channels: Sequence[Channel]) -> int | None:
        """When the earliest pending delivery on ``channels`` can be attempted (its due time,
        or the end of its claim if later), or None."""
        if not channels:
            return None
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT min(greatest(next_attempt_at, coalesce(claimed_until, 0)))"
                " FROM notify_deliveries WHERE status = 'pending' AND channel = ANY(%s)",
                ([Channel(c).value for c in channels],),
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def entries(
        self, status: DeliveryStatus | str | None = None, limit: int | None = None
    ) -> list[Delivery]:
        """Deliveries, oldest first; only those with ``status`` if given."""
        sql = f"SELECT {DELIVERY_COLUMNS} FROM notify_deliveries"
        params: list[Any] = []
        if status is not None:
            params.append(status_filter(status).value)
            sql += " WHERE status = %s"
        sql += " ORDER BY created_at, seq"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self._transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [delivery_from_row(row) for row in rows]
