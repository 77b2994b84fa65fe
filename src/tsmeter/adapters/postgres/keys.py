"""The HTTP API's keys in the PostgreSQL state database (``sql/0005_api_keys.sql``), so every
server of a fleet accepts the same keys and a revocation reaches all of them.

Implements :class:`tsmeter.ports.KeyStore` with the behaviour of the embedded
:class:`~tsmeter.adapters.sqlite.store.SQLiteStore`; it keeps rows only (the key's hash,
never the key: hashing and checking are :class:`tsmeter.access.ApiKeys`'s work).
"""

from __future__ import annotations

from typing import Any

import psycopg

from tsmeter.adapters.postgres.database import StateTables
from tsmeter.errors import ConflictError
from tsmeter.ports import ApiKeyRow

__all__ = ["PostgresKeys"]

_SELECT = "SELECT id, name, scopes, secret_hash, created_at, revoked_at FROM api_keys"


def _row(values: tuple[Any, ...]) -> ApiKeyRow:
    key_id, name, scopes, secret_hash, created_at, revoked_at = values
    return ApiKeyRow(key_id, name, scopes, bytes(secret_hash), created_at, revoked_at)


class PostgresKeys(StateTables):
    """API keys in the state database ``db`` (shared with the other adapters, not closed
    here). Example: ``PostgresKeys(StateDatabase(url)).list_keys()``."""

    holds = "API keys"

    def add_key(self, row: ApiKeyRow) -> None:
        """Store a new key; ConflictError if its id exists."""
        try:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT INTO api_keys (id, name, scopes, secret_hash, created_at,"
                    " revoked_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (row.id, row.name, row.scopes, row.secret_hash, row.created_at,
                     row.revoked_at),
                )  # fmt: skip
        except psycopg.IntegrityError:
            raise ConflictError(f"API key {row.id!r} already exists") from None

    def get_key(self, key_id: str) -> ApiKeyRow | None:
        """The key with this id, or None."""
        with self._transaction() as conn:
            found = conn.execute(_SELECT + " WHERE id = %s", (key_id,)).fetchone()
        return None if found is None else _row(found)

    def list_keys(self) -> list[ApiKeyRow]:
        """Every key, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(_SELECT + " ORDER BY created_at, id").fetchall()
        return [_row(r) for r in rows]

    def revoke_key(self, key_id: str, at: int) -> ApiKeyRow | None:
        """Revoke the key at ``at`` (kept if revoked before); the key now, or None."""
        with self._transaction() as conn:
            found = conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s"
                " RETURNING id, name, scopes, secret_hash, created_at, revoked_at",
                (at, key_id),
            ).fetchone()
        return None if found is None else _row(found)
