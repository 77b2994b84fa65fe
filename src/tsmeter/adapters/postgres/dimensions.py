"""The distinct values of metrics' open dimensions in the PostgreSQL state database
(``sql/0006_dimension_values.sql``), shared by a fleet so that a dimension's ``max_values``
holds on every host at once.

Implements :class:`tsmeter.ports.DimensionValues` with the behaviour of the SQLite state file
(:mod:`tsmeter.adapters.sqlite.dimensions`). Admitting takes a transaction-scoped advisory
lock on the (metric, dimension) pair first, so two hosts racing for its last free value are
serialised: the second sees the first's value counted.
"""

from __future__ import annotations

from collections.abc import Collection

from tsmeter.adapters.postgres.database import StateTables

__all__ = ["PostgresDimensionValues"]

#: the first key of the advisory locks taken here (any fixed 32-bit number; "dims")
LOCK_SPACE = 0x64696D73


class PostgresDimensionValues(StateTables):
    """Dimension values in the state database ``db`` (shared with the other adapters, not
    closed here). Example: ``PostgresDimensionValues(StateDatabase(url)).known(mid, "model")``.
    """

    holds = "dimension values"

    def admit(self, metric_id: str, name: str, values: Collection[str], limit: int) -> set[str]:
        """Admit the values of a metric's open dimension, at most ``limit`` (see the port)."""
        wanted = sorted(set(values))
        if not wanted:
            return set()
        with self._transaction() as conn:
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (LOCK_SPACE, f"{metric_id}\x1f{name}"),
            )
            have = {
                value
                for (value,) in conn.execute(
                    "SELECT value FROM dimension_values WHERE metric_id = %s AND name = %s"
                    " AND value = ANY(%s)",
                    (metric_id, name, wanted),
                )
            }
            new = [value for value in wanted if value not in have]
            if not new:
                return set()
            row = conn.execute(
                "SELECT count(*) FROM dimension_values WHERE metric_id = %s AND name = %s",
                (metric_id, name),
            ).fetchone()
            if row is None or row[0] + len(new) > limit:
                return set(new)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO dimension_values (metric_id, name, value) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(metric_id, name, value) for value in new],
                )
        return set()

    def known(self, metric_id: str, name: str) -> set[str]:
        """The values of a metric's open dimension admitted so far."""
        with self._transaction() as conn:
            return {
                value
                for (value,) in conn.execute(
                    "SELECT value FROM dimension_values WHERE metric_id = %s AND name = %s",
                    (metric_id, name),
                )
            }
