"""One PostgreSQL state database: its URL, a connection pool, errors and the schema.

:class:`StateDatabase` is opened once per process and shared by the adapters that keep state
in it (catalog, deliveries, leases, dedupe). Opening it checks the login at once and brings
the schema up to date (:mod:`tsmeter.adapters.postgres.migrations`), so a wrong URL or
password is one clear error at start, not a failure at the first record. Every error names
the URL without its password.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tsmeter.errors import StorageUnavailableError, ValidationError
from tsmeter.extras import needs

with needs("postgres"):  # the extra is not installed: say which to install
    import psycopg
    import psycopg_pool

__all__ = ["StateDatabase", "redact"]

SCHEMES = ("postgresql://", "postgres://")
_SECRET_PARAMS = {"password", "passfile", "sslpassword"}


def redact(url: str) -> str:
    """``url`` without its password (in the user part or the query), for messages and logs.

    >>> redact("postgresql://meter:s3cret@db.internal:5432/state?password=x&sslmode=require")
    'postgresql://meter:***@db.internal:5432/state?password=***&sslmode=require'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, host = netloc.rsplit("@", 1)
            if ":" in user:
                user = user.split(":", 1)[0] + ":***"
            netloc = f"{user}@{host}"
        query = urlencode(
            [(k, "***" if k in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query)],
            safe="*",
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "postgresql://(unreadable URL)"


class StateDatabase:
    """A pool of connections to the PostgreSQL database at ``url`` (``postgresql://``).

    ``max_size`` bounds the connections this process opens; ``timeout`` (s) is how long a
    connection attempt, or a wait for a free connection, may take. ``migrate``: apply the
    schema's pending migrations on open (several hosts opening at once is safe: one applies
    them, the others wait for it).

    Example: ``db = StateDatabase("postgresql://meter:pw@127.0.0.1:5432/tsmeter")``.
    """

    def __init__(
        self, url: str, *, max_size: int = 8, timeout: float = 10.0, migrate: bool = True
    ) -> None:
        if not url.startswith(SCHEMES):
            raise ValidationError("state", f"not a postgresql:// URL: {redact(url)!r}")
        self.url = url
        self.where = redact(url)
        self.timeout = timeout
        self._closed = False
        self._close_lock = threading.Lock()
        # one direct connection first: its error says what is wrong (refused, login, no
        # database), where the pool would only time out
        try:
            first = psycopg.connect(url, connect_timeout=max(1, round(timeout)))
        except psycopg.Error as exc:
            raise self.unavailable("cannot connect", exc) from None
        try:
            if migrate:
                from tsmeter.adapters.postgres.migrations import migrate as apply

                apply(first, self.where)
            else:
                from tsmeter.adapters.postgres.migrations import check

                check(first, self.where)
        except psycopg.Error as exc:
            raise self.unavailable("cannot prepare the schema", exc) from None
        finally:
            first.close()
        self.pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = (
            psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=max_size,
                timeout=timeout,
                kwargs={"connect_timeout": max(1, round(timeout))},
                open=False,
                name="tsmeter-state",
            )
        )
        try:
            self.pool.open(wait=True, timeout=timeout)
        except Exception as exc:
            raise self.unavailable("cannot open the connection pool", exc) from None

    def unavailable(self, doing: str, exc: BaseException) -> StorageUnavailableError:
        """The error to raise for ``exc``: what failed, where (no password), and why."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StorageUnavailableError(f"state store {self.where}: {doing}: {reason}")

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection in a transaction, committed when the block ends without an
        error, rolled back otherwise; errors of the server become StorageUnavailableError
        (IntegrityError passes through, for the caller to turn into its own error)."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.IntegrityError:
            raise
        except psycopg.Error as exc:
            raise self.unavailable("failed", exc) from exc
        except psycopg_pool.PoolTimeout as exc:
            raise self.unavailable("no connection", exc) from exc

    def close(self) -> None:
        """Close the pool (once; later calls do nothing)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.pool.close()


class StateTables:
    """An adapter over tables of a shared :class:`StateDatabase`: its transactions, refused
    once it is closed; closing it leaves the database open for the other adapters."""

    #: what the adapter holds, named in the error once it is closed
    holds = "state"

    def __init__(self, db: StateDatabase) -> None:
        self.db = db
        self._closed = False

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StorageUnavailableError(f"{self.holds} in {self.db.where} is closed")
        with self.db.transaction() as conn:
            yield conn

    def close(self) -> None:
        """Stop using the database (idempotent); the shared StateDatabase stays open."""
        self._closed = True
