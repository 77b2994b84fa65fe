"""The id ledger's lookups: a range read for clustered ids, one lookup per id otherwise."""

from __future__ import annotations

import random
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsmeter.adapters.influxdb import ledger as ledger_module
from tsmeter.adapters.influxdb.ledger import IdLedger
from tsmeter.domain import RecordRow, new_ids
from tsmeter.errors import StorageUnavailableError


def _rows(ids: list[str], ts: int = 7) -> list[RecordRow]:
    return [
        RecordRow(rid, "api_calls", "org", f"o{i % 5}", None if i % 2 else "acme", 10**6, ts + i,
                  None, None)
        for i, rid in enumerate(ids)
    ]  # fmt: skip


@pytest.fixture
def ledger(tmp_path: Path) -> IdLedger:
    opened = IdLedger(str(tmp_path / "state.db"), "http://x/db")
    yield opened  # type: ignore[misc]
    opened.close()


class _IndexReads(list[str]):
    """The statements of the ledger's reader that read the id index."""

    def __call__(self, statement: str) -> None:
        if "influx_ids " in statement:  # not influx_ids_log
            self.append(statement)


def _statements(ledger: IdLedger) -> list[str]:
    """Record the index reads the ledger's reader runs from now on."""
    seen = _IndexReads()
    ledger._reader.set_trace_callback(seen)
    return seen


@pytest.mark.parametrize("clustered", [1, 4, 10**9])
@pytest.mark.parametrize("merge_rows", [1, 700, 10**9])
@pytest.mark.parametrize("kind", ["time-ordered", "random", "hostile"])
def test_known_answers_exactly_what_was_added(
    ledger: IdLedger,
    kind: str,
    merge_rows: int,
    clustered: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Whatever the ids look like, known() finds each added id at its series and time, and
    nothing else: for new ids, for a retried batch, for a mix, and for a scattered sample;
    with the entries in blocks (CLUSTERED 1: every add new to the index), in the index,
    in the log, or some in each."""
    monkeypatch.setattr(IdLedger, "MERGE_ROWS", merge_rows)
    monkeypatch.setattr(IdLedger, "CLUSTERED", clustered)
    rng = random.Random(5)
    if kind == "time-ordered":
        ids = new_ids(3_000)
    elif kind == "random":
        ids = [str(uuid.uuid4()) for _ in range(3_000)]
    else:
        pieces = ["", "a,b", " ", '"', "\\", "é", "🙂", "=", "Z", "\n"]
        ids = [rng.choice(pieces) + str(i) + rng.choice(pieces) for i in range(3_000)]
    rows = _rows(ids)
    for start in range(0, 2_000, 500):
        ledger.add(rows[start : start + 500])
    kept = _where_kept(str(tmp_path / "state.db"))
    assert (kept["blocks"] > 0) is (clustered == 1 or (clustered == 4 and kind == "time-ordered"))
    expected = {r.id: r for r in rows[:2_000]}
    dense = sorted(ids[:2_000])[100:1_100]  # a range holding a few added ids not asked for
    mixed = [d for j, d in enumerate(dense) if j % 200 != 7] + [d + "~" for d in dense[10:20]]
    probes = [ids[2_000:], ids[:2_000], ids[1_500:2_500], mixed, rng.sample(ids, 400), ids[::7]]
    probes.append([])
    for probe in probes:
        found = ledger.known(probe)
        assert set(found) == {rid for rid in probe if rid in expected}
        for rid, where in found.items():
            row = expected[rid]
            assert (where.metric_key, where.subject_type, where.subject_id, where.org_id,
                    where.ts) == (row.metric_key, row.subject_type, row.subject_id, row.org_id,
                                  row.ts)  # fmt: skip


def _blocks_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the blocks the ledger unpacks from now on."""
    sizes: list[int] = []
    entry = ledger_module._ENTRY

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(entry, name)

        def iter_unpack(self, packed: bytes) -> object:
            sizes.append(len(packed) // entry.size)
            return entry.iter_unpack(packed)

    monkeypatch.setattr(ledger_module, "_ENTRY", Counting())
    return sizes


def test_a_new_batch_of_ordered_ids_is_one_range_read(
    ledger: IdLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Time-ordered ids of a new batch lie beyond every stored one: one range read of the
    index answers; ids in random order fall back to a lookup per id, and the next lookups
    skip the range read for a while. (Entries in the index: no add goes to blocks here.)"""
    monkeypatch.setattr(IdLedger, "MERGE_ROWS", 1)  # every add goes on into the index
    monkeypatch.setattr(IdLedger, "CLUSTERED", 10**9)
    ledger.add(_rows(new_ids(5_000)))
    seen = _statements(ledger)
    assert ledger.known(new_ids(2_000)) == {}
    assert len(seen) == 1 and "BETWEEN" in seen[0]
    seen.clear()
    dense = [f"k-{i:05d}" for i in range(5_000)]  # a range holding many more ids than asked
    ledger.add(_rows(dense))
    probe = [*dense[::500], "k-00000~", "k-04999~"]
    assert set(ledger.known(probe)) == set(dense[::500])
    assert len(seen) == 2 and "BETWEEN" in seen[0] and "json_each" in seen[1]
    # the next lookups go straight to the ids, then the range is tried again
    seen.clear()
    for _ in range(IdLedger.CROWDED_SKIP):
        assert set(ledger.known(probe)) == set(dense[::500])
    assert len(seen) == IdLedger.CROWDED_SKIP and all("json_each" in q for q in seen)
    seen.clear()
    assert ledger.known(new_ids(10)) == {}
    assert len(seen) == 1 and "BETWEEN" in seen[0]


def test_entries_of_another_target_are_not_found(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    a, b = IdLedger(path, "http://x/a"), IdLedger(path, "http://x/b")
    try:
        ids = new_ids(100)
        a.add(_rows(ids))
        assert len(a.known(ids)) == 100
        assert b.known(ids) == {}
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("ids", [new_ids(10), ["x"], [str(uuid.uuid4()) for _ in range(10)]])
def test_the_ledger_file_is_sqlite(ledger: IdLedger, tmp_path: Path, ids: list[str]) -> None:
    """Entries are committed when add() returns (another connection sees them), in blocks,
    the index or the log."""
    ledger.add(_rows(ids))
    with sqlite3.connect(tmp_path / "state.db") as other:
        (count,) = other.execute(
            "SELECT (SELECT count(*) FROM influx_ids) + (SELECT count(*) FROM influx_ids_log)"
            " + (SELECT coalesce(sum(n), 0) FROM influx_id_blocks)"
        ).fetchone()
    assert count == len(ids)


def _where_kept(path: str) -> dict[str, int]:
    """How many entries the blocks, the index and the log of the ledger file hold."""
    with sqlite3.connect(path) as other:
        return dict(zip(("blocks", "index", "log"), other.execute(
            "SELECT (SELECT coalesce(sum(n), 0) FROM influx_id_blocks), (SELECT count(*)"
            " FROM influx_ids), (SELECT count(*) FROM influx_ids_log)").fetchone(),
            strict=True))  # fmt: skip


def test_ids_that_lie_together_go_to_blocks_and_the_newest_entry_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's numbered ids and tsmeter's own go to blocks (one row per hundred or so);
    an id sent again is found where it went last: again in its block, in the index once
    its block is full or when sent alone; a new batch's lookup unpacks no block, a retried
    one only its own; another ledger on the file agrees."""
    path = str(tmp_path / "state.db")
    a, b = IdLedger(path, "http://x/db"), IdLedger(path, "http://x/db")
    try:
        numbered = [f"r-{i}" for i in range(5_000)]
        ordered = new_ids(2_000)
        for start in range(0, 5_000, 1_000):
            a.add(_rows(numbered[start : start + 1_000], ts=10**6 + start))
        a.add(_rows(ordered, ts=10**7))
        assert _where_kept(path) == {"blocks": 7_000, "index": 0, "log": 0}
        with sqlite3.connect(path) as other:
            (blocks,) = other.execute("SELECT count(*) FROM influx_id_blocks").fetchone()
        assert blocks < 7_000 // 20
        newest = {rid: ("o" + str(i % 5), 10**6 + (i // 1_000) * 1_000 + i % 1_000)
                  for i, rid in enumerate(numbered)}  # fmt: skip
        newest.update({rid: (f"o{i % 5}", 10**7 + i) for i, rid in enumerate(ordered)})
        unpacked = _blocks_read(monkeypatch)
        assert (
            b.known(new_ids(3_000)) == {}
            and b.known([f"r-{i}" for i in range(10**5, 10**5 + 900)]) == {}
        )
        assert unpacked == []  # their blocks do not exist
        assert _where(b.known(numbered[1_200:1_300])) == {
            rid: newest[rid] for rid in numbered[1_200:1_300]
        }
        assert sum(unpacked) <= 300  # "r-12" holds r-1200..r-1299, "r-1" r-100..r-199
        a.add(_rows(numbered[1_200:1_300], ts=5 * 10**7))  # sent again: appended to its block
        newest.update(
            {rid: (f"o{i % 5}", 5 * 10**7 + i) for i, rid in enumerate(numbered[1_200:1_300])}
        )
        monkeypatch.setattr(IdLedger, "BLOCK_ENTRIES", 150)  # "r-12" is full now
        a.add(_rows(numbered[1_200:1_300], ts=6 * 10**7))  # so into the index
        newest.update(
            {rid: (f"o{i % 5}", 6 * 10**7 + i) for i, rid in enumerate(numbered[1_200:1_300])}
        )
        assert _where_kept(path) == {"blocks": 7_100, "index": 100, "log": 0}
        a.add(_rows(["r-1250"], ts=7 * 10**7))  # one id: not clustered, into the index
        newest["r-1250"] = ("o0", 7 * 10**7)
        assert _where_kept(path) == {"blocks": 7_100, "index": 100, "log": 0}
        for ledger in (a, b):
            assert _where(ledger.known([*numbered, *ordered, "r-5000", "r-"])) == newest
    finally:
        a.close()
        b.close()


def test_a_ledger_file_with_an_index_keeps_its_entries_newest_last(tmp_path: Path) -> None:
    """A file written before blocks existed (every entry in the index) still answers, and
    ids already in its index are not put in blocks when sent again (the index would answer
    with the older place): they go to the index; new ids beyond them go to blocks."""
    path = str(tmp_path / "state.db")
    numbered = [f"n-{i:05d}" for i in range(3_000)]
    with pytest.MonkeyPatch.context() as old:
        old.setattr(IdLedger, "CLUSTERED", 10**9)  # as before blocks: the index only
        before = IdLedger(path, "http://x/db")
        before.add(_rows(numbered[:2_000], ts=100))
        before.close()
    assert _where_kept(path) == {"blocks": 0, "index": 2_000, "log": 0}
    ledger = IdLedger(path, "http://x/db")
    try:
        ledger.add(_rows(numbered[1_000:2_000], ts=10**6))  # sent again
        ledger.add(_rows(numbered[2_000:], ts=10**7))  # new, beyond the index's
        assert _where_kept(path) == {"blocks": 1_000, "index": 2_000, "log": 0}
        expected = {rid: (f"o{i % 5}", 100 + i) for i, rid in enumerate(numbered[:1_000])}
        expected.update({rid: (f"o{i % 5}", 10**6 + i)
                         for i, rid in enumerate(numbered[1_000:2_000])})  # fmt: skip
        expected.update({rid: (f"o{i % 5}", 10**7 + i) for i, rid in enumerate(numbered[2_000:])})
        assert _where(ledger.known(numbered)) == expected
    finally:
        ledger.close()


def test_an_add_of_many_new_series_takes_a_few_statements(ledger: IdLedger) -> None:
    """New series are numbered together and entries go in statements of many rows: each
    statement hands the interpreter lock back to the ledger's thread (milliseconds each while
    other threads run). Hostile names and both kinds of organisation keep their numbers."""
    pieces = ["", "a,b", " ", '"', "\\", "é", "🙂", "=", "\n", "'"]
    rows = [
        RecordRow(rid, f"m{i % 3}{pieces[i % 10]}", "org", f"s{pieces[i % 7]}{i % 1_234}",
                  None if i % 2 else f"acme{pieces[i % 9]}", 1_000_000, 10**18 + i, None, None)
        for i, rid in enumerate(new_ids(10_007))
    ]  # fmt: skip
    seen: list[str] = []
    ledger._conn.set_trace_callback(seen.append)
    ledger.add(rows)
    series = len({(r.metric_key, r.subject_id, r.org_id) for r in rows})
    per = ledger_module._PER
    # BEGIN, the series (per // 2 a statement), their numbers, the entries, the log's
    # position, COMMIT
    most = 1 + -(-series // (per // 2)) + 1 + -(-len(rows) // per) + 1 + 1
    assert series > 1_000 and len(seen) <= most, (len(seen), most)
    found = ledger.known([r.id for r in rows])
    assert len(found) == len(rows)
    for row in rows:
        where = found[row.id]
        assert (where.metric_key, where.subject_type, where.subject_id, where.org_id,
                where.ts) == (row.metric_key, row.subject_type, row.subject_id, row.org_id,
                              row.ts)  # fmt: skip
    seen.clear()
    again = [row._replace(id=rid) for row, rid in zip(rows, new_ids(10), strict=False)]
    ledger.add(again)  # series numbered before come from the cache
    assert not any("influx_series" in q for q in seen)


def _where(found: dict[str, RecordRow]) -> dict[str, tuple[str, int]]:
    return {rid: (row.subject_id, row.ts) for rid, row in found.items()}


def test_ledgers_sharing_a_file_see_each_others_entries_and_the_newest_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ledgers on one file (two processes): each finds the other's entries in the log, an
    id sent again elsewhere is found where it went last, whoever sent it, and so it stays
    after a merge into the index and after entries added since."""
    monkeypatch.setattr(IdLedger, "NEAR", 0)  # to the log unless beyond the index
    path = str(tmp_path / "state.db")
    a, b = IdLedger(path, "http://x/db"), IdLedger(path, "http://x/db")
    try:
        ids = [str(uuid.uuid4()) for _ in range(300)]
        a.add(_rows(ids, ts=1_000))
        first = {rid: (f"o{i % 5}", 1_000 + i) for i, rid in enumerate(ids)}
        assert _where(b.known(ids)) == _where(a.known(ids)) == first
        b.add(_rows(ids[:100], ts=2_000))  # sent again, elsewhere
        a.add(_rows(ids[:10], ts=3_000))  # and once more
        newest = {rid: (f"o{i % 5}", (3_000 if i < 10 else 2_000 if i < 100 else 1_000) + i)
                  for i, rid in enumerate(ids)}  # fmt: skip
        for ledger in (a, b, a):
            assert _where(ledger.known(ids)) == newest
        monkeypatch.setattr(IdLedger, "MERGE_ROWS", 1)
        later = [str(uuid.uuid4()) for _ in range(5)]
        b.add(_rows(later, ts=9_000))  # moves the whole log into the index
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT count(*) FROM influx_ids_log").fetchone() == (0,)
        newest.update({rid: (f"o{i % 5}", 9_000 + i) for i, rid in enumerate(later)})
        for ledger in (a, b):
            assert _where(ledger.known([*ids, *later])) == newest
            assert not ledger._tail  # what was merged is no longer held in memory
        monkeypatch.setattr(IdLedger, "MERGE_ROWS", 10**9)
        a.add(_rows(ids[50:55], ts=7_000))  # in the log again, after the merge
        newest.update({rid: (f"o{i % 5}", 7_000 + i) for i, rid in enumerate(ids[50:55])})
        for ledger in (b, a):
            assert _where(ledger.known([*ids, *later])) == newest
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("clustered", [4, 10**9])
def test_forgotten_series_leave_the_log_the_index_and_memory(
    ledger: IdLedger, monkeypatch: pytest.MonkeyPatch, clustered: int, tmp_path: Path
) -> None:
    """A purged metric's entries are gone wherever they were (blocks, or the index and the
    log); others stay."""
    monkeypatch.setattr(IdLedger, "MERGE_ROWS", 150)
    monkeypatch.setattr(IdLedger, "CLUSTERED", clustered)
    ids = new_ids(400)
    rows = [row._replace(metric_key="gone" if i % 2 else "kept") for i, row in
            enumerate(_rows(ids))]  # fmt: skip
    for start in range(0, 400, 100):  # the first 300 merged, the last 100 in the log
        ledger.add(rows[start : start + 100])
    kept = _where_kept(str(tmp_path / "state.db"))
    assert (kept["blocks"] == 400) is (clustered == 4)
    ledger.forget_series("gone", "acme")
    ledger.forget_series("gone", None)
    assert set(ledger.known(ids)) == {row.id for row in rows if row.metric_key == "kept"}
    assert sum(_where_kept(str(tmp_path / "state.db")).values()) == 200


def test_ids_that_lie_together_go_straight_in_after_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids whose range in the index is nearly empty are entered there directly, and only
    after the log is merged into it: an id the log holds and that is sent again so is found
    where it went last, by this ledger and by another on the file."""
    path = str(tmp_path / "state.db")
    a, b = IdLedger(path, "http://x/db"), IdLedger(path, "http://x/db")
    try:
        a.add(_rows(["m-5"], ts=1))  # a new index: straight in
        monkeypatch.setattr(IdLedger, "NEAR", 0)
        a.add(_rows(["a-1", "z-9"], ts=2))  # their range holds "m-5": the log
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT count(*) FROM influx_ids_log").fetchone() == (2,)
        monkeypatch.setattr(IdLedger, "NEAR", 2)
        assert _where(b.known(["a-1", "z-9"])) == {"a-1": ("o0", 2), "z-9": ("o1", 3)}
        a.add(_rows(["z-9"], ts=40))  # an empty range: merge the log, then straight in
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT count(*) FROM influx_ids_log").fetchone() == (0,)
            assert other.execute("SELECT ts FROM influx_ids WHERE id = 'z-9'").fetchone() == (40,)
        for ledger in (a, b):
            assert _where(ledger.known(["a-1", "z-9", "m-5"])) == {
                "a-1": ("o0", 2), "z-9": ("o0", 40), "m-5": ("o0", 1)}  # fmt: skip
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("into", ["blocks", "index"])
def test_a_failing_ledger_write_raises_and_leaves_nothing(
    tmp_path: Path, into: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SQLite error inside an add (a trigger refusing entries here) is a
    StorageUnavailableError naming SQLite's message, wherever the entries go, and nothing
    of that add stays; the next add goes in."""
    if into == "index":
        monkeypatch.setattr(IdLedger, "CLUSTERED", 10**9)
    rows = [RecordRow(f"id-{i:04}", "api_calls", "org", "o", None, 1_000_000, i, None, None)
            for i in range(600)]  # fmt: skip
    ledger = IdLedger(str(tmp_path / "l.db"), "http://x/db")
    try:
        ledger.add(rows[:100])
        ledger._conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON influx_ids WHEN NEW.id = 'id-0450'"
            " BEGIN SELECT RAISE(ABORT, 'entry refused'); END"
            if into == "index"
            else "CREATE TRIGGER refuse BEFORE INSERT ON influx_id_blocks WHEN NEW.block ="
            " 'id-04' BEGIN SELECT RAISE(ABORT, 'entry refused'); END"
        )
        assert _where_kept(str(tmp_path / "l.db"))[into] == 100
        with pytest.raises(StorageUnavailableError, match="the id ledger failed: entry refused"):
            ledger.add(rows[100:])
        assert set(ledger.known([r.id for r in rows])) == {r.id for r in rows[:100]}
        ledger._conn.execute("DROP TRIGGER refuse")
        ledger.add(rows[100:])
        assert set(ledger.known([r.id for r in rows])) == {r.id for r in rows}
    finally:
        ledger.close()


def _ledger_rows(
    rows: list[RecordRow], path: str, near: int, per: int, clustered: int
) -> Iterator[tuple[Any, ...]]:
    """The entries of ``rows`` added ``per`` at a time: the index's, the log's in order, then
    each block's in order."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(IdLedger, "NEAR", near)
        monkeypatch.setattr(IdLedger, "CLUSTERED", clustered)
        ledger = IdLedger(path, "http://x/db")
        try:
            for start in range(0, len(rows), per):
                ledger.add(rows[start : start + per])
            yield from ledger._conn.execute(
                "SELECT 0, i.id, s.metric_key, s.subject_type, s.subject_id, s.org_key, i.ts"
                " FROM influx_ids i JOIN influx_series s USING (series_no) UNION ALL"
                " SELECT l.seq, l.id, s.metric_key, s.subject_type, s.subject_id, s.org_key, l.ts"
                " FROM influx_ids_log l JOIN influx_series s USING (series_no) ORDER BY 1, 2"
            )
            series = {number: key for number, *key in ledger._conn.execute(
                "SELECT series_no, metric_key, subject_type, subject_id, org_key"
                " FROM influx_series")}  # fmt: skip
            for name, entries in ledger._conn.execute(
                "SELECT block, entries FROM influx_id_blocks ORDER BY block"
            ):
                for size, tail, number, ts in ledger_module._ENTRY.iter_unpack(entries):
                    yield ("block", name + tail[:size].decode(), *series[number], ts)
        finally:
            ledger.close()


@pytest.mark.parametrize("clustered", [IdLedger.CLUSTERED, 10**9])
@pytest.mark.parametrize(("near", "per"), [(0, 150), (2, 150), (2, 600)])
def test_ledger_entries_go_where_the_rules_say(
    tmp_path: Path, near: int, per: int, clustered: int
) -> None:
    """Repeated ids in adds of 150 and 600: the index holds each id once, the blocks and the
    log every entry (CLUSTERED 10**9: none to blocks; NEAR 0: every add after the first goes
    to the log); ids new to the index, 4 or more per block, go to blocks."""
    n, ids = (420, 230) if per == 150 else (1_300, 530)
    rows = [RecordRow(f"id-{i % ids:04}", "api_calls", "org", f"o{i % 7}",
                      None if i % 3 else "acme", 1_000_000, i, None, None)
            for i in range(n)]  # fmt: skip
    entries = list(_ledger_rows(rows, str(tmp_path / "a.db"), near, per, clustered))
    assert len(entries) == (ids if near and clustered > 4 else n)
    blocked = sum(entry[0] == "block" for entry in entries)
    assert blocked == (n if clustered == 4 else 0)


HOSTILE = st.text(
    alphabet=st.sampled_from([*"a Z0,= \"\\\n\t'=⧵é漢🙂\x00\x7f", "\ud800"]),
    min_size=0,
    max_size=12,
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(st.tuples(HOSTILE, st.integers(0, 5), st.integers(-(2**63), 2**63 - 1)),
                min_size=1, max_size=700),
       st.sampled_from([1, 249, 250, 600]))  # fmt: skip
def test_hostile_and_repeated_ids_are_found_where_they_went_last(
    tmp_path: Path, entries: list[tuple[str, int, int]], per: int
) -> None:
    """Hostile and repeated ids, many series, adds of one to 600 rows (blocks, index and log):
    each id is found with its last entry; an id with a lone surrogate is refused (it has no
    UTF-8 form)."""
    rows = [RecordRow(rid, "api_calls", "org", f"o{series}", None if series % 2 else "acme",
                      1_000_000, ts, None, None) for rid, series, ts in entries]  # fmt: skip
    ledger = IdLedger(str(tmp_path / f"{secrets.token_hex(4)}.db"), "http://x/db")
    try:
        try:
            for start in range(0, len(rows), per):
                ledger.add(rows[start : start + per])
        except UnicodeEncodeError:
            assert any(not _encodable(row.id) for row in rows)
            return
        # (an id with NUL is not looked up: intake refuses control characters, and SQLite's
        # JSON functions end a string at NUL)
        last = {
            row.id: (row.subject_id, row.org_id, row.ts) for row in rows if "\x00" not in row.id
        }
        found = ledger.known(list(last))
        assert {rid: (r.subject_id, r.org_id, r.ts) for rid, r in found.items()} == last
    finally:
        ledger.close()


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
