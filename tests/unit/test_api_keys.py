"""API keys without a server: their form, what is stored (only a hash), scopes, and the
cache that keeps a request free of a store round trip (on the embedded state file)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tsmeter
from tsmeter.access import ApiKey, ApiKeys, Scope
from tsmeter.adapters.sqlite import SQLiteStore
from tsmeter.errors import NotFoundError, ValidationError


class CountingStore(SQLiteStore):
    """The embedded store, counting key look-ups (to see what the cache saves)."""

    lookups = 0

    def get_key(self, key_id: str):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return super().get_key(key_id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    opened = CountingStore(str(tmp_path / "state.db"))
    yield opened
    opened.close()


@pytest.fixture
def keys(store: CountingStore) -> ApiKeys:
    return ApiKeys(store)


def test_a_key_is_shown_once_and_only_its_hash_is_stored(
    keys: ApiKeys, store: CountingStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issued = keys.create("billing", ["ingest"])
    prefix, key_id, secret = issued.key.split("_", 2)
    assert (prefix, key_id) == ("tsm", issued.api_key.id)
    assert len(key_id) == 16 and len(secret) == 43  # 32 random bytes, base64url
    (stored,) = store.list_keys()
    assert stored.secret_hash == hashlib.sha256(issued.key.encode()).digest()
    assert secret.encode() not in (tmp_path / "state.db").read_bytes()
    assert secret not in caplog.text
    assert "key" not in issued.api_key.to_json_dict()  # the listed key has no secret
    assert issued.api_key == keys.get(key_id) == keys.list()[0]


def test_keys_differ_each_time(keys: ApiKeys) -> None:
    made = {keys.create("same name", ["read"]).key for _ in range(20)}
    assert len(made) == 20
    assert len({k.id for k in keys.list()}) == 20


@pytest.mark.parametrize(
    ("given", "granted"),
    [
        (["ingest"], {"ingest"}),
        (["READ", "read"], {"read"}),
        (["read", "ingest"], {"ingest", "read"}),
        (["admin"], {"ingest", "read", "admin"}),  # admin implies the others
    ],
)
def test_scopes(keys: ApiKeys, given: list[str], granted: set[str]) -> None:
    api_key = keys.create("k", given).api_key
    assert {s.value for s in Scope if api_key.allows(s)} == granted


@pytest.mark.parametrize(
    ("name", "scopes", "field"),
    [("", ["read"], "name"), ("x" * 257, ["read"], "name"), ("a\nb", ["read"], "name"),
     ("k", [], "scope"), ("k", ["write"], "scope")],
)  # fmt: skip
def test_bad_input_names_the_field(keys: ApiKeys, name: str, scopes: list[str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        keys.create(name, scopes)
    assert caught.value.field == field
    assert keys.list() == []


def test_unknown_malformed_and_tampered_keys_are_refused(
    keys: ApiKeys, store: CountingStore
) -> None:
    key = keys.create("k", ["read"]).key
    last = "A" if key[-1] != "A" else "B"
    for bad in ("", "Bearer " + key, key + "x", key[:-1], key[:-1] + last, key.upper(),
                "tsm_" + "0" * 16 + "_" + key[-43:], "tsm__" + key[-43:]):  # fmt: skip
        assert keys.authenticate(bad) is None, bad
    assert keys.authenticate(key) is not None


def test_malformed_keys_never_reach_the_store(keys: ApiKeys, store: CountingStore) -> None:
    for bad in ("", "x" * 10_000, "tsm_zz_" + "a" * 43, "tsm_\u29f5"):
        assert keys.authenticate(bad) is None
    assert store.lookups == 0


def test_a_checked_key_is_cached_for_its_time(keys: ApiKeys, store: CountingStore) -> None:
    key = keys.create("k", ["read"]).key
    for _ in range(100):
        assert keys.authenticate(key) is not None
    assert store.lookups == 1
    assert keys.cached(key)[0]
    fast = ApiKeys(store, cache_seconds=0)
    fast.authenticate(key)
    fast.authenticate(key)
    assert store.lookups == 3
    assert fast.cached(key) == (False, None)


def test_revoking_here_is_immediate_and_cached_answers_stay_bounded(
    store: CountingStore,
) -> None:
    keys = ApiKeys(store, max_cached=3)
    made = [keys.create(f"k{n}", ["ingest"]) for n in range(5)]
    for issued in made:
        assert keys.authenticate(issued.key) == issued.api_key
    assert len(keys._cache) <= 3
    revoked = keys.revoke(made[-1].api_key.id)
    assert revoked.revoked and revoked.revoked_at is not None
    assert keys.authenticate(made[-1].key) is None
    assert keys.revoke(made[-1].api_key.id).revoked_at == revoked.revoked_at
    with pytest.raises(NotFoundError):
        keys.get("0" * 16)


def test_checking_a_cached_key_is_fast(keys: ApiKeys) -> None:
    """The per-request cost is a SHA-256 and a dict look-up: far below a millisecond."""
    key = keys.create("k", ["ingest"]).key
    keys.authenticate(key)
    start = time.perf_counter()
    for _ in range(10_000):
        keys.authenticate(key)
    per_call = (time.perf_counter() - start) / 10_000
    assert per_call < 100e-6, per_call


def test_connect_wires_the_key_store(tmp_path: Path) -> None:
    with tsmeter.connect(f"sqlite:///{tmp_path / 'usage.db'}") as meter:
        assert meter.api_keys is not None
        issued = meter.api_keys.create("svc", ["admin"])
    with tsmeter.connect(f"sqlite:///{tmp_path / 'usage.db'}") as meter:
        assert meter.api_keys is not None
        found = meter.api_keys.authenticate(issued.key)
        assert isinstance(found, ApiKey) and found.allows("read")
