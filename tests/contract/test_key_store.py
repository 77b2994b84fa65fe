"""The KeyStore contract, and API keys checked through it: on the SQLite state file and on
the fleet's PostgreSQL alike (a real server, started by the tests)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import NASTY_NAMES
from tsmeter.access import ApiKeys, Scope
from tsmeter.errors import ConflictError, NotFoundError
from tsmeter.ports import ApiKeyRow, KeyStore

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
HASH = bytes(range(32))


class KeyPlace:
    """One backing store of API keys; ``open()`` gives another store object on it (another
    connection, or another pool as another server of a fleet would have)."""

    def __init__(self, kind: str, tmp_path: Path, pg_url: str | None) -> None:
        self.kind = kind
        self.path = str(tmp_path / "state.db")
        self.pg_url = pg_url
        self._close: list[Callable[[], None]] = []

    def open(self) -> KeyStore:
        if self.kind == "postgres":
            from tsmeter.adapters.postgres.database import StateDatabase
            from tsmeter.adapters.postgres.keys import PostgresKeys

            assert self.pg_url is not None
            db = StateDatabase(self.pg_url, max_size=2)
            self._close.append(db.close)
            return PostgresKeys(db)
        from tsmeter.adapters.sqlite import SQLiteStore

        store = SQLiteStore(self.path)
        self._close.append(store.close)
        return store

    def close(self) -> None:
        for close in reversed(self._close):
            close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def key_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyPlace]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    place = KeyPlace(request.param, tmp_path, url)
    yield place
    place.close()


@pytest.fixture
def keys(key_place: KeyPlace) -> KeyStore:
    return key_place.open()


def row(n: int, **fields: Any) -> ApiKeyRow:
    values: dict[str, Any] = {"id": f"{n:016x}", "name": f"key {n}", "scopes": "ingest",
                              "secret_hash": HASH, "created_at": T0 + n}  # fmt: skip
    values.update(fields)
    return ApiKeyRow(**values)


def test_a_key_is_stored_as_given_and_listed_oldest_first(keys: KeyStore) -> None:
    rows = [row(3, created_at=T0 + 1), row(1, created_at=T0 + 5, scopes="ingest,read"),
            row(2, created_at=T0 + 1, secret_hash=b"\x00" * 32)]  # fmt: skip
    for r in rows:
        keys.add_key(r)
    assert keys.get_key(row(1).id) == rows[1]
    assert keys.get_key(row(2).id) == rows[2]  # a hash of NUL bytes stays 32 bytes
    assert keys.get_key("0" * 16) is None
    assert keys.list_keys() == [rows[2], rows[0], rows[1]]  # by time, then id


def test_a_duplicate_id_is_a_conflict_and_changes_nothing(keys: KeyStore) -> None:
    keys.add_key(row(1))
    with pytest.raises(ConflictError, match=row(1).id):
        keys.add_key(row(1, name="other", secret_hash=b"x" * 32))
    assert keys.list_keys() == [row(1)]


def test_revoking_keeps_the_first_time_and_says_when_there_is_no_key(keys: KeyStore) -> None:
    keys.add_key(row(1))
    assert keys.revoke_key(row(1).id, T0 + 100) == row(1, revoked_at=T0 + 100)
    assert keys.revoke_key(row(1).id, T0 + 200) == row(1, revoked_at=T0 + 100)
    assert keys.get_key(row(1).id) == row(1, revoked_at=T0 + 100)
    assert keys.revoke_key("f" * 16, T0) is None
    assert keys.list_keys() == [row(1, revoked_at=T0 + 100)]


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_hostile_names_are_data(keys: KeyStore, name: str) -> None:
    keys.add_key(row(1, name=name))
    found = keys.get_key(row(1).id)
    assert found is not None and found.name == name
    assert keys.get_key(name) is None  # a name is never taken for an id


def test_another_connection_sees_keys_and_revocations(key_place: KeyPlace) -> None:
    """What one server (or the CLI) stores, another sharing the state store reads."""
    first, second = key_place.open(), key_place.open()
    first.add_key(row(1))
    assert second.get_key(row(1).id) == row(1)
    second.revoke_key(row(1).id, T0 + 9)
    assert first.get_key(row(1).id) == row(1, revoked_at=T0 + 9)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_api_keys_through_the_store(key_place: KeyPlace) -> None:
    """A key made on one server is accepted by another; a revocation is honoured at once by
    the object that revoked it and within the cache time by the others."""
    clock = Clock()
    here = ApiKeys(key_place.open(), cache_seconds=5, clock=clock)
    there = ApiKeys(key_place.open(), cache_seconds=5, clock=clock)
    issued = here.create('\\\u29f5 billing, "svc"', ["read", Scope.INGEST, "read"])
    assert issued.api_key.scopes == (Scope.INGEST, Scope.READ)
    assert issued.key.startswith(f"tsm_{issued.api_key.id}_")
    assert here.authenticate(issued.key) == issued.api_key
    assert there.authenticate(issued.key) == issued.api_key
    assert there.list() == [issued.api_key]
    assert here.revoke(issued.api_key.id).revoked
    assert here.authenticate(issued.key) is None  # at once where it was revoked
    assert there.authenticate(issued.key) == issued.api_key  # cached
    clock.now += 5
    assert there.authenticate(issued.key) is None  # within the cache time
    with pytest.raises(NotFoundError, match="'nope'"):
        here.revoke("nope")


def test_an_older_state_file_gets_the_key_table(tmp_path: Path) -> None:
    """A state file written before API keys existed is given the table when opened."""
    from tsmeter.adapters.sqlite import SQLiteStore

    path = str(tmp_path / "old.db")
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE api_keys")
    conn.close()
    store = SQLiteStore(path)
    try:
        store.add_key(row(1))
        assert store.list_keys() == [row(1)]
    finally:
        store.close()
