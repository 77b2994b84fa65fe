"""The InfluxDB store keeps its point slots between calls (``placement.Coverage``), on a real
influxd, with the ledger in a real PostgreSQL (a fleet) or in SQLite (one host): a backfill
spread over a month reads each range once and loses no record where times collide; the slots
are dropped when another process of the host wrote in between, when a call fails, beyond
``KEPT_SLOTS``, and, for a host with its own ledger, once another writer's records appear; an
id stored before the ledger knew it still counts once."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb.client import series_rows
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.adapters.influxdb.transport import Points
from tsmeter.adapters.influxdb.v1 import V1Transport
from tsmeter.adapters.postgres.database import StateDatabase
from tsmeter.adapters.postgres.dedupe import PostgresDedupe
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError

T = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000_000_000
SUBJECTS = [
    "o1",
    "a,b=c d",
    'q"uote',
    "back\\slash",
    "x=y\\",
    "\u00e9t\u00e9 \U0001f600",
]  # no control characters: refused at intake


@pytest.fixture
def state(pg_url: str) -> Iterator[StateDatabase]:
    db = StateDatabase(pg_url, max_size=4)
    yield db
    db.close()


class Counted:
    """A v1 transport that counts the existence reads of ranges (not the reads where the
    ledger says an id went), and can be told to fail its next read (what a server that
    stops answering mid-call does)."""

    def __init__(self, transport: V1Transport) -> None:
        self.inner = transport
        self.reads = 0
        self.fail_next = False

    def stored(self, rows: Sequence[RecordRow], **options: Any) -> Points:
        if self.fail_next:
            self.fail_next = False
            raise StorageUnavailableError("the test's server stopped answering")
        self.reads += options.get("spans") is not None
        return self.inner.stored(rows, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _store(server: InfluxServer, db: str, state: StateDatabase, writer: str = "w1") -> InfluxStore:
    transport = V1Transport.from_url(f"influxdb://127.0.0.1:{server.port}/{db}?writer={writer}")
    store = InfluxStore(transport, PostgresDedupe(state, transport.target))
    store.transport = Counted(transport)  # type: ignore[assignment]
    return store


def _counted(store: InfluxStore) -> Counted:
    assert isinstance(store.transport, Counted)
    return store.transport


def _row(rid: str, subject: str, ts: int, quantity: int = 10**6, metric: str = "api") -> RecordRow:
    return RecordRow(rid, metric, "org", subject, None, quantity, ts, None, None)


def _stored(server: InfluxServer, db: str) -> Counter[tuple[str, str]]:
    """(record id, units) of every point stored, with how many points have each."""
    (result,) = server.query('SELECT "rid", "units" FROM "usage"', db=db)["results"]
    return Counter((str(v["rid"]), v["units"]) for _, v in series_rows(result))


def test_a_spread_backfill_reads_each_range_once_and_keeps_every_record(
    influx_db: tuple[InfluxServer, str], state: StateDatabase
) -> None:
    """Six calls of 2,000 records spread over a month in random order, of hostile subjects;
    a fifth of them at the exact time and series of a record of an earlier call, and some
    ids sent again with another time: after the first call nothing is read from InfluxDB
    (its ranges cover the month), and every record is stored once, at its own point."""
    server, db = influx_db
    rng = random.Random(20)
    earlier: list[RecordRow] = []
    calls: list[list[RecordRow]] = []
    for call in range(6):
        rows = []
        for i in range(2_000):
            if earlier and rng.random() < 0.2:  # the time and series of an earlier record
                twin = rng.choice(earlier)
                rows.append(_row(f"c{call}-{i}", twin.subject_id, twin.ts, (i % 7 + 1) * 10**5 + 1,
                                 twin.metric_key))  # fmt: skip
            else:
                ts = T + rng.randrange(30 * DAY) // 1_000 * 1_000
                rows.append(_row(f"c{call}-{i}", rng.choice(SUBJECTS), ts, (i % 7 + 1) * 10**5 + 1,
                                 rng.choice(["api", "tokens"])))  # fmt: skip
        if earlier:  # retries of earlier ids with another time: already counted
            rows += [row._replace(ts=row.ts + 5_000) for row in rng.sample(earlier, 50)]
        rng.shuffle(rows)
        calls.append(rows)
        earlier += [row for row in rows if row.id.startswith(f"c{call}-")]
    store = _store(server, db, state)
    transport = _counted(store)
    try:
        assert store.append(calls[0], 0) == 2_000
        first_reads = transport.reads
        for rows in calls[1:]:
            assert store.append(rows, 0) == 2_000
        assert transport.reads == first_reads, "later calls read ranges the first covered"
    finally:
        store.close()
    expected = Counter((row.id, row.quantity) for row in earlier)
    assert _stored(server, db) == expected  # each id once, with its own quantity
    total = sum(Decimal(row.quantity) for row in earlier)
    (result,) = server.query('SELECT sum("units") FROM "usage"', db=db)["results"]
    assert Decimal(series_rows(result)[0][1]["sum"]) == total


def test_another_process_of_the_writer_writing_in_between_is_read(
    influx_db: tuple[InfluxServer, str], state: StateDatabase
) -> None:
    """Two stores of one writer (two processes of a host, taking turns on its lock file)
    write records at one series and time in turn: each sees the other's points, so none
    overwrites another. A store that kept its slots across the other's write would put its
    next record on the point the other placed."""
    server, db = influx_db
    at = T + 3 * DAY + 12_345_000
    spread = [_row(f"spread-{i}", "o1", T + 3 * DAY + i * DAY // 10) for i in range(10)]
    one, two = _store(server, db, state), _store(server, db, state)
    try:
        assert one.append([*spread, _row("a", "o1", at)], 0) == 11  # covers the whole day
        assert two.append([_row("b", "o1", at)], 0) == 1
        reads = _counted(one).reads
        assert one.append([_row("c", "o1", at)], 0) == 1
        assert _counted(one).reads > reads  # its slots were dropped, the day read again
        assert two.append([_row("d", "o1", at)], 0) == 1
    finally:
        one.close()
        two.close()
    assert sorted(rid for rid, _ in _stored(server, db)) == sorted(
        ["a", "b", "c", "d", *(row.id for row in spread)]
    )


def test_a_failed_call_drops_the_ranges_it_was_to_read(
    influx_db: tuple[InfluxServer, str], state: StateDatabase
) -> None:
    """A record stored by an earlier process of the writer; a new process's first call fails
    while reading (the ranges it was to read were already counted as covered); its next
    record at that record's series and time must read the day and keep clear of it."""
    server, db = influx_db
    at = T + 7 * DAY + 42_000
    earlier = _store(server, db, state)
    try:
        assert earlier.append([_row("x", "o1", at)], 0) == 1
    finally:
        earlier.close()
    store = _store(server, db, state)
    edges = [_row("z1", "o1", T + 7 * DAY + 1_000), _row("z2", "o1", T + 8 * DAY - 1_000)]
    try:
        _counted(store).fail_next = True
        with pytest.raises(StorageUnavailableError):
            store.append(edges, 0)
        assert store.append([_row("y", "o1", at)], 0) == 1
        assert store.append(edges, 0) == 2
    finally:
        store.close()
    assert sorted(rid for rid, _ in _stored(server, db)) == ["x", "y", "z1", "z2"]


def test_slots_beyond_the_limit_are_forgotten_and_read_again(
    influx_db: tuple[InfluxServer, str], state: StateDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for 100 slots, calls of spread records that collide with earlier ones
    (within a call and across calls) drop and read again what they need: every record is
    stored at its own point."""
    server, db = influx_db
    monkeypatch.setattr(InfluxStore, "KEPT_SLOTS", 100)
    monkeypatch.setattr(InfluxStore, "FIRST_WINDOW", 50)
    rng = random.Random(7)
    times = [T + rng.randrange(3 * DAY) // 1_000 * 1_000 for _ in range(60)]
    written: list[RecordRow] = []
    store = _store(server, db, state)
    try:
        for call in range(8):
            rows = [_row(f"k{call}-{i}", rng.choice(SUBJECTS[:2]), rng.choice(times))
                    for i in range(400)]  # fmt: skip
            assert store.append(rows, 0) == 400
            written += rows
    finally:
        store.close()
    assert sorted(rid for rid, _ in _stored(server, db)) == sorted(row.id for row in written)


def test_slots_pruned_in_a_call_leave_their_ranges_uncovered(
    influx_db: tuple[InfluxServer, str], state: StateDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call in time order whose store holds more than KEPT_SLOTS forgets the slots no later
    row of the call reaches; the ranges they covered must be read again, so a later record at
    a forgotten slot's series and time is not put on that point."""
    server, db = influx_db
    monkeypatch.setattr(InfluxStore, "KEPT_SLOTS", 40)
    monkeypatch.setattr(InfluxStore, "FIRST_WINDOW", 50)  # windows of 50, then the 10 left
    rows = [_row(f"r{i}", "o1", T + i * 1_000_000_000) for i in range(60)]
    store = _store(server, db, state)
    try:
        assert store.append(rows, 0) == 60
        assert store.append([_row("late", "o1", T)], 0) == 1
    finally:
        store.close()
    assert sorted(rid for rid, _ in _stored(server, db)) == sorted(["late", *(r.id for r in rows)])


def test_an_id_stored_before_the_ledger_knew_it_counts_once_in_a_covered_range(
    influx_db: tuple[InfluxServer, str], state: StateDatabase
) -> None:
    """A record stored through another ledger (a host before it joined the fleet), then sent
    again with its series and time in a later call whose range the writer's slots cover:
    the ledger does not know its id and the range is not read, but the point the earlier
    read found there is read again, so the record still counts once."""
    server, db = influx_db
    at = T + 9 * DAY + 77_000
    before = InfluxStore.from_url(f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1")
    try:  # the host's own SQLite ledger (in memory), not the fleet's
        assert before.append([_row("x", "o1", at, 3)], 0) == 1
    finally:
        before.close()
    store = _store(server, db, state)
    spread = [_row(f"s{i}", "o1", T + 9 * DAY + i * DAY // 8 + 5_000) for i in range(8)]
    try:
        assert store.append(spread, 0) == 8  # reads the day, and finds x there
        reads = _counted(store).reads
        assert store.append([_row("x", "o1", at, 3), _row("y", "o1", at + 1_000)], 0) == 1
        assert _counted(store).reads == reads  # no range read: the day is covered
    finally:
        store.close()
    assert sorted(rid for rid, _ in _stored(server, db)) == sorted(
        ["x", "y", *(r.id for r in spread)]
    )


# -- one host: its own ledger (SQLite), kept while its writer is the only one -----------------


def _host(server: InfluxServer, db: str, writer: str, ledger: str) -> InfluxStore:
    store = InfluxStore.from_url(
        f"influxdb://127.0.0.1:{server.port}/{db}?writer={writer}", ledger=ledger
    )
    store.transport = Counted(store.transport)  # type: ignore[arg-type,assignment]
    return store


def test_one_host_keeps_its_slots_while_it_is_the_only_writer(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """A host with its own ledger keeps its slots while the database holds no other writer's
    records: a spread backfill reads only in its first call, and every record is stored once
    at its own point, also where times collide."""
    server, db = influx_db
    rng = random.Random(4)
    times = [T + rng.randrange(20 * DAY) // 1_000 * 1_000 for _ in range(1_500)]
    store = _host(server, db, "solo", str(tmp_path / "state.db"))
    written: list[RecordRow] = []
    try:
        for call in range(4):
            rows = [_row(f"h{call}-{i}", rng.choice(SUBJECTS), rng.choice(times))
                    for i in range(1_500)]  # fmt: skip
            assert store.append(rows, 0) == 1_500
            written += rows
            if call == 0:
                first = _counted(store).reads
        assert _counted(store).reads == first
    finally:
        store.close()
    assert sorted(rid for rid, _ in _stored(server, db)) == sorted(r.id for r in written)


def test_another_writer_in_the_database_makes_a_host_read_again(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """Two hosts with ledgers of their own: once the other host's records are in the
    database, a host no longer trusts the ranges it kept, so a record the other stored,
    retried through this one with its series and time, is found and counts once."""
    server, db = influx_db
    at = T + 2 * DAY + 31_000
    mine = _host(server, db, "host-a", str(tmp_path / "a.db"))
    other = _host(server, db, "host-b", str(tmp_path / "b.db"))
    other._lock_path = str(tmp_path / "b.lock")  # another machine: its own lock file
    spread = [_row(f"s{i}", "o1", T + 2 * DAY + i * DAY // 8 + 9_000) for i in range(8)]
    try:
        assert mine.append(spread, 0) == 8  # covers the day
        assert other.append([_row("x", "o1", at, 2)], 0) == 1
        assert mine.append([_row("x", "o1", at, 2)], 0) == 0  # a retry through this host
    finally:
        mine.close()
        other.close()
    assert sorted(rid for rid, _ in _stored(server, db)) == sorted(["x", *(r.id for r in spread)])
