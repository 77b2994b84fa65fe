"""The dedupe port's contract, run against every implementation.

Add an implementation by adding a branch to ``open_dedupe`` and its name to ``KINDS``.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.dedupe import MemoryDedupe, Place
from tsmeter.adapters.sqlite.dedupe import SQLiteDedupe
from tsmeter.domain import RecordRow
from tsmeter.ports import Dedupe

KINDS = ("memory", "sqlite-memory", "sqlite-file", "postgres")
#: kinds whose instances stand for hosts sharing one ledger (the others serve one host)
SHARED = ("memory", "postgres")
TARGET = "http://127.0.0.1:8086/metering"

Opener = Callable[[], Dedupe]


@pytest.fixture(params=KINDS)
def open_same(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens implementations of one kind on one place (a second call: another process on the
    same place, where the kind has one)."""
    kind = request.param
    place = Place()
    opened: list[Dedupe] = []
    shared: list[Dedupe] = []
    databases: list[Any] = []  # postgres: a StateDatabase per "host", closed after the ports

    def open_one() -> Dedupe:
        made: Dedupe
        if kind == "memory":
            made = MemoryDedupe(place)
        elif kind == "sqlite-memory":
            if shared:  # a memory file is one object's: the same one stands for "reopened"
                return shared[0]
            made = SQLiteDedupe(":memory:", TARGET)
            shared.append(made)
        elif kind == "postgres":  # another host: its own StateDatabase on the same server
            from tsmeter.adapters.postgres.database import StateDatabase
            from tsmeter.adapters.postgres.dedupe import PostgresDedupe

            databases.append(StateDatabase(request.getfixturevalue("pg_url"), max_size=4))
            made = PostgresDedupe(databases[-1], TARGET)
        else:
            made = SQLiteDedupe(str(tmp_path / "state.db"), TARGET)
        opened.append(made)
        return made

    yield open_one
    for made in opened:
        made.close()
    for db in databases:
        db.close()


@pytest.fixture
def kind(open_same: Opener, request: pytest.FixtureRequest) -> str:
    """The kind under test."""
    param: str = request.node.callspec.params["open_same"]
    return param


@pytest.fixture
def dedupe(open_same: Opener) -> Dedupe:
    """The implementation under test."""
    return open_same()


def row(rid: str, ts: int = 1_000, metric: str = "api_calls", org: str | None = None,
        subject: str = "o1") -> RecordRow:  # fmt: skip
    """A record row as the store would send it."""
    return RecordRow(rid, metric, "org", subject, org, 2.5, ts, None, None)


def where(found: RecordRow) -> tuple[object, ...]:
    """What the port keeps of a row: its id, series and time."""
    return (found.id, found.metric_key, found.subject_type, found.subject_id, found.org_id,
            found.ts)  # fmt: skip


def test_nothing_is_known_at_first(dedupe: Dedupe) -> None:
    """A new place knows no id; asking for none answers nothing."""
    assert dedupe.known(["a", "b"]) == {}
    assert dedupe.known([]) == {}


def test_added_ids_are_known_where_they_were_sent(dedupe: Dedupe) -> None:
    """Each added id is known with its series and time; others are left out."""
    dedupe.add([row("a", 10), row("b", 20, org="acme", subject="o2")])
    found = dedupe.known(["a", "b", "c"])
    assert set(found) == {"a", "b"}
    assert where(found["a"]) == ("a", "api_calls", "org", "o1", None, 10)
    assert where(found["b"]) == ("b", "api_calls", "org", "o2", "acme", 20)


def test_a_later_add_replaces_the_location(dedupe: Dedupe) -> None:
    """An id sent again elsewhere (a retry with another time or subject) is known there."""
    dedupe.add([row("a", 10)])
    dedupe.add([row("a", 99, subject="o9")])
    assert where(dedupe.known(["a"])["a"]) == ("a", "api_calls", "org", "o9", None, 99)


def test_adding_nothing_changes_nothing(dedupe: Dedupe) -> None:
    """An empty add is allowed and stores nothing."""
    dedupe.add([])
    assert dedupe.known(["a"]) == {}


def test_forget_series_drops_one_metric_in_one_org_scope(dedupe: Dedupe) -> None:
    """Purging a metric forgets its ids in that scope only: the global metric and an org's
    metric of the same key are separate, and other metrics stay."""
    dedupe.add([row("g", metric="m"), row("o", metric="m", org="acme"), row("x", metric="n")])
    dedupe.forget_series("m", None)
    assert set(dedupe.known(["g", "o", "x"])) == {"o", "x"}
    dedupe.forget_series("m", "acme")
    assert set(dedupe.known(["g", "o", "x"])) == {"x"}


@pytest.mark.parametrize("order", ["time-ordered", "random"])
def test_many_ids_in_either_order_are_all_known(dedupe: Dedupe, order: str) -> None:
    """Thousands of ids, ordered as tsmeter makes them or random like a client's UUIDs, added
    in batches, are each known exactly at their location."""
    if order == "random":
        ids = [str(uuid.UUID(int=random.Random(i).getrandbits(128))) for i in range(5_000)]
    else:
        ids = [f"r-{i:08d}" for i in range(5_000)]
    rows = [row(rid, ts=i) for i, rid in enumerate(ids)]
    for i in range(0, len(rows), 1_000):
        dedupe.add(rows[i : i + 1_000])
    found = dedupe.known([*ids, "missing"])
    assert len(found) == len(ids)
    assert all(found[r.id].ts == r.ts for r in rows)


def test_another_instance_on_the_same_place_knows_the_ids(open_same: Opener) -> None:
    """What one instance added is known to another opened on the same place (another process
    of the host), and the other way round: no instance hides what the other added."""
    first = open_same()
    first.add([row("a", 10)])
    second = open_same()
    assert where(second.known(["a"])["a"])[-1] == 10
    second.add([row("b", 20)])
    assert set(first.known(["a", "b"])) == {"a", "b"}


def test_the_last_row_of_an_id_in_one_add_wins(dedupe: Dedupe) -> None:
    """An id twice in one add is kept once, at its later row's location."""
    dedupe.add([row("a", 10), row("b", 20), row("a", 30, subject="o3")])
    found = dedupe.known(["a", "b"])
    assert where(found["a"]) == ("a", "api_calls", "org", "o3", None, 30)
    assert found["b"].ts == 20


HOSTILE_IDS = (
    "it's", 'say "hi"', "back\\slash\\", "new\nline", "tab\tx", "a,b=c d",
    "\u00e9t\u00e9 \U0001f600", "\\N", "'; DROP TABLE dedupe_ids; --", "%s %b {}",
)  # fmt: skip


def test_hostile_ids_and_series_are_data(dedupe: Dedupe) -> None:
    """Quotes, backslashes, newlines, commas, unicode and SQL in ids and series names come
    back exactly, each id apart from the others."""
    rows = [row(rid, ts=i, metric=f"m{rid}", org=rid, subject=rid)
            for i, rid in enumerate(HOSTILE_IDS)]  # fmt: skip
    dedupe.add(rows)
    found = dedupe.known([*HOSTILE_IDS, "it", "\\"])
    assert {rid: where(hit) for rid, hit in found.items()} == {r.id: where(r) for r in rows}
    dedupe.forget_series(f"m{HOSTILE_IDS[0]}", HOSTILE_IDS[0])
    assert set(dedupe.known(HOSTILE_IDS)) == set(HOSTILE_IDS[1:])


# -- claims and take-overs ------------------------------------------------------------------


def test_a_claim_enters_new_ids_and_reports_known_ones_where_they_are(
    dedupe: Dedupe, kind: str
) -> None:
    """A claim enters the ids nobody sent; of an id twice in one claim the first row counts.
    Where hosts share the ledger, known ids stay where they were sent and are answered with
    their location; one host's ledger may enter them (its store found them unknown under
    the lock that serialises the host)."""
    dedupe.add([row("a", 10, subject="o7")])
    lost = dedupe.claim([row("a", 99), row("b", 20), row("c", 30), row("b", 40)], "host-a")
    found = dedupe.known(["a", "b", "c"])
    assert [found[rid].ts for rid in "bc"] == [20, 30]
    if kind in SHARED:
        assert {rid: where(hit) for rid, hit in lost.items()} == {
            "a": ("a", "api_calls", "org", "o7", None, 10)
        }
        assert found["a"].ts == 10
    else:
        assert lost == {}
    assert dedupe.claim([], "host-a") == {}


@pytest.mark.parametrize("order", ["time-ordered", "random"])
def test_claims_of_many_ids_enter_each_once(dedupe: Dedupe, kind: str, order: str) -> None:
    """Thousands of new ids claimed in batches are all entered at their locations; claimed
    again where hosts share the ledger (another host's retry, at other times) every one is
    reported at its first location and none moves."""
    if order == "random":
        ids = [str(uuid.UUID(int=random.Random(i).getrandbits(128))) for i in range(3_000)]
    else:
        ids = [f"r-{i:08d}" for i in range(3_000)]
    rows = [row(rid, ts=i) for i, rid in enumerate(ids)]
    for i in range(0, len(rows), 1_000):
        assert dedupe.claim(rows[i : i + 1_000], "host-a") == {}
    found = dedupe.known([*ids, "new"])
    assert len(found) == len(ids) and all(found[r.id].ts == r.ts for r in rows)
    if kind not in SHARED:
        return
    again = [r._replace(ts=r.ts + 7) for r in rows]
    lost = dedupe.claim([*again[1_500:], row("new", 5)], "host-b")
    assert set(lost) == set(ids[1_500:])
    assert all(lost[r.id].ts == r.ts for r in rows[1_500:])
    found = dedupe.known([*ids, "new"])
    assert len(found) == len(ids) + 1 and all(found[r.id].ts == r.ts for r in rows)


def test_hostile_ids_are_claimed_as_data(dedupe: Dedupe, kind: str) -> None:
    """Hostile ids, series and writer names are claimed as they are, and reported as they
    are."""
    rows = [row(rid, ts=i, metric=f"m{rid}", org=rid, subject=rid)
            for i, rid in enumerate(HOSTILE_IDS)]  # fmt: skip
    assert dedupe.claim(rows, "it's 'host'") == {}
    found = dedupe.known(HOSTILE_IDS)
    assert {rid: where(hit) for rid, hit in found.items()} == {r.id: where(r) for r in rows}
    if kind in SHARED:
        lost = dedupe.claim([r._replace(ts=r.ts + 1) for r in rows], 'a "host"\n')
        assert {rid: where(hit) for rid, hit in lost.items()} == {r.id: where(r) for r in rows}


def test_a_writer_takes_its_own_entries_over_at_once(dedupe: Dedupe) -> None:
    """Ids a writer entered itself (its write failed) move to its new locations at once;
    ids nobody entered are entered."""
    dedupe.claim([row("a", 10), row("b", 20)], "host-a")
    assert dedupe.take_over([row("a", 11, subject="o2"), row("x", 5)], "host-a", 3_600) == {}
    found = dedupe.known(["a", "b", "x"])
    assert where(found["a"]) == ("a", "api_calls", "org", "o2", None, 11)
    assert (found["b"].ts, found["x"].ts) == (20, 5)


def test_another_writers_recent_entries_are_not_taken_over(dedupe: Dedupe, kind: str) -> None:
    """Where hosts share the ledger, ids another writer entered within ``after_s`` stay with
    it (its write may be on its way) and are reported where they are; after ``after_s`` they
    move. One host's ledger moves them at once (its writers are serialised)."""
    dedupe.claim([row("a", 10), row("b", 20)], "host-a")
    lost = dedupe.take_over([row("a", 11), row("b", 21)], "host-b", 3_600)
    if kind in SHARED:
        assert {rid: hit.ts for rid, hit in lost.items()} == {"a": 10, "b": 20}
        assert {rid: hit.ts for rid, hit in dedupe.known(["a", "b"]).items()} == {"a": 10, "b": 20}
        time.sleep(0.3)
        assert dedupe.take_over([row("a", 12)], "host-b", 0.2) == {}
        assert dedupe.known(["a"])["a"].ts == 12
    else:
        assert lost == {}
        assert dedupe.known(["a"])["a"].ts == 11


def _claimer(url: str, k: int, start: Any, answers: Any) -> None:
    """Child process (one "host"): claim the shared ids in batches in its own order, at once
    with the others; report which it won and what it was told of the rest."""
    from tsmeter.adapters.postgres.database import StateDatabase
    from tsmeter.adapters.postgres.dedupe import PostgresDedupe

    db = StateDatabase(url, max_size=2)
    dedupe = PostgresDedupe(db, TARGET)
    try:
        ids = [*(f"c-{i:05d}" for i in range(RACE_IDS)), *HOSTILE_IDS]
        random.Random(k).shuffle(ids)
        won: list[str] = []
        told: dict[str, int] = {}
        start.wait(timeout=60)
        for i in range(0, len(ids), 250):
            part = [row(rid, ts=k * 1_000_000 + n, subject=f"host{k}")
                    for n, rid in enumerate(ids[i : i + 250], start=i)]  # fmt: skip
            lost = dedupe.claim(part, f"host{k}")
            won += [r.id for r in part if r.id not in lost]
            told.update({rid: hit.ts for rid, hit in lost.items()})
        answers.put((k, won, told))
    finally:
        dedupe.close()
        db.close()


RACE_IDS = 6_000


def test_hosts_claiming_the_same_ids_at_once_each_win_an_id_once(pg_url: str) -> None:
    """Three processes claim the same ids (some hostile) at once, each in its own order: each
    id is won by exactly one, the others are told the winner's location, and the ledger
    holds it there."""
    ctx = multiprocessing.get_context("spawn")
    start, answers = ctx.Barrier(3), ctx.Queue()
    workers = [ctx.Process(target=_claimer, args=(pg_url, k, start, answers)) for k in range(3)]
    for w in workers:
        w.start()
    try:
        got = {k: (won, told) for k, won, told in (answers.get(timeout=240) for _ in workers)}
    finally:
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():
                w.kill()
    assert [w.exitcode for w in workers] == [0, 0, 0]
    everything = {*(f"c-{i:05d}" for i in range(RACE_IDS)), *HOSTILE_IDS}
    winner: dict[str, int] = {}
    for k, (won, _) in got.items():
        for rid in won:
            assert rid not in winner, rid
            winner[rid] = k
    assert set(winner) == everything
    from tsmeter.adapters.postgres.database import StateDatabase
    from tsmeter.adapters.postgres.dedupe import PostgresDedupe

    db = StateDatabase(pg_url)
    dedupe = PostgresDedupe(db, TARGET)
    try:
        held = dedupe.known(sorted(everything))
    finally:
        dedupe.close()
        db.close()
    assert {rid: hit.subject_id for rid, hit in held.items()} == {
        rid: f"host{k}" for rid, k in winner.items()
    }
    for won, told in got.values():
        assert set(told) == everything - set(won)
        assert all(told[rid] == held[rid].ts for rid in told)
