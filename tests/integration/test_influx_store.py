"""The InfluxDB v1 store against a real influxd: no collapse, exactly once, server errors."""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import tsmeter
from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb import placement
from tsmeter.adapters.influxdb.client import InfluxV1Config, PartialWriteError, series_rows
from tsmeter.adapters.influxdb.lineprotocol import decode_tag
from tsmeter.adapters.influxdb.rollup import watermark
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.adapters.influxdb.v1 import V1Transport
from tsmeter.adapters.sqlite.dedupe import SQLiteDedupe
from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.errors import StorageUnavailableError
from tsmeter.ports import EventRow, SummaryQuery

T = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z, a whole second
DAY = 86_400_000_000_000


def url(server: InfluxServer, db: str, **options: str) -> str:
    """The store URL of ``db`` on ``server``."""
    query = "&".join(f"{k}={v}" for k, v in {"writer": "w1", **options}.items())
    return f"influxdb://127.0.0.1:{server.port}/{db}?{query}"


def rows(prefix: str, n: int, ts: int = T, subject: str = "o1") -> list[RecordRow]:
    """``n`` records of one series, all at ``ts``."""
    return [
        RecordRow(f"{prefix}-{i:05d}", "api_calls", "org", subject, None, 1_000_000, ts, None, None)
        for i in range(n)
    ]


def points(server: InfluxServer, db: str) -> int:
    """How many raw points the database holds."""
    (result,) = server.query('SELECT count("units") FROM "usage"', db=db)["results"]
    found = series_rows(result)
    return int(found[0][1]["count"]) if found else 0


def small_windows(monkeypatch: pytest.MonkeyPatch, first: int, read: int, write: int) -> None:
    """Make the store's first window, read windows and write requests this small."""
    monkeypatch.setattr(InfluxStore, "FIRST_WINDOW", first)
    monkeypatch.setattr(InfluxStore, "READ_CHUNK", read)
    monkeypatch.setattr(InfluxStore, "WRITE_CHUNK", write)


def slow_writes(store: InfluxStore, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make each of the store's write requests take ``seconds`` more."""
    write = store.transport.client.write

    def slow(body: bytes) -> None:
        time.sleep(seconds)
        write(body)

    monkeypatch.setattr(store.transport.client, "write", slow)


def _import(location: str, ledger: str, prefix: str, start: Any) -> None:
    """Child process: append 10,000 records with one timestamp in batches of 1,000."""
    store = InfluxStore.from_url(location, ledger=ledger)
    try:
        start.wait(timeout=60)
        batch = rows(prefix, 10_000)
        for i in range(0, len(batch), 1_000):
            store.append(batch[i : i + 1_000], 0)
    finally:
        store.close()


def test_identical_timestamps_from_two_processes_never_collapse(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """Two processes each importing 10,000 records of one series at the same instant leave
    20,000 points, and the monthly summary counts 20,000."""
    server, db = influx_db
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    ledger = str(tmp_path / "state.db")
    workers = [
        ctx.Process(target=_import, args=(url(server, db), ledger, prefix, start))
        for prefix in ("a", "b")
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=180)
        if w.is_alive():
            w.kill()
    assert [w.exitcode for w in workers] == [0, 0]
    assert points(server, db) == 20_000
    store = InfluxStore.from_url(url(server, db))
    try:
        (summary,) = store.summaries(
            SummaryQuery("api_calls", PeriodType.MONTHLY, T, T + DAY), Calendar()
        )
        assert (summary.record_count, summary.sum, summary.last_ts) == (20_000, 20_000 * 10**6, T)
        assert summary.last_value == 10**6
    finally:
        store.close()


def test_a_retried_batch_lands_on_its_own_points(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """Re-sending records, from this host or from another with no ledger, adds no point."""
    server, db = influx_db
    batch = rows("r", 500) + rows("s", 500, ts=T + 1_000)
    first = InfluxStore.from_url(url(server, db), ledger=str(tmp_path / "a.db"))
    other = InfluxStore.from_url(url(server, db, writer="w2"), ledger=str(tmp_path / "b.db"))
    try:
        assert first.append(batch, 0) == 1_000
        assert first.append(batch, 0) == 0
        assert other.append(list(reversed(batch)), 0) == 0  # another host, same records
        # the write path read only ids and slots; the record is read where it was found
        # (not by a scan of every record id, which is slow on a large database)
        queries: list[str] = []
        query = other.transport.client.query
        other.transport.client.query = lambda q, *a, **k: queries.append(q) or query(q, *a, **k)  # type: ignore[method-assign]
        assert other.get_record(batch[3].id) == batch[3]
        assert len(queries) == 1 and '"rid" =' not in queries[0]
        assert other.get_record("never-sent") is None
        moved = batch[0]._replace(ts=T + 5 * DAY, subject_id="elsewhere")
        assert first.append([moved], 0) == 0  # same id, other time: the ledger knows it
    finally:
        first.close()
        other.close()
    assert points(server, db) == 1_000


def test_a_batch_written_in_several_requests_is_exactly_once(
    influx_db: tuple[InfluxServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch larger than one write request keeps every point apart across the requests, and
    a retry spanning old and new ids adds only the new ones."""
    server, db = influx_db
    monkeypatch.setattr(InfluxStore, "WRITE_CHUNK", 700)
    store = InfluxStore.from_url(url(server, db))
    try:
        batch = rows("p", 5_000)  # one timestamp: every chunk collides with the ones before
        assert store.append(batch[:3_000], 0) == 3_000
        assert store.append(batch, 0) == 2_000
        assert store.append(list(reversed(batch)), 0) == 0
    finally:
        store.close()
    assert points(server, db) == 5_000
    (result,) = server.query('SELECT count(distinct("rid")) FROM "usage"', db=db)["results"]
    assert series_rows(result)[0][1]["count"] == 5_000


@pytest.mark.parametrize("source", ["list", "stream"])
@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
def test_read_windows_keep_points_apart_and_forget_only_unreachable_slots(
    influx_db: tuple[InfluxServer, str],
    monkeypatch: pytest.MonkeyPatch,
    order: str,
    source: str,
) -> None:
    """Existence reads cover windows growing from FIRST_WINDOW to READ_CHUNK records and
    slots before the remaining windows are forgotten: records colliding within and across
    windows (same series, same nanosecond or microsecond, hundreds per instant) all land,
    once each, also when ids repeat in the call (in its first window or later). A stream
    of parts (cut across by the windows) does not know its later rows: a window reaching
    back before the slots forgotten waits for the writes in flight and reads again."""
    server, db = influx_db
    small_windows(monkeypatch, 4, 70, 30)
    at = [T + (i // 300) * 1_000 + (i % 3) for i in range(1_500)]  # 5 µs, 3 ns each
    batch = [
        RecordRow(f"w{i}", "api_calls", "org", f"o{i % 2}", None, 1_000_000, ts, None, None)
        for i, ts in enumerate(at)
    ]
    if order == "descending":
        batch.reverse()
    elif order == "shuffled":
        batch = batch[::7] + [r for i, r in enumerate(batch) if i % 7]
    if order == "descending":  # an id repeated in the first window
        batch = [batch[1], *batch]
    elif order == "ascending":  # ids repeated later in the call
        batch = [*batch, batch[0], batch[700]]
    store = InfluxStore.from_url(url(server, db))
    reads: list[int] = []
    lookup = store._lookup
    monkeypatch.setattr(
        store, "_lookup", lambda rows, cover: reads.append(len(rows)) or lookup(rows, cover)
    )
    try:
        if source == "list":
            assert store.append(batch, 0) == 1_500
        else:
            parts = (batch[i : i + 37] for i in range(0, len(batch), 37))
            assert store.append_stream(parts) == 1_500
        assert points(server, db) == 1_500  # none merged with another
        if source == "list":  # every row known from the start: no window is read again
            assert len(reads) == sum(1 for _ in placement.Windows([batch], 4, 70))
        assert store.append(batch[::-1], 0) == 0
    finally:
        store.close()
    assert points(server, db) == 1_500
    (result,) = server.query('SELECT count(distinct("rid")) FROM "usage"', db=db)["results"]
    assert series_rows(result)[0][1]["count"] == 1_500


def test_a_stream_reaching_back_past_forgotten_slots_reads_again(
    influx_db: tuple[InfluxServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream's later part with the times of an early one, while the early part's writes
    are still in flight (slow writes): its window waits for them and reads again, so its
    rows move off the early points instead of merging with them."""
    server, db = influx_db
    small_windows(monkeypatch, 50, 50, 50)
    monkeypatch.setattr(InfluxStore, "WRITERS", 8)
    monkeypatch.setattr(InfluxStore, "KEPT_SLOTS", 0)  # forget slots as the call goes
    store = InfluxStore.from_url(url(server, db))
    slow_writes(store, monkeypatch, 0.3)
    reads: list[int] = []
    lookup = store._lookup
    monkeypatch.setattr(
        store, "_lookup", lambda rows, cover: reads.append(len(rows)) or lookup(rows, cover)
    )

    def part(tag: str, micro: int) -> list[RecordRow]:
        return [RecordRow(f"{tag}{i}", "api_calls", "org", "o", None, 1_000_000, T + micro * 1_000,
                          None, None) for i in range(50)]  # fmt: skip

    parts = [part("a", 0), part("b", 5), part("c", 9), part("d", 0)]  # d: back to a's µs
    try:
        assert store.append_stream(iter(parts)) == 200
    finally:
        store.close()
    assert len(reads) == 5  # four windows, the last one read twice
    assert points(server, db) == 200


def test_a_stream_reports_rows_stored_only_once_the_server_has_them(
    influx_db: tuple[InfluxServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stored(n)`` (the outbox removes batches on it) comes only when the first ``n`` rows
    of the stream are on the server, also with slow writes in flight; it grows to the whole
    stream, duplicates included."""
    server, db = influx_db
    small_windows(monkeypatch, 10, 40, 15)
    store = InfluxStore.from_url(url(server, db))
    slow_writes(store, monkeypatch, 0.05)
    batch = rows("s", 200)
    reported: list[tuple[int, int]] = []

    def stored(n: int) -> None:
        reported.append((n, points(server, db)))

    parts = [batch[i : i + 30] for i in range(0, 200, 30)] + [batch[:30]]  # 30 again
    try:
        assert store.append_stream(iter(parts), stored) == 200
    finally:
        store.close()
    assert [n for n, _ in reported] == sorted({n for n, _ in reported})  # growing
    assert reported[-1][0] == 230 and len(reported) > 3
    assert all(on_server >= min(n, 200) for n, on_server in reported), reported


@pytest.mark.parametrize("ledger", ["memory", "file"])
@pytest.mark.parametrize(("delay", "ahead"), [(0.0, 1), (0.04, 1), (0.0, 2), (0.04, 2)])
def test_ids_repeated_in_later_windows_count_once_whenever_their_writes_land(
    influx_db: tuple[InfluxServer, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    delay: float,
    ahead: int,
    ledger: str,
) -> None:
    """A stream whose windows repeat ids of the windows before them (at other times, so a
    second point would not merge with the first): each id lands once, whether the first
    write is still in flight (slow writes) or landed long before. A window's ids leave the
    call's own set only once later reads find them: in the ledger when the reads began
    (with two windows read ahead and one request at a time, the window two back has been
    answered, but it was entered after this window's reads began) and on the server. The
    ledger in memory (one connection) or in a file (lookups on a connection of their own)."""
    server, db = influx_db
    small_windows(monkeypatch, 10, 10, 5)
    monkeypatch.setattr(InfluxStore, "READ_AHEAD", ahead)
    if ahead > 1:
        monkeypatch.setattr(InfluxStore, "WRITERS", 1)
        monkeypatch.setattr(InfluxStore, "QUEUED", 0)
    path = str(tmp_path / "ledger.db") if ledger == "file" else ":memory:"
    store = InfluxStore.from_url(url(server, db), ledger=path)
    if delay:
        slow_writes(store, monkeypatch, delay)

    def row(rid: str, micro: int) -> RecordRow:
        return RecordRow(rid, "api_calls", "org", "o", None, 10**6, T + micro * 1_000, None, None)

    parts = []
    for j in range(14):  # 5 new ids per window, then 2 of the window before, 2 of the one
        # before that and 1 of the first, at other times
        again = [f"n{max(j - 1, 0)}-0", f"n{max(j - 1, 0)}-1", f"n{max(j - 2, 0)}-2",
                 f"n{max(j - 2, 0)}-3", "n0-4"]  # fmt: skip
        parts.append([row(f"n{j}-{i}", j * 100 + i) for i in range(5)]
                     + [row(rid, j * 100 + 50 + i) for i, rid in enumerate(again)])  # fmt: skip
    try:
        assert store.append_stream(iter(parts)) == 70
    finally:
        store.close()
    assert points(server, db) == 70
    (result,) = server.query('SELECT count(distinct("rid")) FROM "usage"', db=db)["results"]
    assert series_rows(result)[0][1]["count"] == 70


def test_record_batch_says_how_many_were_stored_when_a_write_fails(
    influx_db: tuple[InfluxServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a write request fails mid-batch, ``record_batch`` names how many records are
    stored (exactly what the server holds: the store reads it back), nothing is sent after
    the failure, and the retry of the whole batch adds exactly the rest: 200 records at one
    timestamp."""
    server, db = influx_db
    small_windows(monkeypatch, 10, 40, 15)
    at = datetime.fromtimestamp(T / 1e9, UTC)
    batch = [{"id": f"b-{i:03d}", "metricKey": "api_calls", "subjectType": "org",
              "subjectId": "o1", "timestamp": at} for i in range(200)]  # fmt: skip
    location = f"{url(server, db, retries='0')}&state={tmp_path / 'state.db'}"
    with tsmeter.connect(location, outbox=False) as meter:  # the error of a direct write
        meter.define_metric("api_calls", aggregation_type="COUNT")
        client = meter.store.transport.client  # type: ignore[attr-defined]
        write, calls = client.write, []

        def failing(body: bytes) -> None:
            calls.append(len(body))
            if len(calls) == 6:
                raise StorageUnavailableError("InfluxDB went away")
            time.sleep(0.02)
            write(body)

        monkeypatch.setattr(client, "write", failing)
        with pytest.raises(StorageUnavailableError, match="InfluxDB went away") as raised:
            meter.record_batch(batch)
        found = re.search(r"\((\d+) of 200 records are stored;", str(raised.value))
        assert found is not None, raised.value
        held = points(server, db)
        time.sleep(0.3)
        assert (len(calls), points(server, db)) == (6, held)  # nothing sent after the failure
        assert 10 <= int(found.group(1)) == held < 200
        assert raised.value.records_stored == held
        monkeypatch.setattr(client, "write", write)
        result = meter.record_batch(batch)
        assert (result.recorded, result.duplicates) == (200 - held, held)
    assert points(server, db) == 200


def test_a_chunk_whose_ledger_entry_failed_is_never_sent(
    influx_db: tuple[InfluxServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk is sent only once its ids are in the ledger: when the fourth entry fails,
    neither that chunk nor a later one is sent, the call raises the ledger's error, and the
    retry adds the rest."""
    server, db = influx_db
    small_windows(monkeypatch, 10, 40, 15)
    at = datetime.fromtimestamp(T / 1e9, UTC)
    batch = [{"id": f"l-{i:03d}", "metricKey": "api_calls", "subjectType": "org",
              "subjectId": "o1", "timestamp": at} for i in range(200)]  # fmt: skip
    location = f"{url(server, db)}&state={tmp_path / 'state.db'}"
    with tsmeter.connect(location, outbox=False) as meter:  # the error of a direct write
        meter.define_metric("api_calls", aggregation_type="COUNT")
        store = meter.store
        assert isinstance(store, InfluxStore)
        claim, write, entered, sent = store.dedupe.claim, store.transport.client.write, [], []

        def failing_claim(rows: list[RecordRow], writer: str) -> dict[str, RecordRow]:
            entered.append(len(rows))
            if len(entered) == 4:
                raise StorageUnavailableError("the id ledger failed: disk full")
            return claim(rows, writer)

        def counted_write(body: bytes) -> None:
            sent.append(body)
            write(body)

        monkeypatch.setattr(store.dedupe, "claim", failing_claim)
        monkeypatch.setattr(store.transport.client, "write", counted_write)
        with pytest.raises(StorageUnavailableError, match="disk full"):
            meter.record_batch(batch)
        time.sleep(0.3)
        held = points(server, db)
        assert len(sent) <= 3 and held <= 3 * 15, (len(sent), held)
        monkeypatch.setattr(store.dedupe, "claim", claim)
        result = meter.record_batch(batch)
        assert (result.recorded, result.duplicates) == (200 - held, held)
    assert points(server, db) == 200


def test_a_failed_write_is_redone_on_retry(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """Ids the ledger saw but the server never stored are written by the next attempt."""
    server, db = influx_db
    ledger = str(tmp_path / "state.db")
    broken = InfluxStore.from_url(url(server, "missing_db", retries="0"), ledger=ledger)
    store = InfluxStore.from_url(url(server, db), ledger=ledger)
    try:
        batch = rows("f", 10)
        with pytest.raises(StorageUnavailableError, match="database not found"):
            broken.append(batch, 0)
        store.dedupe.add(batch)  # as if the failed write had gone to this database
        assert store.append(batch, 0) == 10
    finally:
        broken.close()
        store.close()
    assert points(server, db) == 10


def test_points_beyond_the_retention_policy_raise_a_partial_write(
    influx_db: tuple[InfluxServer, str],
) -> None:
    """A batch with points older than the retention policy reports the server's partial write,
    and the points inside the policy are stored."""
    server, db = influx_db
    server.query(f'CREATE RETENTION POLICY "short" ON "{db}" DURATION 1h REPLICATION 1')
    store = InfluxStore.from_url(url(server, db, rp="short"))
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000
    try:
        with pytest.raises(PartialWriteError, match="partial write") as raised:
            store.append(rows("old", 3, ts=now - 3 * DAY) + rows("new", 2, ts=now), 0)
        assert raised.value.dropped is not None and raised.value.dropped >= 3  # and their marks
    finally:
        store.close()
    (result,) = server.query('SELECT count("units") FROM "short"."usage"', db=db)["results"]
    assert series_rows(result)[0][1]["count"] == 2


def test_unreachable_server_is_storage_unavailable(tmp_path: Path) -> None:
    """A closed port gives StorageUnavailableError naming the server, after the retries."""
    config = InfluxV1Config.from_url("influxdb://127.0.0.1:9/db?retries=1&timeout=2")
    store = InfluxStore(V1Transport(config), SQLiteDedupe(":memory:", "http://127.0.0.1:9/db"))
    try:
        with pytest.raises(StorageUnavailableError, match=r"127\.0\.0\.1:9 failed after 2"):
            store.append(rows("x", 1), 0)
    finally:
        store.close()


def test_reachable_tells_a_server_that_answers_from_a_closed_port(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """The outbox's probe: True while influxd answers /ping; False at once for a closed port
    (no retries: it only decides whether to hold batches in memory). A meter with an outbox
    on the store is given that probe."""
    server, db = influx_db
    up = InfluxStore.from_url(url(server, db))
    down = InfluxStore.from_url("influxdb://127.0.0.1:9/db")
    try:
        assert up.reachable() is True
        t0 = time.monotonic()
        assert down.reachable() is False
        assert time.monotonic() - t0 < 1.5
    finally:
        up.close()
        down.close()
    meter = tsmeter.connect(url(server, db, state=str(tmp_path / "s.db")),
                            outbox=str(tmp_path / "o.db"))  # fmt: skip
    try:
        assert meter.outbox is not None
        assert meter.outbox._reachable == meter.store.reachable
    finally:
        meter.close()


def test_idle_incremental_runs_keep_their_watermark(influx_db: tuple[InfluxServer, str]) -> None:
    """Runs with nothing new leave the change-log watermark where it was, even when the log
    entries it was read from are gone (a purge), and a later record moves it forward."""
    server, db = influx_db
    store = InfluxStore.from_url(url(server, db))
    cal = Calendar()
    try:
        store.append(rows("w", 3), 0)
        store.rollup(PeriodType.DAILY, cal)
        first = watermark(store.transport.client, PeriodType.DAILY, cal)
        store.purge_metric("api_calls", None)  # takes the metric's change-log entries along
        for _ in range(3):
            store.rollup(PeriodType.DAILY, cal)
            assert watermark(store.transport.client, PeriodType.DAILY, cal) == first
        store.append(rows("x", 1), 0)
        store.rollup(PeriodType.DAILY, cal)
        later = watermark(store.transport.client, PeriodType.DAILY, cal)
        assert first is not None and later is not None and later > first
    finally:
        store.close()


def test_threshold_events_write_their_window(influx_db: tuple[InfluxServer, str]) -> None:
    """A threshold event also writes its window to threshold_windows (time = window start,
    end_ms = window end in ms, a text line), hostile keys and subjects as data; an event of
    another kind, or one whose data holds no readable window, writes the event alone."""
    server, db = influx_db
    metric, subject = 'a,b=c \\ "d" $x', "o'1 =,\\"
    window = {"thresholdId": "t 1", "level": "EXCEEDED", "actualValue": "11",
              "thresholdValue": "10", "periodStart": "2026-01-01T00:00:00Z",
              "periodEnd": "2026-02-01T00:00:00+00:00"}  # fmt: skip
    events = [
        EventRow(T + 5 * DAY, "threshold.exceeded", metric, "org", subject, "o2",
                 json.dumps(window)),
        EventRow(T, "threshold.exceeded", "m", "org", "o1", None, "not json"),
        EventRow(T, "threshold.resolved", "m", "org", "o1", None, '{"periodStart": "soon"}'),
        EventRow(T, "usage.note", "m", "org", "o1", None, json.dumps(window)),
    ]  # fmt: skip
    store = InfluxStore.from_url(url(server, db))
    try:
        store.append_events(events)
        assert len(store.list_events()) == 4
    finally:
        store.close()
    (result,) = server.query('SELECT * FROM "threshold_windows"', db=db)["results"]
    ((tags, values),) = series_rows(result)
    merged = {**{k: v for k, v in values.items() if v is not None}, **tags}
    assert values["time"] == T and values["end_ms"] == (T + 31 * DAY) // 1_000_000
    assert values["text"] == f"{metric} exceeded for org {subject}: 11 of 10"
    assert decode_tag(merged["metric"]) == metric
    assert decode_tag(merged["subject_id"]) == subject
    assert (merged["event"], merged["threshold_id"], merged["level"], merged["org"]) == (
        "threshold.exceeded", "t 1", "EXCEEDED", "o2")  # fmt: skip
