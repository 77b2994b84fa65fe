"""API keys: made, listed, revoked and checked; only their SHA-256 is stored.

A key reads ``tsm_<id>_<secret>``: ``id`` (16 hex digits) finds its row in the state store
and is shown by ``tsmeter apikey list``; ``secret`` is 32 random bytes from :mod:`secrets`
(base64url). The store keeps SHA-256 of the whole key. A fast hash is sound here, unlike for
passwords: a key carries 256 random bits, so no guess list or brute force can find it from its
hash, and checking it costs microseconds, which keeps the per-request cost inside the API's
latency target. A slow hash (scrypt, argon2) would add milliseconds to every request and buy
nothing against keys nobody chose.

Hashes are compared with :func:`hmac.compare_digest`. Checked keys are cached in memory for
``cache_seconds`` (keyed by the hash, never the key), so a request costs no database round
trip; a key revoked through this object is refused at once, one revoked elsewhere (the CLI,
another server of the fleet) within ``cache_seconds``. Keys are never logged: the key exists
only in :class:`IssuedKey`, returned once by :meth:`ApiKeys.create`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from tsmeter.domain import Model
from tsmeter.domain.validation import check_name, from_ns
from tsmeter.errors import NotFoundError, ValidationError
from tsmeter.ports import ApiKeyRow, KeyStore

__all__ = ["KEY_PREFIX", "ApiKey", "ApiKeys", "IssuedKey", "Scope"]

#: how every key starts, so secret scanners and people can tell one
KEY_PREFIX = "tsm_"
_SECRET_BYTES = 32
_KEY = re.compile(r"tsm_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class Scope(StrEnum):
    """What a key may do: ``ingest`` records usage, ``read`` reads it (metrics, usage,
    summaries, thresholds, alerts), ``admin`` everything (it implies the others)."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


class ApiKey(Model):
    """An API key as listed: never its secret."""

    id: str
    name: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked."""
        return self.revoked_at is not None

    def allows(self, scope: Scope | str) -> bool:
        """Whether the key grants ``scope`` (``admin`` grants every scope)."""
        return Scope.ADMIN in self.scopes or Scope(scope) in self.scopes


class IssuedKey(NamedTuple):
    """A key just made: the listed key and the key itself, shown this once."""

    api_key: ApiKey
    key: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _scopes(given: Iterable[Scope | str]) -> tuple[Scope, ...]:
    chosen: set[Scope] = set()
    for scope in given:
        try:
            chosen.add(Scope(str(scope).lower()))
        except ValueError:
            allowed = ", ".join(s.value for s in Scope)
            raise ValidationError("scope", f"must be one of {allowed}, got {scope!r}") from None
    if not chosen:
        raise ValidationError("scope", "give at least one scope (ingest, read, admin)")
    return tuple(s for s in Scope if s in chosen)


def _model(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        scopes=tuple(Scope(s) for s in row.scopes.split(",") if s),
        created_at=from_ns(row.created_at),
        revoked_at=None if row.revoked_at is None else from_ns(row.revoked_at),
    )


class ApiKeys:
    """The API keys kept in ``store``; thread-safe.

    ``cache_seconds``: how long a checked key (valid or not) is trusted without reading the
    store again, so how long a revocation made elsewhere may take to reach this process;
    ``max_cached`` bounds the cache. Example::

        issued = meter.api_keys.create("billing-service", ["ingest"])
        meter.api_keys.authenticate(issued.key).allows("ingest")  # True
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        cache_seconds: float = 5.0,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.cache_seconds = cache_seconds
        self._max_cached = max_cached
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[bytes, tuple[float, ApiKey | None]] = {}

    def create(self, name: str, scopes: Iterable[Scope | str]) -> IssuedKey:
        """Make a key named ``name`` (any text, 1 to 256 characters; names need not be
        unique) with ``scopes``; the key itself is in the result only, never stored."""
        check_name("name", name)
        chosen = _scopes(scopes)
        key_id = secrets.token_hex(8)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        row = ApiKeyRow(key_id, name, ",".join(chosen), _digest(key), time.time_ns())
        self._store.add_key(row)
        return IssuedKey(_model(row), key)

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        return [_model(r) for r in self._store.list_keys()]

    def get(self, key_id: str) -> ApiKey:
        """The key with id ``key_id``; NotFoundError if there is none."""
        row = self._store.get_key(key_id)
        if row is None:
            raise NotFoundError(f"API key {key_id!r} not found")
        return _model(row)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key ``key_id`` (again: nothing changes); refused from now on by this
        object, within ``cache_seconds`` by others. NotFoundError if there is none."""
        row = self._store.revoke_key(key_id, time.time_ns())
        if row is None:
            raise NotFoundError(f"API key {key_id!r} not found")
        with self._lock:
            self._cache.pop(row.secret_hash, None)
        return _model(row)

    def cached(self, key: str) -> tuple[bool, ApiKey | None]:
        """``(True, what authenticate gives)`` when the answer for ``key`` is cached and
        fresh (no I/O: safe on an event loop), else ``(False, None)``."""
        if not _KEY.fullmatch(key):
            return True, None
        entry = self._cache.get(_digest(key))
        if entry is None or entry[0] <= self._clock():
            return False, None
        return True, entry[1]

    def authenticate(self, key: str) -> ApiKey | None:
        """The key ``key`` grants, or None for a malformed, unknown or revoked key (the
        caller answers all three alike). Reads the store unless the answer is cached."""
        found, cached = self.cached(key)
        if found:
            return cached
        digest = _digest(key)
        match = _KEY.fullmatch(key)
        assert match is not None  # cached() answered for a malformed key
        row = self._store.get_key(match[1])
        valid = (
            row is not None
            and row.revoked_at is None
            and hmac.compare_digest(row.secret_hash, digest)
        )
        granted = _model(row) if valid and row is not None else None
        with self._lock:
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[digest] = (self._clock() + self.cache_seconds, granted)
        return granted
