"""The id ledger on a real PostgreSQL, as a fleet uses it: several processes adding the same
ids at once, and two InfluxDB stores ("hosts") on one real influxd sharing it."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb.client import series_rows
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.adapters.influxdb.v1 import V1Transport
from tsmeter.adapters.postgres.database import StateDatabase
from tsmeter.adapters.postgres.dedupe import PostgresDedupe
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError, ValidationError

TARGET = "http://127.0.0.1:8086/metering"
T = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000_000_000
HOSTILE = (
    "it's", 'a "quoted" id', "back\\slash\\", "new\nline\r\n", "a,b=c d", "\\N", "\t",
    "\u00e9t\u00e9 \U0001f600 \u202e", "'); DELETE FROM dedupe_ids; --", "%s%b{0}",
)  # fmt: skip
PROCESSES = 3
SHARED = 12_000  # ids every process adds
OWN = 4_000  # ids only one process adds


def _ids(k: int) -> list[str]:
    """The ids process ``k`` adds: the shared ones, the hostile ones and its own."""
    return [*(f"s-{i:06d}" for i in range(SHARED)), *HOSTILE, *(f"p{k}-{i}" for i in range(OWN))]


def _where(row: RecordRow) -> tuple[str, str, int]:
    return (row.subject_id, row.org_id or "", row.ts)


def _adder(url: str, k: int, start: Any, added: Any, done: Any, answers: Any) -> None:
    """Child process (one "host"): add this host's ids in shuffled batches of 2,000, each id
    at a location naming the host, all hosts at once; then report what ``known`` says."""
    db = StateDatabase(url, max_size=2)
    dedupe = PostgresDedupe(db, TARGET)
    try:
        ids = _ids(k)
        random.Random(k).shuffle(ids)
        start.wait(timeout=60)
        for round_ in range(2):  # the second round replaces the first's locations
            for i in range(0, len(ids), 2_000):
                dedupe.add([RecordRow(rid, "api_calls", "org", f"host{k}", f"r{round_}", 1.0,
                                      T + n, None, None)
                            for n, rid in enumerate(ids[i : i + 2_000], start=i)])  # fmt: skip
        added.wait(timeout=120)  # every host has added: the answers must agree
        everything = sorted({rid for j in range(PROCESSES) for rid in _ids(j)})
        answers.put((k, {rid: _where(row) for rid, row in dedupe.known(everything).items()}))
        done.wait(timeout=120)
    finally:
        dedupe.close()
        db.close()


@pytest.fixture
def dbs(pg_url: str) -> Iterator[list[StateDatabase]]:
    """Two state databases on one PostgreSQL: two hosts' connections."""
    opened = [StateDatabase(pg_url, max_size=4) for _ in range(2)]
    yield opened
    for db in opened:
        db.close()


def test_hosts_adding_the_same_ids_at_once_agree(pg_url: str) -> None:
    """Three processes add overlapping ids (some hostile) with their own locations at once,
    each batch in another order: no add fails, each id has one entry, at a location one host
    gave it in its last round, and every process reads the same answer for every id."""
    ctx = multiprocessing.get_context("spawn")
    start, added, done = (ctx.Barrier(PROCESSES) for _ in range(3))
    answers = ctx.Queue()
    workers = [ctx.Process(target=_adder, args=(pg_url, k, start, added, done, answers))
               for k in range(PROCESSES)]  # fmt: skip
    for w in workers:
        w.start()
    try:
        got = dict(answers.get(timeout=240) for _ in workers)
    finally:
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():
                w.kill()
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    everything = {rid for k in range(PROCESSES) for rid in _ids(k)}
    first = got[0]
    assert set(first) == everything
    assert all(got[k] == first for k in range(PROCESSES))
    position = {}  # each host's last round: id -> its time
    for k in range(PROCESSES):
        order = _ids(k)
        random.Random(k).shuffle(order)
        position[k] = {rid: T + n for n, rid in enumerate(order)}
    for rid, (subject, org, ts) in first.items():
        k = int(subject.removeprefix("host"))
        assert (org, ts) == ("r1", position[k].get(rid))  # that host's, from its last round
    db = StateDatabase(pg_url)
    try:
        with db.transaction() as conn:
            (entries, distinct) = conn.execute(  # type: ignore[misc]
                "SELECT count(*), count(DISTINCT id) FROM dedupe_ids"
            ).fetchone()
            stored = {rid for (rid,) in conn.execute("SELECT id FROM dedupe_ids")}
    finally:
        db.close()
    assert entries == distinct == len(everything)
    assert stored == everything  # hostile ids are stored as they came, nothing more


def test_an_id_added_on_one_host_is_known_on_the_other(dbs: list[StateDatabase]) -> None:
    """A second host knows the ids (and series it never numbered) of the first, and its
    later add of an id replaces the first host's location; another target is apart."""
    a, b = (PostgresDedupe(db, TARGET) for db in dbs)
    elsewhere = PostgresDedupe(dbs[1], "http://127.0.0.1:8086/other")
    try:
        a.add([RecordRow("x", "api_calls", "org", "o1", "acme", 1.0, T, None, None)])
        (hit,) = b.known(["x", "y"]).values()
        assert (hit.subject_id, hit.org_id, hit.ts) == ("o1", "acme", T)
        b.add([RecordRow("x", "tokens", "user", "u9", None, 1.0, T + HOUR, None, None)])
        (hit,) = a.known(["x"]).values()
        assert (hit.metric_key, hit.subject_id, hit.org_id, hit.ts) == ("tokens", "u9", None,
                                                                        T + HOUR)  # fmt: skip
        assert elsewhere.known(["x"]) == {}
    finally:
        for d in (a, b, elsewhere):
            d.close()
    with dbs[0].transaction() as conn:  # closing a port leaves the shared database open
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_nul_is_refused_with_a_clear_error(dbs: list[StateDatabase]) -> None:
    """PostgreSQL's text cannot hold NUL: an add says which field; a lookup finds nothing."""
    dedupe = PostgresDedupe(dbs[0], TARGET)
    try:
        with pytest.raises(ValidationError, match="id: must not contain NUL"):
            dedupe.add([RecordRow("a\x00b", "m", "org", "o", None, 1.0, T, None, None)])
        assert dedupe.known(["a\x00b", "a"]) == {}
    finally:
        dedupe.close()


# -- two InfluxDB "hosts" sharing the ledger ----------------------------------------------


def _store(server: InfluxServer, db: str, writer: str, state: StateDatabase) -> InfluxStore:
    """One host's store: its own writer name, the fleet's ledger."""
    transport = V1Transport.from_url(f"influxdb://127.0.0.1:{server.port}/{db}?writer={writer}")
    return InfluxStore(transport, PostgresDedupe(state, transport.target))


def _records(n: int, ts: int = T) -> list[RecordRow]:
    """``n`` records of a few subjects with differing quantities, a millisecond apart."""
    return [RecordRow(f"req-{i:05d}", "api_calls", "org", f"o{i % 7}", None, i % 5 + 1,
                      ts + i * 1_000_000, None, None) for i in range(n)]  # fmt: skip


def _totals(server: InfluxServer, db: str) -> tuple[int, int, int]:
    """Points, the sum of their units (exact integers), and distinct record ids."""
    (result,) = server.query('SELECT count("units"), sum("units") FROM "usage"',
                             db=db)["results"]  # fmt: skip
    (distinct,) = server.query('SELECT count(distinct("rid")) FROM "usage"', db=db)["results"]
    found, ids = series_rows(result), series_rows(distinct)
    if not found:
        return (0, 0, 0)
    return int(found[0][1]["count"]), int(found[0][1]["sum"]), int(ids[0][1]["count"])


def test_a_retry_through_another_host_counts_once(
    influx_db: tuple[InfluxServer, str], dbs: list[StateDatabase]
) -> None:
    """Records appended through host A, then retried through host B with other timestamps
    (the load balancer sent the retry elsewhere, which stamped its own time): B writes
    nothing, and the totals are those of the records counted once."""
    server, db = influx_db
    first, retry = _records(3_000), _records(3_000, ts=T + 5 * HOUR)
    a, b = _store(server, db, "host-a", dbs[0]), _store(server, db, "host-b", dbs[1])
    try:
        assert a.append(first, 0) == 3_000
        assert b.append(retry, 0) == 0
        assert b.append(retry[::-1][:100] + _records(3_100)[3_000:], 0) == 100  # 100 new ones
    finally:
        a.close()
        b.close()
    expected = _records(3_100)
    assert _totals(server, db) == (3_100, sum(r.quantity for r in expected), 3_100)


def test_an_entry_whose_point_never_landed_is_written_by_a_retry_elsewhere(
    influx_db: tuple[InfluxServer, str], dbs: list[StateDatabase]
) -> None:
    """Host A claimed a chunk in the ledger and died before writing its points (the store
    enters ids before the write). Host B, retrying with other timestamps, finds the ids
    known but their points missing: while A's write may still be on its way, B writes none
    of them, fails after waiting for them (saying how many records are stored) and keeps
    them for a retry; once A's write must have ended, B writes them, once; further retries
    through either host write nothing."""
    server, db = influx_db
    records = _records(2_000)
    written, lost = records[:1_200], records[1_200:]
    a, b = _store(server, db, "host-a", dbs[0]), _store(server, db, "host-b", dbs[1])
    b.IN_FLIGHT_S, b.LANDING_WAIT = 2.0, 0.2
    try:
        assert a.append(written, 0) == 1_200
        assert a.dedupe.claim(lost, a.writer) == {}  # the entries of a write that never happened
        assert set(b.dedupe.known([r.id for r in lost])) == {r.id for r in lost}
        assert _totals(server, db)[0] == 1_200
        retried = [r._replace(ts=r.ts + 3 * HOUR) for r in records]
        with pytest.raises(StorageUnavailableError, match=r"800 records .* another host") as err:
            b.append(retried, 0)
        assert err.value.records_stored == 1_200
        assert _totals(server, db)[0] == 1_200
        time.sleep(2.1)  # A's write has ended by now, whichever way
        assert b.append(retried, 0) == 800  # only the lost ones
        assert a.append(records, 0) == 0
        assert b.append(retried, 0) == 0
        moved = b.get_record(lost[0].id)
        assert moved is not None and moved.ts == lost[0].ts + 3 * HOUR
    finally:
        a.close()
        b.close()
    assert _totals(server, db) == (2_000, sum(r.quantity for r in records), 2_000)


def test_a_host_retrying_its_own_failed_write_writes_at_once(
    influx_db: tuple[InfluxServer, str], dbs: list[StateDatabase]
) -> None:
    """Entries a host made itself whose points never landed (its write failed) are written by
    its own retry at once, from another process of the host too (the same writer): the
    host's writes are serialised, so none of them can still be on its way."""
    server, db = influx_db
    records = _records(500)
    a = _store(server, db, "host-a", dbs[0])
    again = _store(server, db, "host-a", dbs[1])  # another process of host A
    try:
        assert a.dedupe.claim(records[:300], a.writer) == {}  # then the write failed
        assert a.append(records[:200], 0) == 200
        assert again.append(records, 0) == 300
    finally:
        a.close()
        again.close()
    assert _totals(server, db) == (500, sum(r.quantity for r in records), 500)


# -- two hosts delivering the same ids at the same moment ---------------------------------

RACE_ROUNDS = 12
RACE_IDS = 1_500  # ids of a round, which both hosts deliver


def _race_rows(round_: int, k: int) -> list[RecordRow]:
    """Round ``round_``'s records as host ``k`` stamps them: the same ids and quantities on
    both hosts, each host's own times (a retry through another host gets that host's time)."""
    base = T + round_ * HOUR + k * 17 * 60_000_000_000
    return [RecordRow(f"race{round_}-{i:05d}", "api_calls", "org", f"o{i % 3}", None,
                      i % 7 + 1, base + i * 1_000_000, None, None)
            for i in range(RACE_IDS)]  # fmt: skip


def _racer(port: int, db: str, url: str, k: int, tmp: str, start: Any, results: Any) -> None:
    """Child process (one "host": its own temporary directory, so its own write lock): each
    round, wait for the other host at the barrier, then append the round's records in small
    windows and chunks, so the two hosts' lookups, entries and writes interleave."""
    import tempfile

    tempfile.tempdir = tmp
    state = StateDatabase(url, max_size=4)
    transport = V1Transport.from_url(f"influxdb://127.0.0.1:{port}/{db}?writer=host{k}")
    store = InfluxStore(transport, PostgresDedupe(state, transport.target))
    store.FIRST_WINDOW, store.READ_CHUNK, store.WRITE_CHUNK = 60, 240, 30
    written = []
    try:
        for round_ in range(RACE_ROUNDS):
            start.wait(timeout=60)
            written.append(store.append(_race_rows(round_, k), 0))
        results.put((k, written))
    finally:
        store.close()
        state.close()


def test_two_hosts_delivering_the_same_ids_at_once_count_each_once(
    influx_db: tuple[InfluxServer, str], pg_url: str, tmp_path: Any
) -> None:
    """Two hosts (processes with their own write locks) append the same record ids with
    their own timestamps at the same moment, round after round (a client that timed out on
    one host retried through the other): each id is written by one host only, so InfluxDB
    holds one point per id and the sum of the quantities counted once."""
    server, db = influx_db
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    results = ctx.Queue()
    dirs = [tmp_path / f"host{k}" for k in range(2)]
    for d in dirs:
        d.mkdir()
    workers = [ctx.Process(target=_racer, args=(server.port, db, pg_url, k, str(dirs[k]),
                                                start, results))
               for k in range(2)]  # fmt: skip
    for w in workers:
        w.start()
    try:
        written = dict(results.get(timeout=300) for _ in workers)
    finally:
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():
                w.kill()
    assert [w.exitcode for w in workers] == [0, 0]
    expected = [row for round_ in range(RACE_ROUNDS) for row in _race_rows(round_, 0)]
    total = sum(row.quantity for row in expected)
    assert _totals(server, db) == (len(expected), total, len(expected))
    for round_ in range(RACE_ROUNDS):  # each id counted new by exactly one host
        assert written[0][round_] + written[1][round_] == RACE_IDS
