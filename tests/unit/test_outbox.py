"""The outbox on its own: group commit, delivery, retries with backoff, quarantine by halving,
backpressure and restarts. The store is a function here; fault tests against a real influxd
live in tests/integration."""

from __future__ import annotations

import marshal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tsmeter
from tsmeter.domain import RecordRow
from tsmeter.errors import (
    OutboxFullError,
    RejectedError,
    StorageUnavailableError,
    ValidationError,
)
from tsmeter.outbox import batches as outbox_batches
from tsmeter.outbox import durable
from tsmeter.outbox.batches import pack
from tsmeter.outbox.durable import Outbox


def rows(prefix: str, n: int) -> list[RecordRow]:
    """``n`` rows with ids ``prefix-i`` (a quantity of 1 in units of precision 6)."""
    return [RecordRow(f"{prefix}-{i}", "api_calls", "org", "o1", None, 1_000_000, i, None, None)
            for i in range(n)]  # fmt: skip


class Store:
    """Stores rows by id; ``down`` fails every call, ``poison`` ids are rejected."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.calls = 0
        self.down = False
        self.poison: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, batch: list[RecordRow]) -> None:
        with self.lock:
            self.calls += 1
            if self.down:
                raise StorageUnavailableError("server down")
            bad = [r.id for r in batch if r.id in self.poison]
            if bad:
                raise RejectedError(f"HTTP 400: bad point {bad[0]}")
            for r in batch:
                self.ids[r.id] = self.ids.get(r.id, 0) + 1


def wait_until(check: object, timeout: float = 10.0) -> None:
    """Poll ``check()`` until true (bounded)."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_put_commits_and_the_flusher_delivers_once(tmp_path: Path) -> None:
    """Records put with wait=True are in the file when put returns; each is delivered once,
    and the delivered batches leave the file."""
    store = Store()
    box = Outbox(str(tmp_path / "o.db"), store)
    threads = [threading.Thread(target=box.put, args=(rows(f"t{n}", 500),)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert box.drain(10)
    assert len(store.ids) == 4_000 and set(store.ids.values()) == {1}
    status = box.close()
    assert (status.pending, status.batches, status.delivered) == (0, 0, 4_000)


def test_a_down_store_defers_with_backoff_and_loses_nothing(tmp_path: Path) -> None:
    """While the store fails, batches wait (deferred, error visible); once it is back every
    record arrives."""
    store = Store()
    store.down = True
    box = Outbox(str(tmp_path / "o.db"), store, backoff_base=0.05, backoff_max=0.2)
    box.put(rows("a", 1_000))
    wait_until(lambda: store.calls >= 3)
    status = box.status()
    assert status.pending == 1_000 and status.last_error and "server down" in status.last_error
    store.down = False
    assert box.drain(10)
    assert len(store.ids) == 1_000
    box.close()


def test_rejected_records_are_quarantined_and_the_rest_delivered(tmp_path: Path) -> None:
    """A batch the store rejects is halved until the poisoned records are alone: they go to
    the quarantine with the store's message, the others are delivered; retry() sends the
    quarantined ones again and purge_quarantine() drops them."""
    store = Store()
    store.poison = {"p-17", "p-900"}
    box = Outbox(str(tmp_path / "o.db"), store)
    box.put(rows("p", 1_000))
    assert box.drain(10)
    assert len(store.ids) == 998
    quarantined = box.quarantined()
    assert [(q.row.id, "bad point" in q.error) for q in quarantined] == [
        ("p-17", True), ("p-900", True)
    ]  # fmt: skip
    assert box.status().quarantined == 2
    store.poison = {"p-900"}
    assert box.retry() == 2
    assert box.drain(10)
    assert "p-17" in store.ids and [q.row.id for q in box.quarantined()] == ["p-900"]
    assert box.purge_quarantine() == 1
    box.close()


def test_a_full_outbox_blocks_then_raises(tmp_path: Path) -> None:
    """With the store down and the outbox at max_pending, put waits for the timeout and
    raises OutboxFullError; nothing of that call is queued."""
    store = Store()
    store.down = True
    box = Outbox(str(tmp_path / "o.db"), store, max_pending=100, backoff_base=5)
    box.put(rows("a", 100))
    started = time.monotonic()
    with pytest.raises(OutboxFullError, match="max_pending 100"):
        box.put(rows("b", 1), timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert box.status().pending == 100
    box.close(timeout=0.1)


def test_a_later_process_delivers_what_an_earlier_one_left(tmp_path: Path) -> None:
    """Records committed while the store was down stay in the file after close; the next
    outbox on the file delivers them."""
    path = str(tmp_path / "o.db")
    down = Store()
    down.down = True
    first = Outbox(path, down, backoff_base=5)
    first.put(rows("k", 300))
    assert first.close(timeout=0.2).pending == 300
    store = Store()
    second = Outbox(path, store)
    assert second.drain(10)
    assert len(store.ids) == 300
    second.close()


def test_memory_durability_returns_before_the_commit(tmp_path: Path) -> None:
    """put(wait=False) returns at once; the commit follows within the commit interval."""
    store = Store()
    box = Outbox(str(tmp_path / "o.db"), store, commit_interval=0.05)
    started = time.monotonic()
    box.put(rows("m", 10), wait=False)
    assert time.monotonic() - started < 0.04
    assert box.drain(10) and len(store.ids) == 10
    box.close()


def test_two_outboxes_on_one_file_count_what_the_file_holds(tmp_path: Path) -> None:
    """The flusher that delivers another process's records keeps an exact count: its own
    drain and close do not wait for records already delivered, and flush-waits still cover
    its own records."""
    path = str(tmp_path / "o.db")
    store = Store()
    flusher = Outbox(path, store)
    wait_until(lambda: flusher.status().batches == 0 and flusher._lock_file is not None)
    other = Outbox(path, store)  # the flush lock is taken: this one only queues
    other.put(rows("b", 100))
    assert other.drain(10) and len(store.ids) == 100
    assert flusher.drain(0.5)
    flusher.put(rows("a", 100))
    assert flusher.drain(10) and len(store.ids) == 200
    started = time.monotonic()
    assert flusher.close(timeout=5).pending == 0
    assert time.monotonic() - started < 2
    other.close()


def test_backpressure_counts_records_other_processes_committed(tmp_path: Path) -> None:
    """max_pending bounds the file: records another outbox on the file committed count."""
    path = str(tmp_path / "o.db")
    store = Store()
    store.down = True
    flusher = Outbox(path, store, max_pending=100, backoff_base=5)
    wait_until(lambda: flusher._lock_file is not None)
    other = Outbox(path, store, max_pending=100)
    other.put(rows("b", 100))
    wait_until(lambda: flusher._pending == 100)  # seen within a flusher pass (~0.2 s)
    with pytest.raises(OutboxFullError):
        flusher.put(rows("a", 1), timeout=1.0)
    other.close(timeout=0.1)
    flusher.close(timeout=0.1)


def test_delivered_does_not_count_quarantined_records(tmp_path: Path) -> None:
    """status().delivered counts what the store took, not what it rejected."""
    store = Store()
    store.poison = {"p-3"}
    box = Outbox(str(tmp_path / "o.db"), store)
    box.put(rows("p", 10))
    assert box.drain(10)
    status = box.close()
    assert (status.delivered, status.quarantined) == (9, 1)


def test_a_batch_delivered_again_keeps_one_quarantine_entry(tmp_path: Path) -> None:
    """When the store fails half-way through the halving, the batch is delivered again later;
    its rejected record is quarantined once, not once per attempt."""
    failed = []

    def deliver(batch: list[RecordRow]) -> None:
        ids = {r.id for r in batch}
        if "p-1" in ids:
            raise RejectedError("HTTP 400: bad point p-1")
        if ids == {"p-2", "p-3"} and not failed:
            failed.append(True)
            raise StorageUnavailableError("server went away")

    box = Outbox(str(tmp_path / "o.db"), deliver, backoff_base=0.01, backoff_max=0.05)
    box.put(rows("p", 4))
    assert box.drain(10) and failed
    assert [q.row.id for q in box.quarantined()] == ["p-1"]
    box.close()


def test_interpreter_exit_delivers_an_outbox_left_open(tmp_path: Path) -> None:
    """A process that records in memory mode and exits without close() still commits and
    delivers its records (within exit_timeout)."""
    store, outbox = tmp_path / "u.db", tmp_path / "o.db"
    code = f"""
import tsmeter
meter = tsmeter.connect({str(store)!r}, outbox={str(outbox)!r}, durability="memory",
                        outbox_options={{"commit_interval": 1.0}})
meter.define_metric("api_calls", aggregation_type="COUNT")
meter.record_batch([{{"metricKey": "api_calls", "subjectType": "org", "subjectId": "o1",
                     "id": f"x{{i}}"}} for i in range(50)])
assert meter.outbox.status().in_memory == 50
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with tsmeter.connect(str(store)) as meter:
        assert len(meter.get_usage("api_calls")) == 50


def test_deliveries_take_whole_batches_oldest_first_up_to_batch_rows(tmp_path: Path) -> None:
    """Each call of deliver gets the oldest due batches that fit in batch_rows (at least one
    batch, even a larger one), in commit order."""
    sizes: list[int] = []
    box = Outbox(str(tmp_path / "o.db"), lambda batch: sizes.append(len(batch)), batch_rows=100)
    with box._db:  # commit three batches before the flusher may see any of them
        box._conn.execute("BEGIN IMMEDIATE")
        for prefix, n in (("a", 60), ("b", 30), ("c", 150)):
            box._conn.execute(
                "INSERT INTO outbox_batches (n, rows, created_at) VALUES (?, ?, 0)",
                (n, pack(rows(prefix, n))),
            )
        box._conn.execute("COMMIT")
    box._wake.set()
    wait_until(lambda: sum(sizes) == 240)
    assert sizes == [90, 150]
    box.close()


@pytest.mark.parametrize("returning", [True, False])
def test_commits_of_one_batch_and_of_several_number_them_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    """A put within batch_rows is one batch (one INSERT ... RETURNING where SQLite has it),
    a larger one several in one transaction; either way the batches held in memory are
    the ones committed under those numbers, so each record is delivered once, as put."""
    monkeypatch.setattr("tsmeter.outbox.batches._RETURNING", returning)
    store = KeepingStore()
    box = Outbox(str(tmp_path / "o.db"), store, batch_rows=100, reachable=lambda: True)
    wait_until(lambda: box._lock_file is not None)
    store.gate.clear()  # nothing delivered while the commits are made
    puts = [rows("one", 40), rows("three", 250), rows("again", 100)]
    for part in puts:
        box.put(part)
    sizes = box._conn.execute("SELECT n FROM outbox_batches ORDER BY seq").fetchall()
    assert [n for (n,) in sizes] == [40, 100, 100, 50, 100]
    store.gate.set()
    assert box.drain(10)
    assert store.ids == {row.id: 1 for part in puts for row in part}
    assert all(_same_objects(store.given, part) for part in puts)
    assert box.close().pending == 0


class StreamStore(Store):
    """A store taking a stream of parts; it reports each part stored once the next one was
    taken (as a store with writes in flight does), and can fail after ``fail_after`` parts."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[list[int]] = []  # sizes of the parts of each stream
        self.pending_seen: list[int] = []  # batches in the file when a part was reported
        self.box: Outbox | None = None
        self.fail_after: int | None = None

    def stream(self, parts: Iterator[list[RecordRow]], stored: Callable[[int], None]) -> None:
        sizes: list[int] = []
        self.streams.append(sizes)
        done = 0
        for part in parts:
            if self.fail_after is not None and len(sizes) == self.fail_after:
                raise StorageUnavailableError("server went away")
            self(part)
            if sizes:
                box = self.box
                assert box is not None
                before = box.status().batches
                stored(done)  # the part before this one; removed on the outbox's thread
                wait_until(lambda: box.status().batches < before)  # noqa: B023
                self.pending_seen.append(box.status().batches)
            sizes.append(len(part))
            done += len(part)


def _stream_box(tmp_path: Path, store: StreamStore, **options: Any) -> Outbox:
    box = Outbox(str(tmp_path / "o.db"), store, stream=store.stream, **options)
    store.box = box
    return box


def _fill(box: Outbox, batches: int, size: int) -> None:
    """Commit ``batches`` batches at once (one transaction, under the connection's lock, so
    the flusher, reading on a connection of its own, sees all or none), as this process's
    own."""
    with box._db:
        box._conn.execute("BEGIN IMMEDIATE")
        for k in range(batches):
            box._conn.execute(
                "INSERT INTO outbox_batches (n, rows, created_at) VALUES (?, ?, 0)",
                (size, pack(rows(f"b{k}", size))),
            )
        (box._mine,) = box._conn.execute("SELECT max(seq) FROM outbox_batches").fetchone()
        box._conn.execute("COMMIT")
    box._refresh_pending()
    box._wake.set()


def test_a_stream_delivers_every_due_batch_and_removes_each_once_stored(tmp_path: Path) -> None:
    """The due batches go to the store as one stream of parts, oldest first; each leaves the
    file as soon as the store reports its records stored, while later ones still wait."""
    store = StreamStore()
    box = _stream_box(tmp_path, store)
    _fill(box, 6, 100)
    assert box.drain(10)
    assert len(store.ids) == 600 and set(store.ids.values()) == {1}
    assert store.streams == [[100] * 6]
    assert store.pending_seen == [5, 4, 3, 2, 1]  # one batch fewer after each report
    assert box.close().delivered == 600


def test_a_stream_that_fails_defers_only_what_was_not_stored(tmp_path: Path) -> None:
    """A failure after three parts: the two reported stored are gone from the file, the rest
    waits with the error and arrives on a later attempt, nothing twice but the part that was
    taken and not reported."""
    store = StreamStore()
    store.fail_after = 3
    box = _stream_box(tmp_path, store, backoff_base=0.05, backoff_max=0.1)
    _fill(box, 6, 100)
    wait_until(lambda: box.status().last_error is not None)
    store.fail_after = None
    assert box.drain(10)
    assert len(store.ids) == 600
    assert sum(store.ids.values()) == 700  # the third part was stored, never reported
    assert box.close().pending == 0


def test_a_rejected_stream_finds_the_records_batch_by_batch(tmp_path: Path) -> None:
    """A rejection in a stream: the batches not reported stored are delivered one by one
    (halving to the offending record), which is quarantined; all others arrive."""
    store = StreamStore()
    store.poison = {"b3-17"}
    box = _stream_box(tmp_path, store)
    _fill(box, 6, 100)
    assert box.drain(10)
    assert set(store.ids) == {r.id for k in range(6) for r in rows(f"b{k}", 100)} - {"b3-17"}
    assert [q.row.id for q in box.quarantined()] == ["b3-17"]
    assert box.close().delivered == 599


class KeepingStore(Store):
    """Keeps the row objects it was given; ``gate`` (when cleared) holds each delivery."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[RecordRow] = []
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()  # a delivery waits at the gate

    def __call__(self, batch: list[RecordRow]) -> None:
        if not self.gate.is_set():
            self.waiting.set()
        assert self.gate.wait(10)
        super().__call__(batch)
        self.given += batch


def _same_objects(delivered: list[RecordRow], put: list[RecordRow]) -> bool:
    """Whether the store got the very row objects that were put (not rows read back)."""
    by_id = {row.id: row for row in delivered}
    return all(by_id[row.id] is row for row in put)


def test_batches_committed_while_the_store_takes_deliveries_are_not_read_back(
    tmp_path: Path,
) -> None:
    """Once the store took a delivery, committed batches go to it as the rows that were put
    (up to cache_rows records held); before that, beyond the bound and after a failed
    delivery they are read back from the file. Either way each record arrives once, equal."""
    store = KeepingStore()
    box = Outbox(str(tmp_path / "o.db"), store, cache_rows=250, backoff_base=0.05,
                 backoff_max=0.1)  # fmt: skip
    first = rows("first", 100)
    box.put(first)
    assert box.drain(10)
    assert not _same_objects(store.given, first)  # nothing delivered yet: read back

    warm = [rows(f"w{k}", 100) for k in range(2)]
    for part in warm:
        box.put(part)
    assert box.drain(10)
    assert all(_same_objects(store.given, part) for part in warm)

    store.gate.clear()  # a delivery waits: the next commits pile up beyond the bound
    held = [rows(f"h{k}", 100) for k in range(4)]
    box.put(held[0])
    assert store.waiting.wait(10)
    for part in held[1:]:
        box.put(part)
    assert box._held.rows == 200  # the third would pass cache_rows
    store.gate.set()
    assert box.drain(10)
    assert [_same_objects(store.given, part) for part in held] == [True, True, True, False]

    store.down = True  # a failed delivery: nothing is held until one succeeds again
    failed = rows("down", 100)
    box.put(failed)
    wait_until(lambda: box.status().last_error is not None)
    later = rows("later", 100)
    box.put(later)
    assert box._held.rows == 0
    store.down = False
    assert box.drain(10)
    assert not _same_objects(store.given, failed) and not _same_objects(store.given, later)

    everything = [first, *warm, *held, failed, later]
    assert store.ids == {row.id: 1 for part in everything for row in part}
    assert sorted(store.given) == sorted(row for part in everything for row in part)
    assert box.close().pending == 0


@pytest.mark.parametrize("answer", [True, False, "raises"])
def test_a_store_that_answers_at_start_gets_the_first_batches_as_put(
    tmp_path: Path, answer: object, caplog: pytest.LogCaptureFixture
) -> None:
    """``reachable`` is asked once, when the flusher starts: a store that answers gets even
    the first batches as the rows that were put; one that does not answer (or whose probe
    fails) gets them read back, as before any delivery. Each record arrives once either way."""
    store = KeepingStore()
    asked: list[bool] = []

    def reachable() -> bool:
        asked.append(True)
        if answer == "raises":
            raise OSError("probe broke")
        return bool(answer)

    box = Outbox(str(tmp_path / "o.db"), store, reachable=reachable)
    wait_until(lambda: box._lock_file is not None)  # the flusher started and asked
    first, second = rows("first", 100), rows("second", 100)
    store.gate.clear()  # no delivery completes before both are committed: a completed
    box.put(first)  # delivery would turn holding on for the second batch by itself
    box.put(second)
    store.gate.set()
    assert box.drain(10)
    assert asked == [True]
    assert _same_objects(store.given, first) is (answer is True)
    assert _same_objects(store.given, second) is (answer is True)
    assert store.ids == {row.id: 1 for row in first + second}
    assert ("reachable failed" in caplog.text) is (answer == "raises")
    assert box.close().pending == 0


def test_a_stream_takes_held_batches_as_put(tmp_path: Path) -> None:
    """A store that takes a stream gets held batches as the rows that were put, once a part
    of an earlier stream was reported stored; a purged batch's rows are not kept held."""
    store = StreamStore()
    given: list[RecordRow] = []
    stream = store.stream

    def keeping(parts: Iterator[list[RecordRow]], stored: Callable[[int], None]) -> None:
        def seen() -> Iterator[list[RecordRow]]:
            for part in parts:
                given.extend(part)
                yield part

        stream(seen(), stored)

    box = Outbox(str(tmp_path / "o.db"), store, stream=keeping)
    store.box = box
    box.put(rows("cold", 50))
    box.put(rows("cold2", 50), wait=False)
    assert box.drain(10)
    warm = rows("warm", 100)
    box.put(warm)
    assert box.drain(10)
    assert _same_objects(given, warm)
    assert box._held.rows == 0  # taken: nothing stays held
    assert box.close().delivered == 200


# -- the stored batch format --------------------------------------------------------------

OUTBOX_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=3),
    st.sampled_from(["\ud800", "api_calls", "é🙂\x00", -0.0]),
)


def _exactly(rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows compared value, type and sign (NaN is not equal to itself, -0.0 is to 0.0)."""
    return [tuple((repr(v), type(v)) for v in row) for row in rows]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[OUTBOX_VALUES] * 9), max_size=20))
def test_outbox_batches_unpack_to_the_rows_they_were_made_of(values: list[tuple[Any, ...]]) -> None:
    """A stored batch becomes the rows it was made of, value, type and sign: msgpack (format
    4) when every quantity is an int (units) and every value has a msgpack form, also when a
    field holds a value of another type than the row declares; marshal (format 5) for
    another quantity, ints beyond 64 bits and strings without a UTF-8 form. Neither is
    taken for a batch of an earlier version."""
    rows = [RecordRow(*v) for v in values]
    rows += rows[-1:] * 2
    blob = outbox_batches.pack(rows)
    unpacked = outbox_batches.unpack(blob)
    assert _exactly(unpacked) == _exactly(rows)
    assert [type(r) for r in unpacked] == [RecordRow] * len(rows)
    msgpack = (
        all(type(row[5]) is int for row in values)
        and all(not isinstance(v, int) or -(2**63) <= v < 2**64 for row in values for v in row)
        and not any(isinstance(v, str) and "\ud800" in v for row in values for v in row)
    )
    assert blob[0] == (4 if msgpack else 5)
    assert not outbox_batches.legacy(blob)


def _format_2(rows: list[RecordRow]) -> bytes:
    """A batch as earlier versions' compiled path wrote it (format 2, see ``_unpack_2``)."""
    out = bytearray(struct.pack("<BIB", 2, len(rows), len(RecordRow._fields)))
    before: RecordRow | None = None
    for row in rows:
        for k, value in enumerate(row):
            if value is None:
                out += b"\x00"
            elif before is not None and type(before[k]) is type(value) and before[k] == value:
                out += b"\x01"
            elif isinstance(value, str):
                data = value.encode()
                out += b"\x02" + struct.pack("<I", len(data)) + data
            elif isinstance(value, float):
                out += b"\x03" + struct.pack("<d", value)
            else:
                out += b"\x04" + struct.pack("<q", value)
        before = row
    return bytes(out)


def _format_3(rows: list[RecordRow]) -> bytes:
    """A batch as earlier versions wrote it where every quantity was a float."""
    return bytes([3]) + msgspec.msgpack.encode(rows)


def _format_1(rows: list[RecordRow]) -> bytes:
    """A batch as earlier versions wrote it otherwise (an int quantity, say)."""
    return bytes([1]) + marshal.dumps([tuple(r) for r in rows])


def test_batches_written_by_earlier_versions_are_read() -> None:
    """Files on disk hold format 3, format 2 (the earlier compiled path) and format 1
    batches, their quantities the plain values (floats, or ints): read as stored, and known
    as legacy (to be converted to units before delivery)."""
    row = RecordRow("r1", "api_calls", "org", "é", None, 1.5, -7, '{"a": 1}', None)
    rows = [row, row._replace(id="r2"), row._replace(id="r3", quantity=2.0, source="api")]
    for blob in (_format_3(rows), _format_2(rows), _format_1(rows),
                 outbox_batches.pack_legacy(rows)):  # fmt: skip
        assert _exactly(outbox_batches.unpack(blob)) == _exactly(rows)
        assert outbox_batches.legacy(blob)
    ints = [row._replace(quantity=3), row._replace(id="r2", quantity=-2)]
    assert _exactly(outbox_batches.unpack(_format_1(ints))) == _exactly(ints)
    assert _exactly(outbox_batches.unpack(_format_2(ints))) == _exactly(ints)


def test_damaged_outbox_batches_are_refused() -> None:
    """Every cut-short copy of a batch, in each format, an unknown tag, a first row that
    says "the same", rows of another width and bytes after the last row are refused with
    a clear error."""
    row = RecordRow("r1", "api_calls", "org", "é", None, 1_500_000, -7, '{"a": 1}', None)
    rows = [row, row._replace(id="r2")]
    new = outbox_batches.pack(rows)
    assert new[0] == 4 and outbox_batches.unpack(new) == rows
    floats = [r._replace(quantity=1.5) for r in rows]
    old = _format_2(floats)
    width_at, first_tag = 5, 6
    blobs = (new, old, _format_3(floats), _format_1(floats),
             bytes([5]) + marshal.dumps([tuple(r) for r in rows]))  # fmt: skip
    damaged = [blob[:n] for blob in blobs for n in range(1, len(blob))]
    damaged += [
        old[:first_tag] + b"\x09" + old[first_tag + 1 :],
        old[:first_tag] + b"\x01" + old[first_tag + 1 :],
        old[:width_at] + b"\x08" + old[width_at + 1 :],
        old + b"\x00",
        new + b"\x00",
        bytes([3]) + msgspec.msgpack.encode([[1] * 10]),
        bytes([3]) + msgspec.msgpack.encode([1]),
        bytes([1]) + marshal.dumps([(1,) * 10]),
        bytes([4]) + msgspec.msgpack.encode([[1] * 10]),
        bytes([4]) + msgspec.msgpack.encode(floats),  # units are ints
        bytes([5]) + marshal.dumps([(1,) * 10]),
        bytes([9]) + new[1:],
    ]
    for bad in damaged:
        with pytest.raises(StorageUnavailableError):
            outbox_batches.unpack(bad)


# -- batches of earlier versions: plain quantities, converted to units on delivery ----------------

#: the metrics' precisions the converters below know
PRECISION = {"api_calls": 0, "cents": 2, "tokens": 6}


def to_units_by_decimal(rows: list[RecordRow]) -> list[RecordRow]:
    """A converter written here: each plain quantity (a float by its shortest repr, or an
    int) in units of its metric's precision, rounded half to even; beyond 64 bits refused."""
    out = []
    for row in rows:
        text = repr(row.quantity) if isinstance(row.quantity, float) else str(row.quantity)
        units = (
            Decimal(text)
            .scaleb(PRECISION[row.metric_key])
            .quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
        )
        if abs(units) > 2**63 - 1:
            raise ValidationError("quantity", f"{text} is beyond 64 bits in units")
        out.append(row._replace(quantity=int(units)))
    return out


LEGACY_VALUES = [("tokens", 0.1, 100_000), ("tokens", -0.000001, -1), ("tokens", 1.5, 1_500_000),
                 ("cents", 19.99, 1999), ("cents", 0.125, 12), ("cents", 2.675, 268),
                 ("api_calls", 1.0, 1), ("api_calls", 3, 3), ("tokens", 2, 2_000_000),
                 ("tokens", 9223372036854.775, 9223372036854775000)]  # fmt: skip


def _legacy_rows(prefix: str) -> list[RecordRow]:
    return [RecordRow(f"{prefix}-{i}", metric, "org", "o1", None, value, i, None, None)
            for i, (metric, value, _) in enumerate(LEGACY_VALUES)]  # fmt: skip


def _legacy_file(path: Path, blobs: list[bytes]) -> None:
    """An outbox file as an earlier version left it, holding ``blobs``."""
    conn = sqlite3.connect(path)
    conn.executescript(durable._DDL)
    for blob in blobs:
        n = len(outbox_batches.unpack(blob))
        conn.execute("INSERT INTO outbox_batches (n, rows, created_at) VALUES (?, ?, 0)", (n, blob))
    conn.commit()
    conn.close()


class Recorder:
    """A store keeping every row delivered, by call of ``deliver`` or as a stream; ``down``
    fails every call."""

    def __init__(self) -> None:
        self.rows: list[RecordRow] = []
        self.down = False
        self.lock = threading.Lock()

    def __call__(self, batch: list[RecordRow]) -> None:
        with self.lock:
            if self.down:
                raise StorageUnavailableError("server down")
            self.rows += batch

    def stream(self, parts: Iterator[list[RecordRow]], stored: Callable[[int], None]) -> None:
        done = 0
        for part in parts:
            self(part)
            done += len(part)
            stored(done)

    def units(self) -> dict[str, int]:
        with self.lock:
            assert all(type(row.quantity) is int for row in self.rows)
            return {row.id: row.quantity for row in self.rows}


def _recording_box(path: Path, store: Recorder, streamed: bool = False, **options: Any) -> Outbox:
    if streamed:
        options["stream"] = store.stream
    options = {"backoff_base": 0.05, "backoff_max": 0.2, **options}
    return Outbox(str(path), store, **options)


@pytest.mark.parametrize("streamed", [False, True])
def test_batches_of_earlier_versions_are_delivered_in_units(tmp_path: Path, streamed: bool) -> None:
    """Batches an earlier version queued (formats 1, 2 and 3, plain float or int quantities)
    are delivered with their quantities in units of each metric's precision, by the hook the
    outbox is given (checked against decimal's own arithmetic), with new batches after them;
    the hook never sees a new batch."""
    legacy = {"f1": _format_1, "f2": _format_2, "f3": _format_3}
    _legacy_file(tmp_path / "o.db", [make(_legacy_rows(name)) for name, make in legacy.items()])
    seen: list[RecordRow] = []

    def upgrade(rows: list[RecordRow]) -> list[RecordRow]:
        seen.extend(rows)
        return to_units_by_decimal(rows)

    store = Recorder()
    box = _recording_box(tmp_path / "o.db", store, streamed, upgrade=upgrade)
    box.put(rows("new", 5))
    assert box.drain(10)
    expected = {f"{name}-{i}": units for name in legacy
                for i, (_, _, units) in enumerate(LEGACY_VALUES)}  # fmt: skip
    expected |= {f"new-{i}": 1_000_000 for i in range(5)}
    assert store.units() == expected and len(store.rows) == len(expected)
    assert len(seen) == 3 * len(LEGACY_VALUES) and not any(r.id.startswith("new") for r in seen)
    assert box.close().pending == 0


def test_a_legacy_batch_waits_for_a_hook_and_is_never_delivered_as_it_is(tmp_path: Path) -> None:
    """Without an upgrade hook, or with one that fails or gives back no units, a legacy batch
    stays in the file (deferred, the reason in the status) while new batches go; an outbox
    opened with a working hook delivers it in units."""
    path = tmp_path / "o.db"
    _legacy_file(path, [_format_3(_legacy_rows("old"))])
    store = Recorder()
    calls: list[int] = []

    def failing(rows: list[RecordRow]) -> list[RecordRow]:
        calls.append(len(rows))
        raise StorageUnavailableError("catalog unreachable")

    def floats(rows: list[RecordRow]) -> list[RecordRow]:
        calls.append(len(rows))
        return [row._replace(quantity=float(row.quantity)) for row in rows]

    for hook in (None, failing, floats, lambda rows: rows[1:]):
        box = _recording_box(path, store, upgrade=hook, backoff_base=30, backoff_max=30)
        box.put(rows(f"new{len(calls)}", 3))
        wait_until(lambda: box.status().pending == len(LEGACY_VALUES))  # noqa: B023
        status = box.status()
        assert status.deferred == 1 and status.batches == 1, status
        assert status.last_error is not None
        box.close(0.5)
        assert not any(row.id.startswith("old") for row in store.rows)
    assert calls == [len(LEGACY_VALUES)] * 2
    box = _recording_box(path, store, upgrade=to_units_by_decimal)
    assert box.drain(10)
    assert {k: v for k, v in store.units().items() if k.startswith("old")} == {
        f"old-{i}": units for i, (_, _, units) in enumerate(LEGACY_VALUES)
    }
    assert len(store.rows) == len(LEGACY_VALUES) + 4 * 3
    assert box.close().pending == 0


def test_a_legacy_row_the_hook_refuses_is_quarantined_as_it_was_queued(tmp_path: Path) -> None:
    """A row the hook cannot convert (a value beyond 64 bits in units) is found by halving and
    quarantined with its plain quantity (never converted wrongly, never lost); the rest of
    its batch is delivered; ``retry`` converts it again, here after its metric's precision
    was lowered."""
    path = tmp_path / "o.db"
    big = RecordRow("big", "tokens", "org", "o1", None, 1e15, 7, None, None)
    old = _legacy_rows("old")
    _legacy_file(path, [_format_1([*old[:3], big, *old[3:]])])
    store = Recorder()
    box = _recording_box(path, store, upgrade=to_units_by_decimal)
    assert box.drain(10)
    assert set(store.units()) == {row.id for row in old}
    (kept,) = box.quarantined()
    assert kept.legacy and kept.row == big and type(kept.row.quantity) is float
    assert "64 bits" in kept.error
    PRECISION["tokens"] = 2
    try:
        assert box.retry() == 1
        assert box.drain(10)
    finally:
        PRECISION["tokens"] = 6
    assert store.units()["big"] == 10**17
    assert box.quarantined() == []
    assert box.close().pending == 0


def test_new_records_quarantined_and_retried_stay_units(tmp_path: Path) -> None:
    """A record the store rejects is quarantined in the new format and, retried, delivered as
    it was (units, no conversion)."""
    store = Store()
    store.poison.add("p-1")
    box = Outbox(str(tmp_path / "o.db"), store, upgrade=lambda rows: pytest.fail("converted"))
    box.put(rows("p", 3))
    assert box.drain(10)
    (kept,) = box.quarantined()
    assert not kept.legacy and kept.row.quantity == 1_000_000
    store.poison.clear()
    assert box.retry() == 1 and box.drain(10)
    assert store.ids == {"p-0": 1, "p-1": 1, "p-2": 1}
    box.close()


def test_a_meter_delivers_the_legacy_batches_of_its_outbox_in_each_metrics_units(
    tmp_path: Path,
) -> None:
    """End to end: an outbox file an earlier version left (float quantities, formats 3 and
    1) opened by a Meter on the embedded store: each record is stored with its metric's
    precision, read back as the exact decimal of the float's shortest repr."""
    store_url = f"sqlite:///{tmp_path / 'u.db'}"
    with tsmeter.connect(store_url) as meter:
        meter.define_metric("cents", aggregation_type="SUM", precision=2)
        meter.define_metric("tokens", aggregation_type="SUM")
    values = {"cents": [19.99, 0.1, -0.01, 1234567.89], "tokens": [0.1, 0.000001, 2.5, 3]}
    legacy = [RecordRow(f"{metric}-{i}", metric, "org", "o1", None, value,
                        1_767_225_600_000_000_000 + i, None, None)
              for metric, given in values.items() for i, value in enumerate(given)]  # fmt: skip
    _legacy_file(tmp_path / "o.db", [_format_3(legacy[:4]), _format_1(legacy[4:])])
    with tsmeter.connect(store_url, outbox=str(tmp_path / "o.db")) as meter:
        assert meter.outbox is not None and meter.outbox.drain(10)
        for metric, given in values.items():
            got = {record.id: record.quantity for record in meter.iter_usage(metric)}
            assert got == {f"{metric}-{i}": Decimal(repr(value)) for i, value in enumerate(given)}
            places = 2 if metric == "cents" else 6  # the metric's precision
            assert {q.as_tuple().exponent for q in got.values()} == {-places}
