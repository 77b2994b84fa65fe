"""The distinct values of metrics' open dimensions in the SQLite state file (the
:class:`~tsmeter.ports.DimensionValues` port of :class:`~tsmeter.adapters.sqlite.SQLiteStore`).

Admitting is one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock serialises every process
of the host on the file, so two of them cannot both take the last free value of a dimension.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection

__all__ = ["DIMENSIONS_DDL", "admit", "known"]

DIMENSIONS_DDL = """
-- The values each open dimension of each metric has taken (at most its max_values).
CREATE TABLE IF NOT EXISTS dimension_values (
    metric_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (metric_id, name, value)
) WITHOUT ROWID;
"""


def admit(
    conn: sqlite3.Connection, metric_id: str, name: str, values: Collection[str], limit: int
) -> set[str]:
    """Admit ``values`` inside the caller's write transaction (see the port): the values
    refused, none kept, when they would make more than ``limit``."""
    wanted = sorted(set(values))
    if not wanted:
        return set()
    listed = json.dumps(wanted)
    have = {
        value
        for (value,) in conn.execute(
            "SELECT value FROM dimension_values WHERE metric_id = ? AND name = ?"
            " AND value IN (SELECT value FROM json_each(?))",
            (metric_id, name, listed),
        )
    }
    new = [value for value in wanted if value not in have]
    if not new:
        return set()
    (count,) = conn.execute(
        "SELECT count(*) FROM dimension_values WHERE metric_id = ? AND name = ?",
        (metric_id, name),
    ).fetchone()
    if count + len(new) > limit:
        return set(new)
    conn.executemany(
        "INSERT INTO dimension_values (metric_id, name, value) VALUES (?, ?, ?)",
        [(metric_id, name, value) for value in new],
    )
    return set()


def known(conn: sqlite3.Connection, metric_id: str, name: str) -> set[str]:
    """The values admitted so far."""
    return {
        value
        for (value,) in conn.execute(
            "SELECT value FROM dimension_values WHERE metric_id = ? AND name = ?",
            (metric_id, name),
        )
    }
