"""Group commit in the durable outbox: concurrent callers share one transaction, each returns
once its own records are committed, and a failed commit reaches every caller in it.

The commit is held up or made to fail with a second SQLite connection on the same file (a
write transaction kept open, or a trigger that aborts inserts), so the timing is decided by
the database, not by sleeps.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest

import tsmeter
from tests.unit.test_outbox import Store, rows, wait_until
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError
from tsmeter.outbox.durable import Outbox


@contextmanager
def write_lock(path: str) -> Iterator[sqlite3.Connection]:
    """Hold the file's write lock (another connection's open write transaction) while inside."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")
        conn.close()


def queued(box: Outbox) -> int:
    """Records the outbox accepted and has not committed yet (not ``status()``: that waits for
    the connection, which a commit held up by the write lock keeps)."""
    with box._cond:
        return box._queued


def start(target: object, n: int) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    return threads


def test_callers_that_arrive_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    """While one commit waits for the disk, 20 callers join the next transaction: two
    commits in all, every caller returns, every record is delivered once."""
    path = str(tmp_path / "o.db")
    store = Store()
    box = Outbox(path, store)
    returned: list[int] = []
    with write_lock(path):
        first = threading.Thread(target=box.put, args=(rows("first", 1),))
        first.start()
        wait_until(lambda: queued(box) == 1 and not box._open.parts)  # its commit began
        threads = start(lambda i: (box.put(rows(f"t{i}", 3)), returned.append(i)), 20)
        wait_until(lambda: queued(box) == 61)
        assert returned == [] and first.is_alive()  # nobody returns before the disk has it
    first.join(10)
    for thread in threads:
        thread.join(10)
    assert sorted(returned) == list(range(20))
    assert box.commits == 2
    assert box.drain(10)
    assert len(store.ids) == 61 and set(store.ids.values()) == {1}
    box.close()


def test_a_failed_commit_reaches_every_caller_in_it_and_queues_nothing_of_theirs(
    tmp_path: Path,
) -> None:
    """A commit the database refuses: each of its 12 waiting callers gets the error and none of
    their records is in the file; records queued without waiting are committed once it works
    again; the callers' retries are delivered exactly once."""
    path = str(tmp_path / "o.db")
    store = Store()
    box = Outbox(path, store)
    errors: dict[int, BaseException] = {}

    def put(i: int) -> None:
        try:
            box.put(rows(f"w{i}", 5))
        except StorageUnavailableError as exc:
            errors[i] = exc

    with write_lock(path) as blocker:
        blocker.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox_batches"
                        " BEGIN SELECT RAISE(ABORT, 'disk says no'); END")  # fmt: skip
        threads = start(put, 12)
        wait_until(lambda: queued(box) == 60)
        box.put(rows("loose", 4), wait=False)
    for thread in threads:
        thread.join(10)
    assert sorted(errors) == list(range(12))
    assert all("disk says no" in str(exc) and "nothing of this call" in str(exc)
               for exc in errors.values())  # fmt: skip
    reader = sqlite3.connect(path, isolation_level=None)
    assert reader.execute("SELECT count(*) FROM outbox_batches").fetchone() == (0,)
    reader.execute("DROP TRIGGER refuse")
    reader.close()
    wait_until(lambda: "loose-3" in store.ids)  # retried after the failure
    for i in range(12):  # the callers retry what failed
        box.put(rows(f"w{i}", 5))
    assert box.drain(10)
    expected = {f"w{i}-{j}" for i in range(12) for j in range(5)} | {f"loose-{j}" for j in range(4)}
    assert set(store.ids) == expected and set(store.ids.values()) == {1}
    assert box.close().in_memory == 0


def test_many_threads_record_through_the_outbox_exactly_once(tmp_path: Path) -> None:
    """8 threads x 300 record() calls with random quantities, through the durable outbox to
    the embedded store: the stored records are exactly the ones recorded (ids, count, sum),
    and the calls shared commits."""
    rng = random.Random(7)
    plan = [[(f"r{t}-{i}", Decimal(rng.randint(1, 10_000)) / 100) for i in range(300)]
            for t in range(8)]  # fmt: skip
    with tsmeter.connect(f"sqlite:///{tmp_path / 'usage.db'}",
                         outbox=str(tmp_path / "outbox.db")) as meter:  # fmt: skip
        meter.define_metric("storage", aggregation_type="SUM")
        failures: list[BaseException] = []

        def record(t: int) -> None:
            try:
                for rid, quantity in plan[t]:
                    meter.record("storage", "org", f"org-{t % 3}", quantity, id=rid)
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)

        for thread in start(record, 8):
            thread.join(60)
        assert failures == []
        assert meter.flush(30)
        assert meter.outbox is not None and meter.outbox.commits < 8 * 300
        got = meter.get_usage("storage", limit=None)
    expected = {rid: quantity for part in plan for rid, quantity in part}
    assert len(got) == len(expected) == 2400
    assert {r.id: Decimal(str(r.quantity)) for r in got} == expected
    assert sum(Decimal(str(r.quantity)) for r in got) == sum(expected.values())


def test_a_lone_caller_commits_once_per_call(tmp_path: Path) -> None:
    """One thread: each put is its own transaction, so it waits for no one else."""
    box = Outbox(str(tmp_path / "o.db"), Store())
    for i in range(20):
        box.put(rows(f"s{i}", 2))
    assert box.commits == 20
    box.close()


@pytest.mark.parametrize("n", [1, 7])
def test_rows_of_one_call_stay_together_and_in_order(tmp_path: Path, n: int) -> None:
    """A call's rows are committed in the order given, whatever joins the same commit."""
    delivered: list[RecordRow] = []
    box = Outbox(str(tmp_path / "o.db"), delivered.extend, batch_rows=n)
    box.put(rows("a", 10))
    assert box.drain(10)
    assert [r.id for r in delivered] == [f"a-{i}" for i in range(10)]
    box.close()


def test_a_flusher_that_delivered_little_lets_records_gather_unless_drain_waits(
    tmp_path: Path,
) -> None:
    """After a small delivery the flusher waits (``linger``) so that records put one at a time
    reach the store together; drain() cuts the wait short."""
    store = Store()
    box = Outbox(str(tmp_path / "o.db"), store)
    box.linger = 5.0
    box.put(rows("a", 1))
    wait_until(lambda: "a-0" in store.ids)  # delivered: the flusher lingers now
    calls = store.calls
    for i in range(3):
        box.put(rows(f"b{i}", 2))
    started = time.monotonic()
    assert box.drain(10)
    assert time.monotonic() - started < 2.5  # not the 5 s linger
    assert store.calls == calls + 1  # the three puts went in one delivery
    assert len(store.ids) == 7 and set(store.ids.values()) == {1}
    box.close()
