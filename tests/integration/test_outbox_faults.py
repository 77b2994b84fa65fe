"""The durable outbox under faults, with real processes and a real influxd: a 30 s outage,
a recording process killed with SIGKILL, 5xx answers, answers held past the client's
timeout, a partial write, and bad input. Every wait is bounded.

Counts are read back with InfluxQL: ``count``, ``sum`` and ``count(distinct(rid))`` of the
raw points, so a lost record and a record counted twice both show.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import tsmeter
from tests.fault_proxy import FaultProxy
from tests.influx_server import InfluxServer
from tests.integration.outbox_writer import BATCH, batch
from tsmeter.cli.main import cli
from tsmeter.cli.outbox import outbox as outbox_group

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z: where outbox_writer's batches start
DAY = 86_400_000_000_000
# the quantities of one batch (0.1, 0.2, 0.3 as floats; summed exactly as decimals)
BATCH_SUM = sum(Decimal(1 + i % 3) / 10 for i in range(BATCH))
#: the issue's outage; the test records 100,000 records while the server is down for it
OUTAGE_SECONDS = 30.0
#: faster retries than the defaults (0.5 s doubling to 30 s) keep the waits after a fault
#: short; the code paths are the same
FAST_RETRIES = {"backoff_base": 0.2, "backoff_max": 5.0}


def url(port: int, db: str, state: Path, **options: str) -> str:
    """An influxdb:// store URL on 127.0.0.1 (writer w1, catalog and id ledger in ``state``)."""
    query = "&".join(
        f"{k}={v}" for k, v in {"writer": "w1", "state": str(state), **options}.items()
    )
    return f"influxdb://127.0.0.1:{port}/{db}?{query}"


def totals(
    server: InfluxServer, db: str, lo: int = T0, hi: int = T0 + DAY
) -> tuple[int, Decimal, int]:
    """``(points, sum of quantity, distinct record ids)`` of raw points in ``[lo, hi)``: the
    sum of the integer ``units`` field (6 places, the metric's default precision) as an exact
    Decimal."""
    where = "WHERE time >= $lo AND time < $hi"
    params = {"lo": lo, "hi": hi}
    found = server.series(f'SELECT count("units") AS n, sum("units") AS s FROM usage {where}',
                          db, params)  # fmt: skip
    ids = server.series(f'SELECT count(distinct("rid")) AS d FROM usage {where}', db, params)
    if not found:
        return 0, Decimal(0), 0
    units = found[0]["s"]
    assert type(units) is int, units  # an integer field sums to an integer
    return int(found[0]["n"]), Decimal(units).scaleb(-6), int(ids[0]["d"])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` every 50 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def own_influxd(influxd: InfluxServer) -> Iterator[InfluxServer]:
    """An influxd of this test's own (the session's server is never stopped)."""
    server = InfluxServer(influxd.binary, startup_timeout=60)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tsmeter_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run ``tsmeter ...`` in-process, with the outbox group registered."""
    if "outbox" not in cli.commands:
        monkeypatch.setitem(cli.commands, "outbox", outbox_group)
    monkeypatch.delenv("TSMETER_OUTBOX", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args))


# -- outage ------------------------------------------------------------------------------------
def test_a_30_s_outage_while_recording_100k_records_loses_and_doubles_nothing(
    own_influxd: InfluxServer, tmp_path: Path
) -> None:
    """influxd stops for 30 s while 100 batches of 1,000 records are recorded (about 35 s at a
    steady pace); recording never waits for the server, and after the restart every record
    is stored exactly once."""
    server = own_influxd
    server.create_database("metering")
    store = url(server.port, "metering", tmp_path / "state.db")
    meter = tsmeter.connect(store, outbox=str(tmp_path / "outbox.db"), outbox_options=FAST_RETRIES)
    meter.define_metric("api_calls", aggregation_type="SUM")
    assert meter.outbox is not None
    acked: list[float] = []  # seconds each record_batch took
    failures: list[BaseException] = []

    def record() -> None:
        started = time.monotonic()
        try:
            for number in range(100):
                t = time.monotonic()
                meter.record_batch(batch(number))
                acked.append(time.monotonic() - t)
                time.sleep(max(0.0, started + 0.35 * (number + 1) - time.monotonic()))
        except BaseException as exc:
            failures.append(exc)

    recorder = threading.Thread(target=record)
    recorder.start()
    try:
        wait_until(lambda: len(acked) >= 10, 30, "the first 10 batches")
        wait_until(lambda: meter.outbox is not None and meter.outbox.status().delivered > 0, 30,
                   "a first delivery")  # fmt: skip
        server.halt()
        down = time.monotonic()
        wait_until(lambda: len(acked) >= 40, 30, "batches recorded during the outage")
        during = meter.outbox.status()
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down)))
        server.start()
        recorder.join(timeout=120)
        assert not recorder.is_alive() and failures == []
        assert meter.flush(timeout=90)
        after = meter.outbox.status()
    finally:
        recorder.join(timeout=120)
        meter.close()
    assert during.pending > 0 and during.last_error is not None
    assert (after.pending, after.quarantined, after.delivered) == (0, 0, 100_000)
    assert max(acked) < 2.0  # the outbox took every batch at once, server or not
    assert totals(server, "metering") == (100_000, 100 * BATCH_SUM, 100_000)


# -- kill -9 -----------------------------------------------------------------------------------
def _lines(stream: Any, into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line.strip())
    into.put(None)


def test_records_acknowledged_by_a_killed_process_are_delivered_by_the_next(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """A process records through a slow server and is killed with SIGKILL after acknowledging
    batches as durable; a new process on the same outbox file delivers them: every
    acknowledged record is stored once, nothing else but the one batch in flight."""
    server, db = influx_db
    state, box = tmp_path / "state.db", str(tmp_path / "outbox.db")
    with tsmeter.connect(url(server.port, db, state)) as meter:
        meter.define_metric("api_calls", aggregation_type="SUM")
    proxy = FaultProxy(server.url).start()
    proxy.write_delay = 0.3  # a slow server: deliveries lag behind recording
    lines: queue.Queue[str | None] = queue.Queue()
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.outbox_writer",
         url(proxy.port, db, state), box, "60"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    threading.Thread(target=_lines, args=(writer.stdout, lines), daemon=True).start()
    acked = -1
    try:
        while acked < 20:
            line = lines.get(timeout=60)
            assert line is not None, "the writer exited early"
            acked = int(line)
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(timeout=10) == -signal.SIGKILL
        while (line := lines.get(timeout=10)) is not None:
            acked = int(line)  # printed before the kill landed
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
        proxy.close()
    before = totals(server, db)[0]
    assert before < (acked + 1) * BATCH  # some acknowledged records were not delivered yet
    with tsmeter.connect(url(server.port, db, state), outbox=box) as meter:
        assert meter.flush(timeout=60)
        assert meter.outbox is not None and meter.outbox.status().pending == 0
    points, total, distinct = totals(server, db)
    assert points == distinct  # no record twice
    stored = {row["rid"] for row in server.series("SELECT rid FROM usage", db)}
    acknowledged = {f"k{n:03d}-{i:04d}" for n in range(acked + 1) for i in range(BATCH)}
    assert acknowledged <= stored
    extra = stored - acknowledged  # the batch being committed when the kill came, if any
    assert extra in (set(), {f"k{acked + 1:03d}-{i:04d}" for i in range(BATCH)})
    assert total == (len(stored) // BATCH) * BATCH_SUM


# -- 5xx, hangs, partial writes ----------------------------------------------------------------
def test_500s_and_answers_past_the_timeout_are_retried_and_counted_once(
    influx_db: tuple[InfluxServer, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request fails with 500 for 3 s; then writes are stored but answered 500, then
    stored but answered after the client's 1 s timeout. The outbox retries each time and the
    store's existence check keeps every record single."""
    caplog.set_level(logging.WARNING, logger="tsmeter.outbox")
    server, db = influx_db
    proxy = FaultProxy(server.url, hang_seconds=2.0).start()
    proxy.down_for(3.0)
    proxy.plan.extend(["store-then-500", "store-then-500"])
    store = url(proxy.port, db, tmp_path / "state.db", timeout="1", retries="1")
    try:
        quick = {"backoff_base": 0.2, "backoff_max": 1.0}
        with tsmeter.connect(store, outbox=str(tmp_path / "o.db"), outbox_options=quick) as meter:
            meter.define_metric("api_calls", aggregation_type="SUM")
            for number in range(5):
                meter.record_batch(batch(number))
            wait_until(lambda: not proxy.plan, 30, "the writes answered 500")
            proxy.plan.extend(["store-then-hang", "store-then-hang"])
            for number in range(5, 10):
                meter.record_batch(batch(number))
            assert meter.flush(timeout=60)
            assert meter.outbox is not None
            status = meter.outbox.status()
    finally:
        proxy.close()
    assert (status.pending, status.quarantined, status.delivered) == (0, 0, 10 * BATCH)
    assert not proxy.plan and proxy.actions("500") >= 2 and proxy.actions("store-then-hang") == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "tsmeter.outbox"]
    assert any("HTTP 500" in m for m in warnings)
    # Both stored-then-hung writes timed out on the client (1 s against a 2 s hang). Whether the
    # outbox logs it depends on which requests the two hangs fall on: the store writes on two
    # threads, and a request retried after one hang is answered, so nothing is logged then.
    assert totals(server, db) == (10 * BATCH, 10 * BATCH_SUM, 10 * BATCH)


def test_a_partial_write_quarantines_the_poisoned_record_only(
    influx_db: tuple[InfluxServer, str], tmp_path: Path, tsmeter_cli: Callable[..., Result]
) -> None:
    """A batch with one record influxd refuses (its shard holds ``units`` as a string) gets
    ``400 partial write``: the 1,000 good records are stored once, the bad one is quarantined
    with the server's message, and ``tsmeter outbox`` shows, retries and purges it."""
    server, db = influx_db
    poisoned_at = datetime(2020, 1, 8, 12, tzinfo=UTC)
    response = server.write(db, b'usage,metric=poison units="text" 1578441600000000000\n')
    assert response.status_code == 204  # 2020-01-08T00:00Z: units is a string in that shard
    store, box = url(server.port, db, tmp_path / "state.db"), str(tmp_path / "o.db")
    with tsmeter.connect(store, outbox=box) as meter:
        meter.define_metric("api_calls", aggregation_type="SUM")
        poisoned = {"id": "poisoned-1", "metricKey": "api_calls", "subjectType": "org",
                    "subjectId": "org-1", "quantity": 5.0, "timestamp": poisoned_at}  # fmt: skip
        records = batch(0)
        meter.record_batch([*records[:500], poisoned, *records[500:]])
        assert meter.flush(timeout=60)
        assert meter.outbox is not None
        (quarantined,) = meter.outbox.quarantined()
    assert quarantined.row.id == "poisoned-1"
    assert "partial write: field type conflict" in quarantined.error
    assert totals(server, db) == (BATCH, BATCH_SUM, BATCH)
    assert totals(server, db, lo=0, hi=T0) == (0, 0, 0)

    status = json.loads(tsmeter_cli("--format", "json", "outbox", "--outbox", box, "status").stdout)
    assert (status["pending"], status["quarantined"]) == (0, 1)
    listed = tsmeter_cli("outbox", "--outbox", box, "list-quarantined")
    assert "poisoned-1" in listed.stdout and "field type conflict" in listed.stdout
    again = tsmeter_cli("--store", store, "outbox", "--outbox", box, "retry", "--timeout", "30")
    assert again.exit_code == 1 and "1 record(s) quarantined" in again.stderr
    assert "re-queued 1 quarantined" in again.stdout
    listed = json.loads(tsmeter_cli("--format", "json", "outbox", "--outbox", box,
                                    "list-quarantined").stdout)  # fmt: skip
    assert [item["recordId"] for item in listed] == ["poisoned-1"]  # once, not twice
    purged = tsmeter_cli("outbox", "--outbox", box, "purge", "--yes")
    assert purged.exit_code == 0 and "Purged 1 quarantined record(s)" in purged.stdout
    assert totals(server, db) == (BATCH, BATCH_SUM, BATCH)


# -- bad input ---------------------------------------------------------------------------------
TEN_MB = 10 * 1024 * 1024
GOOD = {"metric_key": "storage_gb", "subject_type": "org", "subject_id": "o1", "quantity": 2.0,
        "timestamp": "2026-01-05T10:00:00Z"}  # fmt: skip
BAD_INPUT = [
    ({"quantity": float("nan")}, "quantity"),
    ({"quantity": float("inf")}, "quantity"),
    ({"quantity": float("-inf")}, "quantity"),
    ({"timestamp": "2026-01-05T10:00:00"}, "timestamp"),
    ({"timestamp": datetime(2026, 1, 5, 10)}, "timestamp"),
    ({"metric_key": "no_such_metric"}, "metricKey"),
    ({"id": ""}, "id"),
    ({"id": "i" * 257}, "id"),
    ({"id": "i" * TEN_MB}, "id"),
    ({"metadata": ["not", "an", "object"]}, "metadata"),
    ({"metadata": "text"}, "metadata"),
    ({"metadata": {"blob": "x" * TEN_MB}}, "metadata"),
]


@pytest.mark.parametrize(("change", "field"), BAD_INPUT, ids=lambda v: repr(v)[:30])
def test_bad_input_is_refused_before_the_outbox(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    """With the outbox on, each bad value is a ValidationError naming its field, from
    record and from record_batch (as records[i].field); nothing of that call is queued, and
    good records before and after go through."""
    with tsmeter.connect(str(tmp_path / "u.db"), outbox=str(tmp_path / "o.db")) as meter:
        meter.define_metric("storage_gb", aggregation_type="SUM")
        assert meter.outbox is not None
        bad = {**GOOD, **change}
        with pytest.raises(tsmeter.ValidationError) as one:
            meter.record(**bad)
        assert one.value.field == field
        good = [{**GOOD, "id": "g1"}, {**GOOD, "id": "g2"}]
        with pytest.raises(tsmeter.ValidationError) as many:
            meter.record_batch([good[0], bad, good[1]])
        assert many.value.field == f"records[1].{field}"
        status = meter.outbox.status()
        assert (status.in_memory, status.pending, status.delivered) == (0, 0, 0)
        assert meter.record_batch(good).queued == 2
        assert meter.flush(10)
        assert sorted(r.id for r in meter.get_usage("storage_gb")) == ["g1", "g2"]


def test_cli_import_reports_each_bad_line_and_queues_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tsmeter_cli: Callable[..., Result]
) -> None:
    """``tsmeter usage import`` through the outbox: NaN, ±Infinity, a naive timestamp, an
    unknown metric, empty and oversized ids and non-object metadata are each reported with
    their line and field, a 10 MB line by its size; the good lines are queued and delivered
    once."""
    store, box = f"sqlite:///{tmp_path / 'u.db'}", str(tmp_path / "o.db")
    assert tsmeter_cli("--store", store, "--create", "metric", "define", "storage_gb",
                       "--aggregation-type", "sum").exit_code == 0  # fmt: skip
    monkeypatch.setenv("TSMETER_OUTBOX", box)
    good = '"metricKey": "storage_gb", "subjectType": "org", "subjectId": "o1"'
    ts = '"timestamp": "2026-01-05T10:00:00Z"'
    lines = [
        f'{{{good}, {ts}, "quantity": 1, "id": "g1"}}',
        f'{{{good}, {ts}, "quantity": NaN}}',
        f'{{{good}, {ts}, "quantity": Infinity}}',
        f'{{{good}, {ts}, "quantity": -Infinity}}',
        f'{{{good}, "timestamp": "2026-01-05T10:00:00", "quantity": 1}}',
        f'{{{good.replace("storage_gb", "nope")}, {ts}, "quantity": 1}}',
        f'{{{good}, {ts}, "quantity": 1, "id": ""}}',
        f'{{{good}, {ts}, "quantity": 1, "id": "{"i" * 257}"}}',
        f'{{{good}, {ts}, "quantity": 1, "metadata": [1]}}',
        f'{{{good}, {ts}, "quantity": 1, "metadata": "text"}}',
        f'{{{good}, {ts}, "quantity": 1, "metadata": {{"blob": "{"x" * TEN_MB}"}}}}',
        f'{{{good}, {ts}, "quantity": 2, "id": "g2"}}',
    ]
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = tsmeter_cli("--store", store, "usage", "import", str(path))
    assert result.exit_code == 1 and "Traceback" not in result.output
    reported = [
        line.split(":")[:2] for line in result.stderr.splitlines() if line.startswith("line")
    ]
    assert reported == [
        ["line 2", " quantity"], ["line 3", " quantity"], ["line 4", " quantity"],
        ["line 5", " timestamp"], ["line 6", " metricKey"], ["line 7", " id"],
        ["line 8", " id"], ["line 9", " metadata"], ["line 10", " metadata"],
        ["line 11", " longer than 1048576 bytes"],
    ]  # fmt: skip
    assert f"{path}: 12 lines = 12 records (2 queued for the store" in result.stdout
    assert result.stderr.strip().endswith("the other 2 are queued for the store")
    got = tsmeter_cli("--store", store, "--format", "json", "usage", "get", "storage_gb")
    assert sorted((r["id"], Decimal(r["quantity"])) for r in json.loads(got.stdout)) == [
        ("g1", Decimal(1)), ("g2", Decimal(2))
    ]  # fmt: skip
    status = json.loads(tsmeter_cli("--format", "json", "outbox", "status").stdout)
    assert (status["pending"], status["quarantined"]) == (0, 0)
