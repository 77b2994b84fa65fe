"""The dedupe port's contract, run against every implementation.

Add an implementation by adding a branch to ``open_dedupe`` and its name to ``KINDS``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.dedupe import MemoryDedupe
from tsmeter.adapters.sqlite.dedupe import SQLiteDedupe
from tsmeter.domain import RecordRow
from tsmeter.ports import Dedupe

KINDS = ("memory", "sqlite-memory", "sqlite-file", "postgres")
TARGET = "http://127.0.0.1:8086/metering"

Opener = Callable[[], Dedupe]


@pytest.fixture(params=KINDS)
def open_same(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens implementations of one kind on one place (a second call: another process on the
    same place, where the kind has one)."""
    kind = request.param
    entries: dict[str, RecordRow] = {}
    opened: list[Dedupe] = []
    shared: list[Dedupe] = []
    databases: list[Any] = []  # postgres: a StateDatabase per "host", closed after the ports

    def open_one() -> Dedupe:
        made: Dedupe
        if kind == "memory":
            made = MemoryDedupe(entries)
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
