"""Versioned schema migrations of the PostgreSQL state store.

Each migration is a file ``sql/NNNN_name.sql`` beside this module, applied once, in the
order of its number, inside one transaction that also records it in ``tsmeter_schema``. A
transaction-scoped advisory lock serialises hosts that start at once: the first applies what
is pending, the others then find nothing left to do. A database whose schema has a migration
this version does not know (a newer tsmeter) is refused rather than used.

``tsmeter state migrate`` applies them by hand; opening a state store applies them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from tsmeter.errors import StorageUnavailableError

__all__ = ["MIGRATIONS", "Migration", "applied", "check", "migrate"]

#: the advisory lock key migrations take (any fixed 64-bit number; "tsmeter" in ASCII)
LOCK_KEY = 0x74736D65746572
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_TABLE = """
CREATE TABLE IF NOT EXISTS tsmeter_schema (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One schema change: its number, name and SQL."""

    version: int
    name: str
    sql: str


def _load() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("tsmeter.adapters.postgres.sql").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return tuple(found)


#: every migration this version knows, in order
MIGRATIONS = _load()


def applied(conn: psycopg.Connection[Any]) -> dict[int, str]:
    """The migrations recorded in the database: version -> name (empty for a new database)."""
    found = conn.execute("SELECT to_regclass('tsmeter_schema') IS NOT NULL").fetchone()
    if not found or not found[0]:
        return {}
    return dict(conn.execute("SELECT version, name FROM tsmeter_schema").fetchall())


def _refuse_newer(done: dict[int, str], where: str) -> None:
    known = {m.version for m in MIGRATIONS}
    newer = sorted(set(done) - known)
    if newer:
        raise StorageUnavailableError(
            f"state store {where}: its schema has migration {newer[-1]}, newer than this"
            f" tsmeter knows ({max(known, default=0)}); upgrade tsmeter"
        )


def check(conn: psycopg.Connection[Any], where: str) -> list[Migration]:
    """The migrations still to apply (none are applied); StorageUnavailableError for a
    schema newer than this version."""
    done = applied(conn)
    conn.rollback()
    _refuse_newer(done, where)
    return [m for m in MIGRATIONS if m.version not in done]


def migrate(
    conn: psycopg.Connection[Any], where: str, *, upto: int | None = None
) -> list[Migration]:
    """Apply the pending migrations (up to version ``upto``) on ``conn`` (a psycopg
    connection, not in autocommit mode); return those applied, in order."""
    done_now: list[Migration] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(_TABLE)
        done = applied(conn)
        _refuse_newer(done, where)
        for migration in MIGRATIONS:
            if migration.version in done or (upto is not None and migration.version > upto):
                continue
            conn.execute(migration.sql)
            conn.execute(
                "INSERT INTO tsmeter_schema (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            done_now.append(migration)
    return done_now
