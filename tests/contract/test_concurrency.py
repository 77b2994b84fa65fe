"""Two OS processes writing into one store at once: nothing lost, nothing counted twice."""

from __future__ import annotations

import multiprocessing
import os
import signal

from tests.contract.stores import Store, append_ids, append_until_killed, open_store
from tsmeter.domain import PeriodType
from tsmeter.domain.periods import Calendar
from tsmeter.ports import RecordQuery, SummaryQuery

START = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z, the first timestamp append_ids uses
DAY = 86_400_000_000_000


def test_two_processes_record_overlapping_ids(adapter: str, location: str, store: Store) -> None:
    """Two spawned processes appending overlapping id sets at the same time store each id once,
    and the counts they are told add up to exactly the number of distinct ids."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(3), ctx.Queue()
    jobs = [(list(range(0, 4_000)), 1), (list(range(2_000, 6_000)), 2)]
    workers = [
        ctx.Process(target=append_ids, args=(adapter, location, ids, seed, start, results))
        for ids, seed in jobs
    ]
    for w in workers:
        w.start()
    try:
        start.wait(timeout=60)  # both children have opened the store: let them write
        told = [results.get(timeout=60) for _ in workers]
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
    assert [w.exitcode for w in workers] == [0, 0]
    records = list(store.iter_records(RecordQuery("api_calls")))
    assert len(records) == 6_000
    assert len({r.id for r in records}) == 6_000
    assert sum(told) == 6_000
    assert min(told) >= 2_000  # each has 2,000 ids the other never writes
    summaries = store.summaries(
        SummaryQuery("api_calls", PeriodType.MONTHLY, START, START + 31 * DAY), Calendar()
    )
    assert sum(s.record_count for s in summaries) == 6_000
    assert sum(s.sum for s in summaries) == 6_000.0


def test_acknowledged_records_survive_kill_9(adapter: str, location: str, store: Store) -> None:
    """A writer killed with SIGKILL mid-stream loses nothing it was told was stored."""
    ctx = multiprocessing.get_context("spawn")
    acked = ctx.Queue()
    writer = ctx.Process(target=append_until_killed, args=(adapter, location, acked))
    writer.start()
    try:
        told = 0
        while told < 3_000:
            told = acked.get(timeout=60)
    finally:
        os.kill(writer.pid or 0, signal.SIGKILL)
        writer.join(timeout=10)
    while not acked.empty():  # acknowledgements sent just before the kill
        told = max(told, acked.get(timeout=5))
    survivor = open_store(adapter, location)
    try:
        ids = {r.id for r in survivor.iter_records(RecordQuery("api_calls"))}
    finally:
        survivor.close()
    assert writer.exitcode == -signal.SIGKILL
    assert {f"crash-{n:07d}" for n in range(told)} <= ids
    assert len(ids) % 100 == 0  # batches are atomic: none was half-written
